/**
 * Protocol-level bounds shared by server and client. Server-side operational limits
 * (slots, queue sizes, token caps) live in the server config and reach clients in `ready.limits`.
 */
export const ProtocolLimits = {
  /** Client-chosen request ids: short, URL-safe. */
  maxIdLength: 64,
  /** Conversation ids are server-issued; anything longer is not one of ours. */
  maxConversationIdLength: 64,
  /** Hard ceiling on message text characters; the configured limit may be lower. */
  maxTextCharsCeiling: 100_000,
  /** Most document ids one `send` may carry; the configured per-message limit may be lower. */
  maxDocumentsPerSend: 100,
} as const;

export const PROTOCOL_VERSION = 'parley.v1';
export const BEARER_PREFIX = 'bearer.';
