import { toHttpResponse } from '../http/toHttpResponse.js';
import { ErrorCode } from '../../shared/errorCodes.js';
import { ParleyError, PayloadTooLargeError } from '../ParleyError.js';
import type { HttpResponse } from './Transport.js';

/** The 413 both transports send while the body is still arriving, before any route runs. */
export function payloadTooLarge(): HttpResponse {
  return toHttpResponse(new PayloadTooLargeError());
}

/** The 413 for an upload cut off at `maxBytes` while it arrived (POST /api/documents). */
export function uploadTooLarge(maxBytes: number): HttpResponse {
  const mib = maxBytes / (1024 * 1024);
  const size = mib >= 1 ? `${Number.isInteger(mib) ? mib : mib.toFixed(1)} MiB` : `${Math.round(maxBytes / 1024)} KiB`;
  return toHttpResponse(new ParleyError(ErrorCode.documentTooLarge, `Documents are at most ${size}.`, { httpStatus: 413 }));
}
