import type { TransportLimits } from './Transport.js';

/**
 * The largest request body a path may carry. The OpenAI-compatible API under /v1/ receives whole
 * conversations; every other route takes small JSON. Decided on the same path string the handler
 * receives, so a larger body only ever reaches a /v1/ route.
 */
export function maxBodyBytes(path: string, limits: TransportLimits): number {
  return path.startsWith('/v1/') ? limits.maxApiBodyBytes : limits.maxHttpBodyBytes;
}
