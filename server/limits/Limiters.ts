import { BurstyRateLimiter, RateLimiterMemory, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { Config } from '../config.js';

export type LimitDecision =
  | { readonly ok: true }
  /** `failed` means the limiter itself broke; the request is refused all the same. */
  | { readonly ok: false; readonly retryAfterMs: number; readonly failed: boolean };

export type LimiterConfig = Pick<
  Config,
  | 'framesPerSecond'
  | 'frameBurst'
  | 'floodStrikes'
  | 'floodWindowSeconds'
  | 'generationsPerMinute'
  | 'tokensPerHour'
  | 'upgradesPerMinute'
  | 'tokenRequestsPerMinute'
  | 'loginFailuresBeforeLockout'
  | 'lockoutSeconds'
  | 'maxConnectionsPerIp'
  | 'maxConnectionsPerUser'
>;

/** Limiters as far as Parley uses them. Tests inject failing ones. */
export type ConsumeLimiter = { consume(key: string, points?: number): Promise<unknown> };
export type RefundableLimiter = ConsumeLimiter & Pick<RateLimiterAbstract, 'reward'>;
export type LockoutLimiter = ConsumeLimiter & Pick<RateLimiterAbstract, 'get' | 'delete'>;

export interface LimiterSet {
  /** Frames per connection: a steady rate plus a burst allowance. */
  readonly frames: ConsumeLimiter;
  /** Refused frames per connection; running out means a flood, and the socket closes. */
  readonly floodStrikes: ConsumeLimiter;
  readonly generations: ConsumeLimiter;
  readonly tokens: RefundableLimiter;
  readonly upgrades: ConsumeLimiter;
  readonly tokenRequests: ConsumeLimiter;
  readonly loginFailures: LockoutLimiter;
}

/** Milliseconds a refused caller is told to wait when the limiter itself failed. */
const FAILED_RETRY_MS = 1000;

/**
 * Every rate limit Parley enforces, in one place (rate-limiter-flexible, in memory).
 * Keys: connection id for frames, JWT `sub` for generations and tokens (shared by all of a
 * user's sockets, and kept across reconnects), client IP for upgrades and logins.
 *
 * Invariant: a limiter error is a refusal, never a pass (fail closed).
 */
export class Limiters {
  private readonly set: LimiterSet;
  private readonly connectionsByIp = new Map<string, number>();
  private readonly connectionsByUser = new Map<string, number>();

  constructor(
    private readonly config: LimiterConfig,
    overrides: Partial<LimiterSet> = {},
    private readonly onFailure: (error: unknown, limiter: string) => void = () => undefined,
    /** Called for every refusal by a working limiter (metrics). */
    private readonly onRejected: (limiter: string) => void = () => undefined,
  ) {
    this.set = { ...createDefaultLimiters(config), ...overrides };
  }

  frame(connectionId: string): Promise<LimitDecision> {
    return this.consume('frames', connectionId, 1);
  }

  /** Records a refused frame; `ok: false` means the connection is flooding and must close. */
  strike(connectionId: string): Promise<LimitDecision> {
    return this.consume('floodStrikes', connectionId, 1);
  }

  generation(userId: string): Promise<LimitDecision> {
    return this.consume('generations', userId, 1);
  }

  /** Reserves the worst case (prompt plus the whole reply budget) from the hourly token budget. */
  reserveTokens(userId: string, tokens: number): Promise<LimitDecision> {
    return this.consume('tokens', userId, Math.max(1, tokens));
  }

  /** Gives back what a finished reply did not use. */
  async refundTokens(userId: string, tokens: number): Promise<void> {
    if (tokens <= 0) return;
    try {
      await this.set.tokens.reward(userId, tokens);
    } catch (error) {
      this.onFailure(error, 'tokens');
    }
  }

  upgrade(ip: string): Promise<LimitDecision> {
    return this.consume('upgrades', ip, 1);
  }

  tokenRequest(ip: string): Promise<LimitDecision> {
    return this.consume('tokenRequests', ip, 1);
  }

  /** Refuses while the IP is locked out after too many wrong invites or passwords. */
  async loginAllowed(ip: string): Promise<LimitDecision> {
    try {
      const state = await this.set.loginFailures.get(ip);
      if (state && state.consumedPoints >= this.config.loginFailuresBeforeLockout) {
        this.onRejected('loginLockout');
        return { ok: false, retryAfterMs: Math.max(1, state.msBeforeNext), failed: false };
      }
      return { ok: true };
    } catch (error) {
      this.onFailure(error, 'loginFailures');
      return { ok: false, retryAfterMs: FAILED_RETRY_MS, failed: true };
    }
  }

  /** Counts a wrong invite or password against the IP. */
  async loginFailed(ip: string): Promise<void> {
    await this.consume('loginFailures', ip, 1);
  }

  async loginSucceeded(ip: string): Promise<void> {
    try {
      await this.set.loginFailures.delete(ip);
    } catch (error) {
      this.onFailure(error, 'loginFailures');
    }
  }

  /** Whether one more socket fits under the per-IP and per-user caps. */
  connectionAllowed(ip: string, userId: string): boolean {
    const allowed =
      (this.connectionsByIp.get(ip) ?? 0) < this.config.maxConnectionsPerIp &&
      (this.connectionsByUser.get(userId) ?? 0) < this.config.maxConnectionsPerUser;
    if (!allowed) this.onRejected('connections');
    return allowed;
  }

  connectionOpened(ip: string, userId: string): void {
    bump(this.connectionsByIp, ip, 1);
    bump(this.connectionsByUser, userId, 1);
  }

  connectionClosed(ip: string, userId: string): void {
    bump(this.connectionsByIp, ip, -1);
    bump(this.connectionsByUser, userId, -1);
  }

  private async consume(name: keyof LimiterSet, key: string, points: number): Promise<LimitDecision> {
    try {
      await this.set[name].consume(key, points);
      return { ok: true };
    } catch (error) {
      if (error instanceof RateLimiterRes) {
        this.onRejected(name);
        return { ok: false, retryAfterMs: Math.max(1, Math.ceil(error.msBeforeNext)), failed: false };
      }
      this.onFailure(error, name);
      return { ok: false, retryAfterMs: FAILED_RETRY_MS, failed: true };
    }
  }
}

function createDefaultLimiters(config: LimiterConfig): LimiterSet {
  return {
    frames: new BurstyRateLimiter(
      new RateLimiterMemory({ keyPrefix: 'frames', points: config.framesPerSecond, duration: 1 }),
      new RateLimiterMemory({ keyPrefix: 'frames-burst', points: Math.max(1, config.frameBurst), duration: 10 }),
    ),
    floodStrikes: new RateLimiterMemory({ keyPrefix: 'flood', points: config.floodStrikes, duration: config.floodWindowSeconds }),
    generations: new RateLimiterMemory({ keyPrefix: 'gen', points: config.generationsPerMinute, duration: 60 }),
    tokens: new RateLimiterMemory({ keyPrefix: 'tok', points: config.tokensPerHour, duration: 3600 }),
    upgrades: new RateLimiterMemory({ keyPrefix: 'upg', points: config.upgradesPerMinute, duration: 60 }),
    tokenRequests: new RateLimiterMemory({ keyPrefix: 'treq', points: config.tokenRequestsPerMinute, duration: 60 }),
    loginFailures: new RateLimiterMemory({
      keyPrefix: 'lfail',
      points: config.loginFailuresBeforeLockout,
      duration: config.lockoutSeconds,
      blockDuration: config.lockoutSeconds,
    }),
  };
}

function bump(map: Map<string, number>, key: string, delta: number): void {
  const next = (map.get(key) ?? 0) + delta;
  if (next <= 0) map.delete(key);
  else map.set(key, next);
}
