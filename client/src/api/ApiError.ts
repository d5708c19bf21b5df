import { ErrorCode } from '../../../shared/errorCodes.js';
import { formatWait } from '../util/describeError.js';

/** A refused or failed request to the conversation API, with a message for people. */
export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    message: string,
    /** HTTP status; 0 when the server could not be reached. */
    readonly status: number,
    readonly code: string,
  ) {
    super(message);
  }

  /** The conversation is not on the server (deleted elsewhere), or never was this user's. */
  get notFound(): boolean {
    return this.status === 404;
  }

  /** Builds the error for a response that is not ok, from its `{code, message, retryAfterMs}` body. */
  static async from(response: Response): Promise<ApiError> {
    let payload: { code?: unknown; message?: unknown; retryAfterMs?: unknown } = {};
    try {
      payload = ((await response.json()) ?? {}) as typeof payload;
    } catch {
      // No JSON body: the status says enough.
    }
    const code = typeof payload.code === 'string' ? payload.code : `http_${response.status}`;
    const serverMessage = typeof payload.message === 'string' ? payload.message : '';
    if (response.status === 429 || code === ErrorCode.rateLimited) {
      const wait = typeof payload.retryAfterMs === 'number' ? payload.retryAfterMs : 5000;
      return new ApiError(`Too many requests. Try again in ${formatWait(wait)}.`, response.status, code);
    }
    if (response.status === 401) return new ApiError('You are not signed in any more.', 401, code);
    if (response.status === 404) return new ApiError('The server does not have this conversation any more.', 404, code);
    return new ApiError(serverMessage || `The server answered ${response.status}.`, response.status, code);
  }

  static unreachable(): ApiError {
    return new ApiError('Cannot reach the Parley server.', 0, 'unreachable');
  }
}
