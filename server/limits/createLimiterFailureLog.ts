import type { Logger } from 'pino';
import { LogThrottle, REFUSAL_LOG_LIMIT } from '../logging/LogThrottle.js';

/**
 * Logs a limiter's failure (each one a refusal), at most `REFUSAL_LOG_LIMIT` lines per limiter and
 * minute: while a shared store is down every request fails alike, and one line per request would
 * flood the log. The lines left out are counted in the next one written.
 */
export function createLimiterFailureLog(logger: Logger, throttle = new LogThrottle(REFUSAL_LOG_LIMIT)): (error: unknown, limiter: string) => void {
  return (error, limiter) => {
    const line = throttle.admit(limiter);
    if (line.ok) logger.error({ err: error, limiter, ...(line.suppressed > 0 ? { suppressed: line.suppressed } : {}) }, 'rate limiter failed; refusing');
  };
}
