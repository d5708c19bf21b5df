import { hasRedis } from './startRedis.js';

/** Why a suite that needs redis-server cannot run here (a skip reason), or undefined when it can. In CI a missing redis-server is a failure, not a skip. */
export function redisUnavailable(suite: string): string | undefined {
  if (hasRedis()) return undefined;
  if (process.env.CI) throw new Error(`${suite} needs redis-server; .ci/run installs it`);
  return 'needs redis-server (apt-get install redis-server)';
}
