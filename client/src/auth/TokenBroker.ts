import { TokenResponse } from '../../../shared/protocol.js';
import { newId } from '../util/newId.js';
import { AuthError, logout, refreshToken, requestToken, type Issued } from './authApi.js';

/** How a refresh ended. */
export const RefreshResult = {
  ok: 'ok',
  /** 401: no cookie, or it expired or was revoked. Join again. */
  signedOut: 'signed-out',
  /** 404/405: this server has no refresh endpoint. */
  unsupported: 'unsupported',
  /** Network failure, 429, 5xx: try again later. */
  failed: 'failed',
} as const;
export type RefreshResult = (typeof RefreshResult)[keyof typeof RefreshResult];

const LEASE_KEY = 'parley.v1.refreshLease';
/**
 * The session's binding value. Storage is per origin, port included, so a web app on another
 * port of this host, which can set and receive our cookies (cookies ignore ports), cannot read
 * or set it. Kept in localStorage (every tab) and sessionStorage (survives a cleared
 * localStorage while the tab lives).
 */
const BINDING_KEY = 'parley.v1.refreshBinding';
const LEASE_MS = 8000;
const CHANNEL = 'parley-auth';

type Broadcast = { type: 'token'; token: TokenResponse } | { type: 'signed-out' };

/**
 * Holds the access token and refreshes it through the httpOnly cookie, sent together with the
 * session's binding value, which this origin alone can read (see BINDING_KEY).
 *
 * Every refresh rotates the cookie and the server treats a rotated value coming back as theft
 * (past a short grace window), so two tabs should not refresh at once: one tab takes a short lease in localStorage,
 * refreshes, and hands the new token to the others over a BroadcastChannel (both work on
 * plain-http origins, where Web Locks do not). Events: `token` (a new token, from this tab or
 * another), `signed-out` (another tab signed out).
 */
export class TokenBroker extends EventTarget {
  token: TokenResponse | undefined;
  /** False once the server answered 404 to a refresh: it only has invite tokens. */
  refreshSupported = true;
  /**
   * Server clock minus this device's, from the `Date` header (1 s resolution). Expiry times are
   * the server's; a phone whose clock is off by minutes would otherwise refresh too late.
   */
  private clockSkewMs = 0;
  private inflight: Promise<RefreshResult> | undefined;
  private readonly tab = newId('t');
  private readonly channel: BroadcastChannel | undefined = typeof BroadcastChannel === 'function' ? new BroadcastChannel(CHANNEL) : undefined;

  constructor() {
    super();
    if (this.channel) this.channel.onmessage = (event: MessageEvent) => this.received(event.data);
  }

  async join(invite: string, name: string): Promise<void> {
    this.issued(await requestToken(invite, name));
  }


  /** Now, on the server's clock. */
  serverNow(): number {
    return Date.now() + this.clockSkewMs;
  }

  /** Single-flight within the tab, leased across tabs. */
  refresh(): Promise<RefreshResult> {
    this.inflight ??= this.refreshOnce().finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  async signOut(): Promise<void> {
    const token = this.token?.token;
    const binding = readBinding();
    this.token = undefined;
    this.post({ type: 'signed-out' });
    await logout(token, binding);
    writeBinding(undefined);
  }

  /** Drops the token without telling the server (it already refused it). */
  forget(): void {
    this.token = undefined;
  }

  private async refreshOnce(): Promise<RefreshResult> {
    const before = this.token?.expiresAt ?? 0;
    for (let attempt = 0; attempt < 3; attempt++) {
      if (await this.acquireLease()) {
        try {
          this.issued(await refreshToken(readBinding()));
          return RefreshResult.ok;
        } catch (error) {
          if (!(error instanceof AuthError)) return RefreshResult.failed;
          if (error.status === 401) return RefreshResult.signedOut;
          if (error.status === 404 || error.status === 405) {
            this.refreshSupported = false;
            return RefreshResult.unsupported;
          }
          return RefreshResult.failed;
        } finally {
          this.releaseLease();
        }
      }
      // Another tab is refreshing: its token arrives over the channel.
      if (await this.waitForToken(before)) return RefreshResult.ok;
    }
    return RefreshResult.failed;
  }

  private issued(issued: Issued): void {
    if (issued.binding !== undefined) writeBinding(issued.binding);
    // Differences under 2 s are the header's rounding, not a wrong clock.
    if (issued.clockSkewMs !== undefined) this.clockSkewMs = Math.abs(issued.clockSkewMs) < 2000 ? 0 : issued.clockSkewMs;
    this.accept(issued.token, true);
  }

  private accept(token: TokenResponse, share: boolean): void {
    if (this.token && this.token.expiresAt > token.expiresAt) return;
    this.token = token;
    if (share) this.post({ type: 'token', token });
    this.dispatchEvent(new Event('token'));
  }

  private received(data: unknown): void {
    const message = data as Partial<Broadcast> | null;
    if (message?.type === 'signed-out') {
      this.token = undefined;
      this.dispatchEvent(new Event('signed-out'));
    } else if (message?.type === 'token') {
      const parsed = TokenResponse.safeParse((message as { token?: unknown }).token);
      if (parsed.success) this.accept(parsed.data, false);
    }
  }

  private post(message: Broadcast): void {
    try {
      this.channel?.postMessage(message);
    } catch {
      // A closed channel: nothing to tell.
    }
  }

  private waitForToken(newerThan: number): Promise<boolean> {
    return new Promise((resolve) => {
      const done = (value: boolean) => {
        clearTimeout(timer);
        this.removeEventListener('token', onToken);
        resolve(value);
      };
      const onToken = () => {
        if ((this.token?.expiresAt ?? 0) > newerThan) done(true);
      };
      const timer = setTimeout(() => done(false), LEASE_MS);
      this.addEventListener('token', onToken);
    });
  }

  /** A best-effort mutex: write, wait a moment, and check no other tab overwrote it. */
  private async acquireLease(): Promise<boolean> {
    try {
      const current = readLease();
      if (current && current.owner !== this.tab && current.until > Date.now()) return false;
      localStorage.setItem(LEASE_KEY, JSON.stringify({ owner: this.tab, until: Date.now() + LEASE_MS }));
      await new Promise((resolve) => setTimeout(resolve, 20 + Math.random() * 30));
      return readLease()?.owner === this.tab;
    } catch {
      return true;
    }
  }

  private releaseLease(): void {
    try {
      if (readLease()?.owner === this.tab) localStorage.removeItem(LEASE_KEY);
    } catch {
      // No storage: no lease to release.
    }
  }
}

function readBinding(): string | undefined {
  for (const storage of storages()) {
    try {
      const value = storage.getItem(BINDING_KEY);
      if (value) {
        // Put back where it went missing (e.g. localStorage cleared while this tab lived).
        writeBinding(value);
        return value;
      }
    } catch {
      // This storage is unavailable; try the next.
    }
  }
  return undefined;
}

/** Stores the binding value in both storages; undefined removes it. */
function writeBinding(value: string | undefined): void {
  for (const storage of storages()) {
    try {
      if (value === undefined) storage.removeItem(BINDING_KEY);
      else if (storage.getItem(BINDING_KEY) !== value) storage.setItem(BINDING_KEY, value);
    } catch {
      // Storage full or blocked: the other one may still hold it.
    }
  }
}

function storages(): Storage[] {
  const found: Storage[] = [];
  for (const get of [() => localStorage, () => sessionStorage]) {
    try {
      found.push(get());
    } catch {
      // Access denied (e.g. storage blocked for this origin).
    }
  }
  return found;
}

function readLease(): { owner: string; until: number } | undefined {
  try {
    const value = JSON.parse(localStorage.getItem(LEASE_KEY) ?? 'null') as { owner?: unknown; until?: unknown } | null;
    if (value && typeof value.owner === 'string' && typeof value.until === 'number') return { owner: value.owner, until: value.until };
  } catch {
    // Garbage in the lease: treat it as free.
  }
  return undefined;
}
