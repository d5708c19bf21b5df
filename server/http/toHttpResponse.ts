import type { ErrorCode } from '../../shared/errorCodes.js';
import type { ParleyError } from '../ParleyError.js';
import type { HttpResponse } from '../transport/Transport.js';

/** The JSON body of every HTTP error: `retryAfterMs` only when the error says when to come back. */
export interface HttpErrorBody {
  readonly code: ErrorCode;
  readonly message: string;
  readonly retryAfterMs?: number;
}

/**
 * The one place an error becomes an HTTP response, on every surface (routes, upgrade refusals,
 * the transports' own 404/413/500), so bodies and headers never drift apart.
 *
 * Invariants: the body is `{ code, message }` plus `retryAfterMs` when set, built field by
 * field, so `cause`, `stack` and anything else on the error never reach the client; an error
 * with `retryAfterMs` also gets `Retry-After` in whole seconds, at least 1. `extraHeaders` add
 * route-specific headers (`allow`, `www-authenticate`, `set-cookie`) and may override these.
 */
export function toHttpResponse(error: ParleyError, extraHeaders: Readonly<Record<string, string>> = {}): HttpResponse {
  const body: HttpErrorBody = {
    code: error.code,
    message: error.message,
    ...(error.retryAfterMs === undefined ? {} : { retryAfterMs: error.retryAfterMs }),
  };
  const headers: Record<string, string> = { 'content-type': 'application/json', 'cache-control': 'no-store' };
  if (error.retryAfterMs !== undefined) headers['retry-after'] = String(Math.max(1, Math.ceil(error.retryAfterMs / 1000)));
  return { status: error.httpStatus, headers: { ...headers, ...extraHeaders }, body: JSON.stringify(body) };
}
