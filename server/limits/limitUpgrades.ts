import { toHttpResponse } from '../http/toHttpResponse.js';
import type { UpgradeHandler } from '../transport/Transport.js';
import { LimitRefusedError } from './LimitRefusedError.js';
import type { Limiters } from './Limiters.js';

/** How long a client refused for too many open sockets is told to wait: sockets close at their own pace. */
const CONNECTION_CAP_RETRY_MS = 5000;

/**
 * Puts the per-IP upgrade rate in front of token verification (so floods cost no signature
 * checks) and the per-IP and per-user open-connection caps after it.
 */
export function limitUpgrades(limiters: Limiters, inner: UpgradeHandler): UpgradeHandler {
  return async (request) => {
    const rate = await limiters.upgrade(request.remoteAddress);
    if (!rate.ok) {
      return { accept: false, response: toHttpResponse(new LimitRefusedError(rate, 'Too many connection attempts from this address.')) };
    }
    const decision = await inner(request);
    if (decision.accept && !limiters.connectionAllowed(request.remoteAddress, decision.principal.userId)) {
      const refused = new LimitRefusedError({ ok: false, retryAfterMs: CONNECTION_CAP_RETRY_MS, failed: false }, 'Too many open connections for this address or user.');
      return { accept: false, response: toHttpResponse(refused) };
    }
    return decision;
  };
}
