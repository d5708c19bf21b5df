import { ErrorCode } from '../../shared/errorCodes.js';
import type { HttpResponse } from './Transport.js';

/** The 413 both transports send while the body is still arriving, before any route runs. */
export function payloadTooLarge(): HttpResponse {
  return {
    status: 413,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ code: ErrorCode.payloadTooLarge, message: 'Request body is too large.' }),
  };
}
