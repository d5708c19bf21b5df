import { ErrorCode } from '../../shared/errorCodes.js';
import type { HttpResponse } from './Transport.js';

/** What both transports send when a handler throws: a stable code, never a message or stack from the error. */
export function internalError(): HttpResponse {
  return {
    status: 500,
    headers: { 'content-type': 'application/json', 'cache-control': 'no-store' },
    body: JSON.stringify({ code: ErrorCode.internal, message: 'Internal error.' }),
  };
}
