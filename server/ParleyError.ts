import { CloseCode, ErrorCode } from '../shared/errorCodes.js';

/**
 * Base of every error Parley reports to a client. Only `{ code, message }` ever crosses the
 * wire; `cause` and the stack stay in the server log.
 */
export class ParleyError extends Error {
  override name = 'ParleyError';
  readonly code: ErrorCode;
  /** HTTP status when raised while serving HTTP. */
  readonly httpStatus: number;
  /** WebSocket close code when the error ends the connection. */
  readonly closeCode: CloseCode;
  readonly retryAfterMs: number | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    options: { httpStatus?: number; closeCode?: CloseCode; retryAfterMs?: number; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.httpStatus = options.httpStatus ?? 400;
    this.closeCode = options.closeCode ?? CloseCode.policyViolation;
    this.retryAfterMs = options.retryAfterMs;
  }

  toWire(): { code: ErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

export class UnauthorizedError extends ParleyError {
  override name = 'UnauthorizedError';
  constructor(message = 'Missing, invalid or expired token.', cause?: unknown) {
    super(ErrorCode.unauthorized, message, { httpStatus: 401, closeCode: CloseCode.policyViolation, cause });
  }
}

export class QueueFullError extends ParleyError {
  override name = 'QueueFullError';
  constructor(message: string) {
    super(ErrorCode.queueFull, message, { httpStatus: 503 });
  }
}

export class ContextOverflowError extends ParleyError {
  override name = 'ContextOverflowError';
  constructor(message: string) {
    super(ErrorCode.contextOverflow, message, { httpStatus: 413 });
  }
}

export class ModelNotFoundError extends ParleyError {
  override name = 'ModelNotFoundError';
  constructor(model: string, served: readonly string[]) {
    super(ErrorCode.modelNotFound, `The model '${model}' does not exist; this server serves ${served.map((id) => `'${id}'`).join(', ')}.`, { httpStatus: 404 });
  }
}

/** A model that cannot be loaded now (too large for the memory limit, or a file that fails to load). */
export class ModelUnavailableError extends ParleyError {
  override name = 'ModelUnavailableError';
  constructor(message: string, cause?: unknown) {
    super(ErrorCode.modelUnavailable, message, { httpStatus: 503, cause });
  }
}

export class ShuttingDownError extends ParleyError {
  override name = 'ShuttingDownError';
  constructor() {
    super(ErrorCode.shuttingDown, 'The server is shutting down.', { httpStatus: 503, closeCode: CloseCode.goingAway });
  }
}

export class EngineError extends ParleyError {
  override name = 'EngineError';
  constructor(cause: unknown) {
    super(ErrorCode.engineError, 'The model failed while generating this reply.', { httpStatus: 500, closeCode: CloseCode.internalError, cause });
  }
}

/**
 * An upstream engine (`--upstream`) could not serve this reply: every upstream of the name refused
 * before any token, or the one serving it failed mid-reply. The message names the model, never an
 * upstream's address or key; what happened stays in `cause`, for the log.
 */
export class UpstreamFailedError extends ParleyError {
  override name = 'UpstreamFailedError';
  constructor(message: string, cause?: unknown) {
    super(ErrorCode.upstreamFailed, message, { httpStatus: 502, closeCode: CloseCode.internalError, cause });
  }
}

/**
 * The content filter refused a message (input) or stopped a reply (output): HTTP 400, and on a
 * socket an error frame for that request, never a close. The message names the rule's label,
 * never its pattern, so the rules file does not leak to those it filters.
 */
export class ContentFilteredError extends ParleyError {
  override name = 'ContentFilteredError';
  constructor(
    readonly rule: string,
    readonly direction: 'input' | 'output',
  ) {
    super(
      ErrorCode.contentFiltered,
      direction === 'input' ? `Your message was refused by the content filter (rule "${rule}").` : `The reply was stopped by the content filter (rule "${rule}").`,
      { httpStatus: 400 },
    );
  }
}

/**
 * A request the server cannot read: bad JSON, a body of the wrong shape or type, a malformed
 * handshake, a method the route does not take. The code is always `bad_request`; the status
 * says which kind (400, 405 with an `allow` header, 415, 431).
 */
export class BadRequestError extends ParleyError {
  override name = 'BadRequestError';
  constructor(message: string, httpStatus: 400 | 405 | 415 | 431 = 400) {
    super(ErrorCode.badRequest, message, { httpStatus });
  }
}

/** HTTP 403: a Host, Origin or site the server does not serve, or a role without the right. */
export class ForbiddenError extends ParleyError {
  override name = 'ForbiddenError';
  constructor(message: string) {
    super(ErrorCode.forbidden, message, { httpStatus: 403 });
  }
}

/** HTTP 404: no such route, path or user. */
export class NotFoundError extends ParleyError {
  override name = 'NotFoundError';
  constructor(message = 'Not found.') {
    super(ErrorCode.notFound, message, { httpStatus: 404 });
  }
}

/** HTTP 409: the request conflicts with the server's configuration. */
export class ConflictError extends ParleyError {
  override name = 'ConflictError';
  constructor(message: string) {
    super(ErrorCode.conflict, message, { httpStatus: 409 });
  }
}

/** HTTP 413: the body passed `maxHttpBodyBytes` while it was still arriving. */
export class PayloadTooLargeError extends ParleyError {
  override name = 'PayloadTooLargeError';
  constructor() {
    super(ErrorCode.payloadTooLarge, 'Request body is too large.', { httpStatus: 413 });
  }
}

/** Anything unexpected. The message is fixed; what happened stays in `cause`, for the log. */
export class InternalError extends ParleyError {
  override name = 'InternalError';
  constructor(cause?: unknown) {
    super(ErrorCode.internal, 'Internal error.', { httpStatus: 500, closeCode: CloseCode.internalError, cause });
  }
}

/** Wraps anything unexpected so no internal message or stack reaches a client. */
export function toParleyError(error: unknown): ParleyError {
  if (error instanceof ParleyError) return error;
  return new InternalError(error);
}
