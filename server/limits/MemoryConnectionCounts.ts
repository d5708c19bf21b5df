import type { ConnectionCounts } from './ConnectionCounts.js';

/** Open sockets counted in this process alone (no `--redis`). */
export class MemoryConnectionCounts implements ConnectionCounts {
  private readonly byIp = new Map<string, number>();
  private readonly byUser = new Map<string, number>();

  count(ip: string, userId: string): Promise<{ readonly byIp: number; readonly byUser: number }> {
    return Promise.resolve({ byIp: this.byIp.get(ip) ?? 0, byUser: this.byUser.get(userId) ?? 0 });
  }

  opened(_connectionId: string, ip: string, userId: string): void {
    bump(this.byIp, ip, 1);
    bump(this.byUser, userId, 1);
  }

  closed(_connectionId: string, ip: string, userId: string): void {
    bump(this.byIp, ip, -1);
    bump(this.byUser, userId, -1);
  }

  close(): Promise<void> {
    this.byIp.clear();
    this.byUser.clear();
    return Promise.resolve();
  }
}

function bump(map: Map<string, number>, key: string, delta: number): void {
  const next = (map.get(key) ?? 0) + delta;
  if (next <= 0) map.delete(key);
  else map.set(key, next);
}
