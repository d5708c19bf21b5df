/**
 * Stable error codes carried in `error` frames and HTTP error bodies.
 * A code never changes meaning once shipped; clients switch on it.
 */
export const ErrorCode = {
  /** The frame was not valid JSON. */
  badJson: 'bad_json',
  /** The frame was JSON but did not match any client frame schema. */
  badFrame: 'bad_frame',
  /** Binary frames are not part of the protocol. */
  binaryFrame: 'binary_frame',
  /** A `send` reused the id of a request that is still running on this connection. */
  duplicateId: 'duplicate_id',
  /** A `cancel` named an id that is not running on this connection. */
  unknownRequest: 'unknown_request',
  /** The conversation does not exist, or belongs to someone else (indistinguishable by design). */
  conversationNotFound: 'conversation_not_found',
  /** The conversation already has a reply in progress. */
  conversationBusy: 'conversation_busy',
  /**
   * A `resume` named a reply that cannot be resumed: unknown, another user's, or its grace
   * period ended. Terminal for that id.
   */
  resumeUnavailable: 'resume_unavailable',
  /**
   * The reply was resumed on another connection of the same user (another tab or device): it
   * continues there. Terminal for that id on this connection.
   */
  resumedElsewhere: 'resumed_elsewhere',
  /** The wait queue (overall or for this user) is full. */
  queueFull: 'queue_full',
  /** The message text is longer than the character limit. */
  messageTooLong: 'message_too_long',
  /** The message alone does not fit in the model's context window. */
  contextOverflow: 'context_overflow',
  /** The engine failed while generating this reply. */
  engineError: 'engine_error',
  /**
   * The upstream engine (`--upstream`: another OpenAI-compatible server) refused or failed this
   * reply: none of the name's upstreams could start it, or the one serving it died mid-reply (text
   * already sent stays sent). HTTP 502; terminal for that id.
   */
  upstreamFailed: 'upstream_failed',
  /** The server is shutting down and accepts no new work. */
  shuttingDown: 'shutting_down',
  /** Too many requests; `retryAfterMs` says when to try again. */
  rateLimited: 'rate_limited',
  /** The rate limiter could not decide; the request is refused rather than let through. */
  limiterUnavailable: 'limiter_unavailable',
  /** The connection's access token expired without an in-band refresh. */
  tokenExpired: 'token_expired',
  /** The user's tokens were revoked (logout, or an admin). */
  revoked: 'revoked',
  /** HTTP: Origin or Host not allowed, or the role does not permit this. */
  forbidden: 'forbidden',
  /** HTTP: missing, invalid or expired credentials. */
  unauthorized: 'unauthorized',
  /** HTTP: request body failed validation. */
  badRequest: 'bad_request',
  /** HTTP: the request conflicts with the server's configuration (e.g. rotating a pinned invite). */
  conflict: 'conflict',
  /** HTTP: no such route. */
  notFound: 'not_found',
  /** HTTP: request body too large. */
  payloadTooLarge: 'payload_too_large',
  /** Stored history failed to decrypt: the value was altered or moved, or the history key changed. */
  historyUnreadable: 'history_unreadable',
  /** The request named a model this server does not serve (see `ready.models` and GET /v1/models). */
  modelNotFound: 'model_not_found',
  /**
   * The model cannot be loaded now: it needs more memory than the server allows models
   * (`--model-memory-mib`), or its file failed to load. The message says which.
   */
  modelUnavailable: 'model_unavailable',
  /** A document upload that is neither a PDF nor UTF-8 text (HTTP 415); the message names what it looks like. */
  documentUnsupported: 'document_unsupported',
  /** A document upload over the size limit (HTTP 413), cut off while it arrived. */
  documentTooLarge: 'document_too_large',
  /** A document's text is longer than the character limit (HTTP 413). */
  documentTooLong: 'document_too_long',
  /** Too many documents (per message or conversation: 409) or too many bytes stored by the user (429). */
  documentLimit: 'document_limit',
  /** The document does not exist, or belongs to someone else (indistinguishable by design). */
  documentNotFound: 'document_not_found',
  /**
   * The content filter (`--filter-rules`) refused the message, or stopped the reply (text already
   * sent stays sent). The message names the rule's label, never its pattern. Terminal for that id.
   */
  contentFiltered: 'content_filtered',
  /** Anything unexpected. The message never carries internals. */
  internal: 'internal',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** WebSocket close codes Parley uses. 4xxx codes are Parley's own (RFC 6455 private range). */
export const CloseCode = {
  normal: 1000,
  goingAway: 1001,
  /** A text frame that is not UTF-8 (ws sends it; uWS drops the TCP connection instead, see uwsTransport.ts). */
  invalidPayload: 1007,
  policyViolation: 1008,
  messageTooBig: 1009,
  internalError: 1011,
  /** The access token expired and was not refreshed in-band. */
  tokenExpired: 4401,
  /** The user logged out or was revoked by an admin. */
  revoked: 4403,
  /** A sustained flood of frames. */
  flood: 4429,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];
