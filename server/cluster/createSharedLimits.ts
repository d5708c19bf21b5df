import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { createRedisLimiters } from '../limits/createRedisLimiters.js';
import type { LimiterConfig, LimiterSet, SharedLimitState } from '../limits/Limiters.js';
import { isRedisUnreachable } from './isRedisUnreachable.js';
import type { OpenedRedis } from './openRedis.js';
import { RedisConnectionCounts } from './RedisConnectionCounts.js';
import { RedisRecognisedPairs } from './RedisRecognisedPairs.js';

/**
 * With `--redis`, the limiters and socket counts that hold across gateways, for `new Limiters`;
 * nothing without it (every limit in this process). This gateway's sockets are counted under a
 * fresh id, so a restarted gateway never renews its previous life's sockets.
 */
export function createSharedLimits(config: LimiterConfig, redis: OpenedRedis | undefined, logger: Logger): { readonly limiters: Partial<LimiterSet>; readonly state: SharedLimitState } {
  if (redis === undefined) return { limiters: {}, state: {} };
  return {
    limiters: createRedisLimiters(config, redis.client),
    state: {
      connections: new RedisConnectionCounts(redis.client, { gatewayId: randomUUID(), logger }),
      recognisedPairs: new RedisRecognisedPairs(redis.client),
      unreachable: (error) => isRedisUnreachable(error) || !redis.health().ready,
    },
  };
}
