import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { ConnectionCounts } from '../limits/ConnectionCounts.js';

/** How long a socket counts without a heartbeat: a crashed gateway's sockets stop counting after this. */
const DEFAULT_TTL_MS = 30_000;
/** How often a gateway renews its sockets; well under the TTL, so a slow tick never drops a live socket. */
const DEFAULT_HEARTBEAT_MS = 10_000;

/** Redis's clock in ms: every gateway's entries expire by the same clock, whatever the gateways' own. */
const NOW_MS = `local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;

/** KEYS: the address and user sets; ARGV: member, ttl ms. Adds or renews the socket in both sets. */
const TOUCH = `${NOW_MS}
local ttl = tonumber(ARGV[2])
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + ttl, ARGV[1])
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end
return 1`;

/** KEYS: the address and user sets. Drops expired sockets, then counts what is left in each. */
const COUNT = `${NOW_MS}
local counts = {}
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  counts[i] = redis.call('ZCARD', key)
end
return counts`;

interface Scripts {
  parleyConnectionTouch(ipKey: string, userKey: string, member: string, ttlMs: number): Promise<unknown>;
  parleyConnectionCount(ipKey: string, userKey: string): Promise<[number, number]>;
}

/**
 * Open sockets per address and per user across every gateway that shares this Redis.
 *
 * Each socket is a member `<gatewayId>:<connectionId>` of two sorted sets (`parley:conns:ip:<addr>`,
 * `parley:conns:user:<id>`), scored by when it stops counting. Invariants:
 * - A gateway renews its live sockets every heartbeat, so they never expire while it runs; a
 *   crashed gateway's sockets expire within the TTL, with nobody cleaning up after it.
 * - The heartbeat re-adds every live socket, so counts come back after Redis restarts empty, and a
 *   socket whose `opened` or `closed` failed while Redis was down is set right within one TTL.
 * - `count` rejects while Redis is unreachable; the caller refuses the socket (fail closed).
 * - Expiry is judged by Redis's clock, never a gateway's.
 */
export class RedisConnectionCounts implements ConnectionCounts {
  private readonly live = new Map<string, { readonly ip: string; readonly userId: string }>();
  private readonly heartbeat: ReturnType<typeof setInterval>;
  private readonly ttlMs: number;
  private readonly scripts: Scripts;
  /** Whether writes to Redis are failing: logged once when they begin, once when they work again. */
  private failing = false;

  constructor(
    private readonly redis: Redis,
    private readonly options: { readonly gatewayId: string; readonly logger: Logger; readonly ttlMs?: number; readonly heartbeatMs?: number },
  ) {
    this.ttlMs = options.ttlMs ?? DEFAULT_TTL_MS;
    redis.defineCommand('parleyConnectionTouch', { numberOfKeys: 2, lua: TOUCH });
    redis.defineCommand('parleyConnectionCount', { numberOfKeys: 2, lua: COUNT });
    this.scripts = redis as unknown as Scripts;
    this.heartbeat = setInterval(() => void this.renew(), options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS);
    this.heartbeat.unref();
  }

  async count(ip: string, userId: string): Promise<{ readonly byIp: number; readonly byUser: number }> {
    const [byIp, byUser] = await this.scripts.parleyConnectionCount(ipKey(ip), userKey(userId));
    return { byIp, byUser };
  }

  opened(connectionId: string, ip: string, userId: string): void {
    const member = this.member(connectionId);
    this.live.set(member, { ip, userId });
    this.touch(member, ip, userId).catch((error: unknown) => this.failed(error));
  }

  closed(connectionId: string, ip: string, userId: string): void {
    const member = this.member(connectionId);
    this.live.delete(member);
    this.remove(member, ip, userId).catch((error: unknown) => this.failed(error));
  }

  async close(): Promise<void> {
    clearInterval(this.heartbeat);
    const live = [...this.live];
    this.live.clear();
    // Best effort: what is not removed now expires with the TTL.
    await Promise.allSettled(live.map(([member, { ip, userId }]) => this.remove(member, ip, userId)));
  }

  /** Renews every live socket of this gateway. */
  private async renew(): Promise<void> {
    const results = await Promise.allSettled([...this.live].map(([member, { ip, userId }]) => this.touch(member, ip, userId)));
    const failed = results.find((result) => result.status === 'rejected');
    if (failed) {
      this.failed(failed.reason);
    } else if (this.failing && results.length > 0) {
      this.failing = false;
      this.options.logger.info({ gateway: this.options.gatewayId }, 'connection counts in redis work again');
    }
  }

  /**
   * A write failed: nothing to undo, since the next heartbeat re-adds every live socket and a
   * socket closed meanwhile expires with the TTL.
   */
  private failed(error: unknown): void {
    if (!this.failing) this.options.logger.warn({ err: error, gateway: this.options.gatewayId }, 'connection counts in redis failed; the heartbeat sets them right once redis answers');
    this.failing = true;
  }

  private touch(member: string, ip: string, userId: string): Promise<unknown> {
    return this.scripts.parleyConnectionTouch(ipKey(ip), userKey(userId), member, this.ttlMs);
  }

  private async remove(member: string, ip: string, userId: string): Promise<void> {
    await this.redis.multi().zrem(ipKey(ip), member).zrem(userKey(userId), member).exec();
  }

  private member(connectionId: string): string {
    return `${this.options.gatewayId}:${connectionId}`;
  }
}

function ipKey(ip: string): string {
  return `parley:conns:ip:${ip}`;
}

function userKey(userId: string): string {
  return `parley:conns:user:${userId}`;
}
