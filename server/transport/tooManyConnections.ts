import { LimitRefusedError } from '../limits/LimitRefusedError.js';
import { toHttpResponse } from '../http/toHttpResponse.js';
import type { HttpResponse } from './Transport.js';

/** How long a client refused for too many open connections is told to wait: they end at their own pace. */
const RETRY_MS = 5000;

/**
 * The answer past the per-IP HTTP connection cap, before any route runs: 429 `rate_limited` with
 * Retry-After, like the per-IP WebSocket cap; the transport closes the connection after it.
 */
export function tooManyConnections(): HttpResponse {
  return toHttpResponse(new LimitRefusedError({ ok: false, retryAfterMs: RETRY_MS, failed: false }, 'Too many open HTTP connections from this address.'));
}
