import { toHttpResponse } from '../http/toHttpResponse.js';
import type { UpgradeHandler } from '../transport/Transport.js';
import { LimitRefusedError } from './LimitRefusedError.js';
import type { Limiters } from './Limiters.js';

/**
 * Puts the per-IP upgrade rate in front of token verification (so floods cost no signature
 * checks) and the per-IP and per-user open-connection caps after it (counted across gateways with
 * `--redis`; a count that cannot be read refuses, 503).
 */
export function limitUpgrades(limiters: Limiters, inner: UpgradeHandler): UpgradeHandler {
  return async (request) => {
    const rate = await limiters.upgrade(request.remoteAddress);
    if (!rate.ok) {
      return { accept: false, response: toHttpResponse(new LimitRefusedError(rate, 'Too many connection attempts from this address.')) };
    }
    const decision = await inner(request);
    if (!decision.accept) return decision;
    const room = await limiters.connectionAllowed(request.remoteAddress, decision.principal.userId);
    if (!room.ok) return { accept: false, response: toHttpResponse(new LimitRefusedError(room, 'Too many open connections for this address or user.')) };
    return decision;
  };
}
