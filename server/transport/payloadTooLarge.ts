import { toHttpResponse } from '../http/toHttpResponse.js';
import { PayloadTooLargeError } from '../ParleyError.js';
import type { HttpResponse } from './Transport.js';

/** The 413 both transports send while the body is still arriving, before any route runs. */
export function payloadTooLarge(): HttpResponse {
  return toHttpResponse(new PayloadTooLargeError());
}
