import { ErrorCode } from '../../shared/errorCodes.js';
import type { HttpResponse, UpgradeHandler } from '../transport/Transport.js';
import type { LimitDecision, Limiters } from './Limiters.js';

/**
 * Puts the per-IP upgrade rate in front of token verification (so floods cost no signature
 * checks) and the per-IP and per-user open-connection caps after it.
 */
export function limitUpgrades(limiters: Limiters, inner: UpgradeHandler): UpgradeHandler {
  return async (request) => {
    const rate = await limiters.upgrade(request.remoteAddress);
    if (!rate.ok) return { accept: false, response: refusal(rate, 'Too many connection attempts from this address.') };
    const decision = await inner(request);
    if (decision.accept && !limiters.connectionAllowed(request.remoteAddress, decision.principal.userId)) {
      return {
        accept: false,
        response: refusal({ ok: false, retryAfterMs: 5000, failed: false }, 'Too many open connections for this address or user.'),
      };
    }
    return decision;
  };
}

/** The HTTP answer for a refused limit: 429 with Retry-After, or 503 if the limiter broke. */
export function refusal(decision: Extract<LimitDecision, { ok: false }>, message: string): HttpResponse {
  const status = decision.failed ? 503 : 429;
  const code = decision.failed ? ErrorCode.limiterUnavailable : ErrorCode.rateLimited;
  return {
    status,
    headers: {
      'content-type': 'application/json',
      'cache-control': 'no-store',
      'retry-after': String(Math.max(1, Math.ceil(decision.retryAfterMs / 1000))),
    },
    body: JSON.stringify({ code, message: decision.failed ? 'Rate limiter unavailable; try again shortly.' : message, retryAfterMs: decision.retryAfterMs }),
  };
}
