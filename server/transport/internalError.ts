import { toHttpResponse } from '../http/toHttpResponse.js';
import { InternalError } from '../ParleyError.js';
import type { HttpResponse } from './Transport.js';

/** What both transports send when a handler throws: a stable code, never a message or stack from the error. */
export function internalError(): HttpResponse {
  return toHttpResponse(new InternalError());
}
