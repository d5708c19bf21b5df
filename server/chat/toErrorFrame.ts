import type { ErrorFrame } from '../../shared/protocol.js';
import type { ParleyError } from '../ParleyError.js';

/** The one place a ParleyError becomes a parley.v1 error frame: code, message, the wait if any, and the request id when it ends one. */
export function toErrorFrame(error: ParleyError, id?: string): ErrorFrame {
  return {
    type: 'error',
    ...(id === undefined ? {} : { id }),
    ...error.toWire(),
    ...(error.retryAfterMs === undefined ? {} : { retryAfterMs: error.retryAfterMs }),
  };
}
