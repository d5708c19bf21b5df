import type { Logger } from 'pino';
import { LogThrottle, REFUSAL_LOG_LIMIT } from '../logging/LogThrottle.js';
import { ForbiddenError } from '../ParleyError.js';
import type { HttpHandler, HttpResponse, UpgradeHandler } from '../transport/Transport.js';
import { Refusal, type OriginPolicy } from './createOriginPolicy.js';
import { toHttpResponse } from './toHttpResponse.js';

const messages: Record<Refusal, string> = {
  [Refusal.host]: 'Host not allowed.',
  [Refusal.origin]: 'Origin not allowed.',
};

/**
 * Puts the origin policy in front of the HTTP and upgrade handlers: a refused request gets
 * 403 `forbidden` before any route runs and before any token is looked at. `policy()` is read
 * per request because the policy is rebuilt once the listening port is known; while it is
 * missing every request is refused.
 */
export function withOriginPolicy(
  policy: () => OriginPolicy | undefined,
  handlers: { readonly http: HttpHandler; readonly upgrade: UpgradeHandler },
  logger: Logger,
): { http: HttpHandler; upgrade: UpgradeHandler } {
  // Anyone can cause these at will: at most REFUSAL_LOG_LIMIT lines a minute, the rest counted.
  const throttle = new LogThrottle(REFUSAL_LOG_LIMIT);
  const refuse = (refusal: Refusal, kind: string, request: { headers: Readonly<Record<string, string>>; remoteAddress: string }): HttpResponse => {
    const admitted = throttle.admit(refusal);
    if (admitted.ok) {
      // Both values are client input: cut them short so one request cannot bloat the log.
      logger.warn(
        {
          event: 'request_refused',
          reason: refusal,
          kind,
          ip: request.remoteAddress,
          host: request.headers.host?.slice(0, 100),
          origin: request.headers.origin?.slice(0, 100),
          ...(admitted.suppressed > 0 ? { suppressed: admitted.suppressed } : {}),
        },
        `${kind} refused: ${refusal} not allowed${admitted.suppressed > 0 ? ` (and ${admitted.suppressed} more not logged)` : ''}`,
      );
    }
    return toHttpResponse(new ForbiddenError(messages[refusal]));
  };

  return {
    http: async (request) => {
      const current = policy();
      const refusal = current ? current.checkHttp(request.method, request.headers) : Refusal.host;
      return refusal === undefined ? handlers.http(request) : refuse(refusal, 'http', request);
    },
    upgrade: async (request) => {
      const current = policy();
      const refusal = current ? current.checkUpgrade(request.headers) : Refusal.host;
      return refusal === undefined ? handlers.upgrade(request) : { accept: false, response: refuse(refusal, 'upgrade', request) };
    },
  };
}
