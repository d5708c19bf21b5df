/**
 * The per-IP cap on HTTP connections, the same on both transports. A connection counts while a
 * request on it is in progress: from its head until its response is written, the peer leaves or
 * its stream ends (a Server-Sent Events stream counts for as long as it runs). Idle keep-alive
 * connections are not counted (uWS closes them after 10 s, node:http after 5 s), nor are WebSocket
 * upgrades, which have their own rate and cap (limits/limitUpgrades.ts). uWS gives JavaScript no
 * event for a TCP connection, only for a request, so this is what both transports can count.
 */
export class HttpConnectionCap {
  private readonly open = new Map<string, number>();

  constructor(private readonly max: number) {}

  /** Takes a place for one request; returns its release (safe to call twice), or undefined when `ip` is at the cap. */
  admit(ip: string): (() => void) | undefined {
    const count = this.open.get(ip) ?? 0;
    if (count >= this.max) return undefined;
    this.open.set(ip, count + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.open.get(ip) ?? 1) - 1;
      if (left > 0) this.open.set(ip, left);
      else this.open.delete(ip);
    };
  }

  /** Requests in progress from `ip`. */
  count(ip: string): number {
    return this.open.get(ip) ?? 0;
  }
}
