import type { OpenAiErrorBody } from '../../shared/openAiProtocol.js';
import { ErrorCode } from '../../shared/errorCodes.js';
import type { ParleyError } from '../ParleyError.js';
import type { HttpResponse } from '../transport/Transport.js';

/** OpenAI's error type for an HTTP status (the SDKs pick their error class by status). */
function typeOf(status: number): string {
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 404) return 'not_found_error';
  if (status === 429) return 'rate_limit_error';
  if (status >= 500) return 'api_error';
  return 'invalid_request_error';
}

/**
 * The one place an error becomes a `/v1` response: OpenAI's `{error: {message, type, param,
 * code}}` with Parley's status and stable code (a bad key reads `invalid_api_key`, as OpenAI's
 * does), and `Retry-After` when the error says when to come back. Like toHttpResponse, the body is
 * built field by field: no cause or stack reaches it.
 */
export function toOpenAiError(error: ParleyError, param: string | null = null): HttpResponse {
  const body: OpenAiErrorBody = {
    error: {
      message: error.message,
      type: typeOf(error.httpStatus),
      param,
      code: error.code === ErrorCode.unauthorized ? 'invalid_api_key' : error.code,
    },
  };
  const headers: Record<string, string> = { 'content-type': 'application/json', 'cache-control': 'no-store' };
  if (error.retryAfterMs !== undefined) headers['retry-after'] = String(Math.max(1, Math.ceil(error.retryAfterMs / 1000)));
  if (error.httpStatus === 401) headers['www-authenticate'] = 'Bearer';
  return { status: error.httpStatus, headers, body: JSON.stringify(body) };
}
