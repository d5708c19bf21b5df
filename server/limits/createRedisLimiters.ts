import type { Redis } from 'ioredis';
import { RateLimiterRedis } from 'rate-limiter-flexible';
import { slowdownSeconds, type LimiterConfig, type LimiterSet } from './Limiters.js';

/** The limiters kept in Redis: every budget that must hold across gateways. */
export type SharedLimiterName = Exclude<keyof LimiterSet, 'frames' | 'floodStrikes'>;

/**
 * The budgets, lockouts and slowdowns of `Limiters` in Redis (`--redis`), so a user, address or
 * account has one budget whichever gateway serves it. Sized exactly as the in-memory defaults.
 *
 * Invariants: no insurance limiter, so a Redis error is a limiter failure and the request is
 * refused (fail closed), never counted in memory instead; a command fails at once while Redis is
 * not ready. Per-frame limits (frames, floodStrikes) stay in memory: no Redis round trip per frame.
 */
export function createRedisLimiters(config: LimiterConfig, redis: Redis): Pick<LimiterSet, SharedLimiterName> {
  const limiter = (name: SharedLimiterName, points: number, duration: number, blockDuration?: number) =>
    new RateLimiterRedis({ storeClient: redis, useRedisPackage: false, rejectIfRedisNotReady: true, keyPrefix: `parley:${name}`, points, duration, ...(blockDuration === undefined ? {} : { blockDuration }) });
  return {
    generations: limiter('generations', config.generationsPerMinute, 60),
    tokens: limiter('tokens', config.tokensPerHour, 3600),
    generationsPerIp: limiter('generationsPerIp', config.generationsPerMinutePerIp, 60),
    tokensPerIp: limiter('tokensPerIp', config.tokensPerHourPerIp, 3600),
    upgrades: limiter('upgrades', config.upgradesPerMinute, 60),
    tokenRequests: limiter('tokenRequests', config.tokenRequestsPerMinute, 60),
    logouts: limiter('logouts', config.logoutsPerMinute, 60),
    inviteUsers: limiter('inviteUsers', config.inviteUsersPerHour, 3600),
    loginFailures: limiter('loginFailures', config.loginFailuresBeforeLockout, config.lockoutSeconds, config.lockoutSeconds),
    passwordPairFailures: limiter('passwordPairFailures', config.loginFailuresBeforeLockout, config.lockoutSeconds, config.lockoutSeconds),
    accountFailures: limiter('accountFailures', config.loginFailuresBeforeLockout, config.lockoutSeconds),
    accountAttempts: limiter('accountAttempts', 1, slowdownSeconds(config)),
  };
}
