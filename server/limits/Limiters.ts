import { BurstyRateLimiter, RateLimiterMemory, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import { MemoryRecognisedPairs, type RecognisedPairs } from './RecognisedPairs.js';
import type { Config } from '../config.js';
import { isAddressKey } from './budgetKeysOf.js';
import type { ConnectionCounts } from './ConnectionCounts.js';
import { MemoryConnectionCounts } from './MemoryConnectionCounts.js';

export type LimitDecision =
  | { readonly ok: true }
  /**
   * `failed` means the limiter itself broke; the request is refused all the same.
   * `sharedStateUnreachable`: it broke because the state shared by the gateways (`--redis`) is unreachable.
   */
  | { readonly ok: false; readonly retryAfterMs: number; readonly failed: boolean; readonly sharedStateUnreachable?: boolean };

export type LimiterConfig = Pick<
  Config,
  | 'framesPerSecond'
  | 'frameBurst'
  | 'floodStrikes'
  | 'floodWindowSeconds'
  | 'generationsPerMinute'
  | 'tokensPerHour'
  | 'generationsPerMinutePerIp'
  | 'tokensPerHourPerIp'
  | 'upgradesPerMinute'
  | 'tokenRequestsPerMinute'
  | 'loginFailuresBeforeLockout'
  | 'lockoutSeconds'
  | 'maxConnectionsPerIp'
  | 'maxConnectionsPerUser'
  | 'inviteUsersPerHour'
  | 'logoutsPerMinute'
  | 'refreshTtlSeconds'
>;

/** Limiters as far as Parley uses them. Tests inject failing ones. */
export type ConsumeLimiter = { consume(key: string, points?: number): Promise<unknown> };
/** A limiter charged to several keys at once; `reward` gives back a partial charge when one key refuses. */
export type MultiKeyLimiter = ConsumeLimiter & Partial<Pick<RateLimiterAbstract, 'reward'>>;
export type RefundableLimiter = ConsumeLimiter & Pick<RateLimiterAbstract, 'reward'>;
export type LockoutLimiter = ConsumeLimiter & Pick<RateLimiterAbstract, 'get' | 'delete'>;

export interface LimiterSet {
  /** Frames per connection: a steady rate plus a burst allowance. */
  readonly frames: ConsumeLimiter;
  /** Refused frames per connection; running out means a flood, and the socket closes. */
  readonly floodStrikes: ConsumeLimiter;
  readonly generations: MultiKeyLimiter;
  readonly tokens: RefundableLimiter;
  /** The same budgets for address keys (invite users' `ip:` keys; see budgetKeysOf). */
  readonly generationsPerIp: MultiKeyLimiter;
  readonly tokensPerIp: RefundableLimiter;
  readonly upgrades: ConsumeLimiter;
  readonly tokenRequests: ConsumeLimiter;
  /** Logout requests per IP. */
  readonly logouts: ConsumeLimiter;
  readonly loginFailures: LockoutLimiter;
  /** Wrong passwords per (IP, account) pair: the pair locks, the account does not. */
  readonly passwordPairFailures: LockoutLimiter;
  /** Wrong passwords per account from anywhere; only counted, never locking. */
  readonly accountFailures: LockoutLimiter;
  /** Password attempts per account while it is slowed down (see passwordAttempt). */
  readonly accountAttempts: ConsumeLimiter;
  /** New invite users (identities) per IP. */
  readonly inviteUsers: ConsumeLimiter;
}

/** Milliseconds a refused caller is told to wait when the limiter itself failed. */
const FAILED_RETRY_MS = 1000;

/** How long a client refused for too many open sockets is told to wait: sockets close at their own pace. */
const CONNECTION_CAP_RETRY_MS = 5000;

/** Where the limits live besides the limiters: in this process unless `--redis` shares them. */
export interface SharedLimitState {
  /** Open sockets per address and per user; in this process when absent. */
  readonly connections?: ConnectionCounts;
  /** Whether a limiter's error means the shared store could not be reached; the refusal then says so. */
  readonly unreachable?: (error: unknown) => boolean;
  /** Addresses that signed in to an account; in this process when absent. */
  readonly recognisedPairs?: RecognisedPairs;
}

/** Why a password attempt was refused before the password was looked at. */
export const PasswordRefusal = {
  /** This address made too many wrong guesses for this account: the pair is locked. */
  pairLocked: 'pair_locked',
  /** The account is slowed down and its next attempt from an unrecognised address is not due yet. */
  slowedDown: 'slowed_down',
} as const;
export type PasswordRefusal = (typeof PasswordRefusal)[keyof typeof PasswordRefusal];

export type PasswordDecision = { readonly ok: true } | (Extract<LimitDecision, { ok: false }> & { readonly reason: PasswordRefusal });

/**
 * Every rate limit Parley enforces, in one place (rate-limiter-flexible, in memory, or for the
 * budgets that hold across gateways in Redis: see createRedisLimiters).
 * Keys: connection id for frames; the budget keys of `budgetKeysOf` for generations and tokens
 * (the JWT `sub`, shared by all of a user's sockets and kept across reconnects, plus `ip:<addr>`
 * for invite users, so re-joining does not reset them; address keys go to the per-IP limiters);
 * client IP for upgrades, logins and new invite users; for passwords also the (IP, account
 * name) pair, which locks, and the account name, which is slowed down but never locked.
 *
 * Invariants: a limiter error is a refusal, never a pass (fail closed). A call charged to
 * several keys is admitted only if every key admits it, and a refused call leaves every key as
 * it was (what the keys before the refusing one took is given back, and so is what the
 * refusing key counted).
 */
export class Limiters {
  private readonly set: LimiterSet;
  private readonly connections: ConnectionCounts;
  /** (IP, account) pairs that signed in with the right password, for `refreshTtlSeconds`. */
  private readonly recognisedPairs: RecognisedPairs;

  constructor(
    private readonly config: LimiterConfig,
    overrides: Partial<LimiterSet> = {},
    private readonly onFailure: (error: unknown, limiter: string) => void = () => undefined,
    /** Called for every refusal by a working limiter (metrics). */
    private readonly onRejected: (limiter: string) => void = () => undefined,
    private readonly shared: SharedLimitState = {},
  ) {
    this.set = { ...createDefaultLimiters(config), ...overrides };
    this.connections = shared.connections ?? new MemoryConnectionCounts();
    this.recognisedPairs = shared.recognisedPairs ?? new MemoryRecognisedPairs();
  }

  frame(connectionId: string): Promise<LimitDecision> {
    return this.consume('frames', connectionId, 1);
  }

  /** Records a refused frame; `ok: false` means the connection is flooding and must close. */
  strike(connectionId: string): Promise<LimitDecision> {
    return this.consume('floodStrikes', connectionId, 1);
  }

  /** One reply from the per-minute budget of every key (a single user id is one key). */
  generation(keys: BudgetKeys): Promise<LimitDecision> {
    return this.consumeAll(Budget.generations, asKeys(keys), 1);
  }

  /** Reserves the worst case (prompt plus the whole reply budget) from the hourly token budget of every key. */
  reserveTokens(keys: BudgetKeys, tokens: number): Promise<LimitDecision> {
    return this.consumeAll(Budget.tokens, asKeys(keys), Math.max(1, tokens));
  }

  /** Gives back what a finished reply did not use, to the same keys it was reserved from. */
  async refundTokens(keys: BudgetKeys, tokens: number): Promise<void> {
    if (tokens <= 0) return;
    for (const key of asKeys(keys)) await this.reward(Budget.tokens, key, tokens);
  }

  upgrade(ip: string): Promise<LimitDecision> {
    return this.consume('upgrades', ip, 1);
  }

  tokenRequest(ip: string): Promise<LimitDecision> {
    return this.consume('tokenRequests', ip, 1);
  }

  /** One more logout request from this IP; checked before its credentials. */
  logout(ip: string): Promise<LimitDecision> {
    return this.consume('logouts', ip, 1);
  }

  /** One more invite user (a new identity with fresh per-user budgets) from this IP. */
  inviteUser(ip: string): Promise<LimitDecision> {
    return this.consume('inviteUsers', ip, 1);
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
      return this.failed(error, 'loginFailures');
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

  /**
   * Whether a password for `account` (a lower-cased name, known or not) from `ip` may be
   * checked now; asked after loginAllowed(ip), before the password is looked at.
   *
   * Wrong guesses lock the (IP, account) pair, never the account: a stranger who guesses at the
   * admin's password locks only their own address out of that account. The account as a whole
   * is slowed instead: once it has had `loginFailuresBeforeLockout` failures within
   * `lockoutSeconds` from anywhere, attempts from addresses that have not signed in to it
   * before share one attempt per `lockoutSeconds / loginFailuresBeforeLockout` (the pace one
   * address gets), so guesses spread over many addresses gain nothing. An address that signed
   * in to the account before (within `refreshTtlSeconds`, on any gateway with `--redis`) is not slowed.
   */
  async passwordAttempt(ip: string, account: string): Promise<PasswordDecision> {
    const pair = pairKey(ip, account);
    try {
      const pairState = await this.set.passwordPairFailures.get(pair);
      if (pairState && pairState.consumedPoints >= this.config.loginFailuresBeforeLockout) {
        this.onRejected('passwordPairLockout');
        return { ok: false, retryAfterMs: Math.max(1, pairState.msBeforeNext), failed: false, reason: PasswordRefusal.pairLocked };
      }
      if (await this.recognisedPairs.has(pair)) return { ok: true };
      const accountState = await this.set.accountFailures.get(account);
      if (!accountState || accountState.consumedPoints < this.config.loginFailuresBeforeLockout) return { ok: true };
    } catch (error) {
      return { ...this.failed(error, 'passwordPairFailures'), reason: PasswordRefusal.pairLocked };
    }
    const slot = await this.consume('accountAttempts', account, 1);
    return slot.ok ? slot : { ...slot, reason: PasswordRefusal.slowedDown };
  }

  /**
   * Counts a wrong password against the (IP, account) pair and the account (the IP itself is
   * counted by loginFailed). Says whether this failure began the pair's lockout or the
   * account's slowdown, so each is logged once.
   */
  async passwordFailed(ip: string, account: string): Promise<{ readonly pairLocked: boolean; readonly slowdownBegan: boolean }> {
    const threshold = this.config.loginFailuresBeforeLockout;
    const pairCount = await this.count('passwordPairFailures', pairKey(ip, account));
    const accountCount = await this.count('accountFailures', account);
    return { pairLocked: pairCount === threshold, slowdownBegan: accountCount === threshold };
  }

  /**
   * The right password: clears the pair's count and recognises the pair, so this address is
   * not slowed for this account later. The account's count stays: someone else's success does
   * not speed up the guessing of a stranger.
   */
  async passwordSucceeded(ip: string, account: string): Promise<void> {
    const pair = pairKey(ip, account);
    try {
      await this.set.passwordPairFailures.delete(pair);
    } catch (error) {
      this.onFailure(error, 'passwordPairFailures');
    }
    try {
      await this.recognisedPairs.add(pair, this.config.refreshTtlSeconds * 1000);
    } catch (error) {
      this.onFailure(error, 'recognisedPairs');
    }
  }

  /** Whether one more socket fits under the per-IP and per-user caps (across gateways with `--redis`). */
  async connectionAllowed(ip: string, userId: string): Promise<LimitDecision> {
    let open: { readonly byIp: number; readonly byUser: number };
    try {
      open = await this.connections.count(ip, userId);
    } catch (error) {
      return this.failed(error, 'connections');
    }
    if (open.byIp < this.config.maxConnectionsPerIp && open.byUser < this.config.maxConnectionsPerUser) return { ok: true };
    this.onRejected('connections');
    return { ok: false, retryAfterMs: CONNECTION_CAP_RETRY_MS, failed: false };
  }

  /** `connectionId` is unique in this process. */
  connectionOpened(ip: string, userId: string, connectionId: string): void {
    this.connections.opened(connectionId, ip, userId);
  }

  connectionClosed(ip: string, userId: string, connectionId: string): void {
    this.connections.closed(connectionId, ip, userId);
  }

  /** Stops the connection counts' background work (safe to call twice). */
  close(): Promise<void> {
    return this.connections.close();
  }


  /** Adds one to a counting limiter and returns its count (0 when the limiter failed). */
  private async count(name: 'passwordPairFailures' | 'accountFailures', key: string): Promise<number> {
    try {
      const result = await this.set[name].consume(key, 1);
      return (result as RateLimiterRes).consumedPoints;
    } catch (error) {
      // A working limiter past its points still counted the failure.
      if (error instanceof RateLimiterRes) return error.consumedPoints;
      this.onFailure(error, name);
      return 0;
    }
  }

  /** Charges `points` to each key in turn; on a refusal, gives back everything this call charged. */
  private async consumeAll(budget: Budget, keys: readonly string[], points: number): Promise<LimitDecision> {
    if (keys.length === 0) {
      // No key would mean no budget at all: refuse, as for a broken limiter.
      return this.failed(new Error('no budget keys'), budget);
    }
    const charged: string[] = [];
    for (const key of keys) {
      const decision = await this.consume(limiterFor(budget, key), key, points);
      // A working limiter counts a refused charge too; a failed one may or may not have.
      if (!decision.ok && !decision.failed) charged.push(key);
      if (!decision.ok) {
        for (const taken of charged) await this.reward(budget, taken, points);
        return decision;
      }
      charged.push(key);
    }
    return { ok: true };
  }

  private async reward(budget: Budget, key: string, points: number): Promise<void> {
    const name = limiterFor(budget, key);
    const limiter: MultiKeyLimiter = this.set[name];
    if (limiter.reward === undefined) return;
    try {
      await limiter.reward(key, points);
    } catch (error) {
      this.onFailure(error, name);
    }
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
      return this.failed(error, name);
    }
  }

  /** A limiter broke: logged, and a refusal (fail closed) that says whether the shared store is the cause. */
  private failed(error: unknown, name: string): Extract<LimitDecision, { ok: false }> {
    this.onFailure(error, name);
    const unreachable = this.shared.unreachable?.(error) ?? false;
    return { ok: false, retryAfterMs: FAILED_RETRY_MS, failed: true, ...(unreachable ? { sharedStateUnreachable: true } : {}) };
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
    generationsPerIp: new RateLimiterMemory({ keyPrefix: 'gen-ip', points: config.generationsPerMinutePerIp, duration: 60 }),
    tokensPerIp: new RateLimiterMemory({ keyPrefix: 'tok-ip', points: config.tokensPerHourPerIp, duration: 3600 }),
    upgrades: new RateLimiterMemory({ keyPrefix: 'upg', points: config.upgradesPerMinute, duration: 60 }),
    tokenRequests: new RateLimiterMemory({ keyPrefix: 'treq', points: config.tokenRequestsPerMinute, duration: 60 }),
    logouts: new RateLimiterMemory({ keyPrefix: 'logout', points: config.logoutsPerMinute, duration: 60 }),
    inviteUsers: new RateLimiterMemory({ keyPrefix: 'invu', points: config.inviteUsersPerHour, duration: 3600 }),
    loginFailures: new RateLimiterMemory({
      keyPrefix: 'lfail',
      points: config.loginFailuresBeforeLockout,
      duration: config.lockoutSeconds,
      blockDuration: config.lockoutSeconds,
    }),
    passwordPairFailures: new RateLimiterMemory({
      keyPrefix: 'lpair',
      points: config.loginFailuresBeforeLockout,
      duration: config.lockoutSeconds,
      blockDuration: config.lockoutSeconds,
    }),
    accountFailures: new RateLimiterMemory({ keyPrefix: 'lacct', points: config.loginFailuresBeforeLockout, duration: config.lockoutSeconds }),
    accountAttempts: new RateLimiterMemory({ keyPrefix: 'lslow', points: 1, duration: slowdownSeconds(config) }),
  };
}

/** Budget keys (see budgetKeysOf); a lone user id is the one-key case. */
export type BudgetKeys = string | readonly string[];

/** The budgets charged to budget keys. */
const Budget = { generations: 'generations', tokens: 'tokens' } as const;
type Budget = (typeof Budget)[keyof typeof Budget];

/** Address keys are charged to their own limiters, sized by the per-IP settings. */
function limiterFor(budget: Budget, key: string): 'generations' | 'tokens' | 'generationsPerIp' | 'tokensPerIp' {
  if (!isAddressKey(key)) return budget;
  return budget === Budget.generations ? 'generationsPerIp' : 'tokensPerIp';
}

/** While an account is slowed down, one attempt per this many seconds: the pace one address gets before its lockout. */
export function slowdownSeconds(config: Pick<LimiterConfig, 'lockoutSeconds' | 'loginFailuresBeforeLockout'>): number {
  return Math.max(1, Math.ceil(config.lockoutSeconds / config.loginFailuresBeforeLockout));
}

/** A password attempt's (IP, account) pair; no address contains `|`, so the first one splits the key. */
function pairKey(ip: string, account: string): string {
  return `${ip}|${account}`;
}

function asKeys(keys: BudgetKeys): readonly string[] {
  return typeof keys === 'string' ? [keys] : keys;
}
