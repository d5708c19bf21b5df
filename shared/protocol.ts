/**
 * The Parley wire protocol, v1 (`parley.v1`). Frames are JSON text.
 * Every schema here is strict: unknown keys are rejected, so `__proto__` or `constructor`
 * keys can never ride along into server objects. Documented in docs/protocol.md.
 */
import * as z from 'zod/mini';
import { ProtocolLimits } from './limits.js';

const requestId = z.string().check(
  z.minLength(1),
  z.maxLength(ProtocolLimits.maxIdLength),
  z.regex(/^[A-Za-z0-9_-]+$/, 'id must be 1-64 characters of A-Z a-z 0-9 _ -'),
);
const conversationId = z.string().check(
  z.minLength(1),
  z.maxLength(ProtocolLimits.maxConversationIdLength),
  z.regex(/^[A-Za-z0-9_-]+$/, 'conversationId must be 1-64 characters of A-Z a-z 0-9 _ -'),
);
const nonNegativeInt = z.int().check(z.gte(0));
/** A document's id: server-issued by POST /api/documents. */
const documentId = z.string().check(
  z.minLength(1),
  z.maxLength(ProtocolLimits.maxIdLength),
  z.regex(/^[A-Za-z0-9_-]+$/, 'a document id is 1-64 characters of A-Z a-z 0-9 _ -'),
);
/** A model's id: what `ready.models` lists, `send.model` names and the API's `model` field carries. */
const modelId = z.string().check(
  z.minLength(1),
  z.maxLength(ProtocolLimits.maxIdLength),
  z.regex(/^[a-z0-9.-]+$/, 'model must be 1-64 characters of a-z 0-9 . -'),
);

// ---- client -> server -------------------------------------------------------

export const SendFrame = z.strictObject({
  type: z.literal('send'),
  id: requestId,
  text: z.string().check(z.minLength(1), z.maxLength(ProtocolLimits.maxTextCharsCeiling)),
  conversationId: z.optional(conversationId),
  /**
   * The model to answer with (an id from `ready.models`). Absent: the conversation's model, or the
   * server's default for a new one. A conversation switches to the model named here and keeps it.
   */
  model: z.optional(modelId),
  /**
   * Replace the conversation's last exchange instead of adding one: the server leaves its last
   * message and reply out of the prompt and stores this exchange in their place.
   */
  regenerate: z.optional(z.literal(true)),
  /**
   * Ids of the sender's uploads (POST /api/documents) to attach to this message and its
   * conversation. An unknown or foreign id ends the request with `document_not_found`.
   */
  documents: z.optional(z.array(documentId).check(z.minLength(1), z.maxLength(ProtocolLimits.maxDocumentsPerSend))),
});
export type SendFrame = z.infer<typeof SendFrame>;

export const CancelFrame = z.strictObject({
  type: z.literal('cancel'),
  id: requestId,
});
export type CancelFrame = z.infer<typeof CancelFrame>;

/** In-band token refresh: a fresh access token for the same user extends the connection. */
export const RefreshFrame = z.strictObject({
  type: z.literal('refresh'),
  token: z.string().check(z.minLength(1), z.maxLength(4096)),
});
export type RefreshFrame = z.infer<typeof RefreshFrame>;

/**
 * Picks up a reply after a dropped connection: the server sends `resumed`, replays the deltas
 * with `seq > after`, then streams the rest live. `after` is the last seq seen, -1 for none.
 * Only the reply's owner (the same `sub`) can resume it, within the grace period.
 */
export const ResumeFrame = z.strictObject({
  type: z.literal('resume'),
  id: requestId,
  after: z.int().check(z.gte(-1)),
});
export type ResumeFrame = z.infer<typeof ResumeFrame>;

/** Asks for the user's conversations kept by the server; answered with `conversations`. */
export const ListConversationsFrame = z.strictObject({
  type: z.literal('list_conversations'),
});
export type ListConversationsFrame = z.infer<typeof ListConversationsFrame>;

/** Asks for one conversation's turns; answered with `conversation` or a `conversation_not_found` error. */
export const GetConversationFrame = z.strictObject({
  type: z.literal('get_conversation'),
  conversationId,
});
export type GetConversationFrame = z.infer<typeof GetConversationFrame>;

export const ClientFrame = z.discriminatedUnion('type', [SendFrame, CancelFrame, RefreshFrame, ResumeFrame, ListConversationsFrame, GetConversationFrame]);
export type ClientFrame = z.infer<typeof ClientFrame>;
export const CLIENT_FRAME_TYPES = ['send', 'cancel', 'refresh', 'resume', 'list_conversations', 'get_conversation'] as const;

// ---- server -> client -------------------------------------------------------

/** Where a loaded model runs. */
export const ModelRuntime = z.strictObject({
  /** `cpu`, or the GPU backend: `cuda`, `metal`, `vulkan`. */
  device: z.string(),
  /** Layers offloaded to the GPU (0 on the CPU), of `totalLayers`. */
  gpuLayers: nonNegativeInt,
  totalLayers: nonNegativeInt,
  /** The same in words, with the reason when the model runs on the CPU. */
  summary: z.string(),
});
export type ModelRuntime = z.infer<typeof ModelRuntime>;

export const ModelInfo = z.strictObject({
  /** The stable id to select it by (`send.model`, the API's `model`). */
  id: modelId,
  /** Shown to people. */
  name: z.string(),
  /** True when this is Parley's generated demo model: a bigram toy, not an assistant. */
  demo: z.boolean(),
  contextSize: nonNegativeInt,
  /** Whether it is in memory now (an unloaded one loads on first use, and the first reply waits for it). */
  loaded: z.optional(z.boolean()),
  /** Present while loaded. */
  runtime: z.optional(ModelRuntime),
});
export type ModelInfo = z.infer<typeof ModelInfo>;

export const LimitsInfo = z.strictObject({
  maxTextChars: nonNegativeInt,
  framesPerSecond: nonNegativeInt,
  generationsPerMinute: nonNegativeInt,
  maxTokens: nonNegativeInt,
  maxFrameBytes: nonNegativeInt,
  slots: nonNegativeInt,
  maxQueue: nonNegativeInt,
});
export type LimitsInfo = z.infer<typeof LimitsInfo>;

export const ReadyFrame = z.strictObject({
  type: z.literal('ready'),
  protocol: z.literal('parley.v1'),
  user: z.strictObject({ id: z.string(), name: z.string() }),
  /** The server's default model: new conversations get it unless `send.model` names another. */
  model: ModelInfo,
  /** Every model served, the default first. */
  models: z.array(ModelInfo),
  limits: LimitsInfo,
  transport: z.string(),
  /** Epoch ms at which this connection's token expires unless refreshed in-band. */
  expiresAt: nonNegativeInt,
  /** How long a reply outlives a dropped connection and can be resumed, in ms (0: never). */
  resumeGraceMs: nonNegativeInt,
});
export type ReadyFrame = z.infer<typeof ReadyFrame>;

export const AcceptedFrame = z.strictObject({
  type: z.literal('accepted'),
  id: requestId,
  conversationId,
});
export type AcceptedFrame = z.infer<typeof AcceptedFrame>;

export const QueuedFrame = z.strictObject({
  type: z.literal('queued'),
  id: requestId,
  /** 1-based: 1 means next in line. */
  position: z.int().check(z.gte(1)),
});
export type QueuedFrame = z.infer<typeof QueuedFrame>;

export const DeltaFrame = z.strictObject({
  type: z.literal('delta'),
  id: requestId,
  /** Starts at 0 for each request and increases by exactly 1. */
  seq: nonNegativeInt,
  text: z.string(),
});
export type DeltaFrame = z.infer<typeof DeltaFrame>;

export const StopReason = {
  /** The model ended its reply. */
  endOfText: 'eos',
  /** The reply reached the token cap. */
  maxTokens: 'max_tokens',
  /** The reply reached the wall-clock cap. */
  timeLimit: 'time_limit',
  /** The reply filled the context window. */
  contextFull: 'context_full',
} as const;
export type StopReason = (typeof StopReason)[keyof typeof StopReason];

/** One passage (chunk) of a document that went into a reply's prompt. `chunk` is its index in the document, from 0. */
export const DocumentSource = z.strictObject({
  documentId,
  name: z.string(),
  chunk: nonNegativeInt,
});
export type DocumentSource = z.infer<typeof DocumentSource>;

export const DocumentKind = { text: 'text', pdf: 'pdf' } as const;
export type DocumentKind = (typeof DocumentKind)[keyof typeof DocumentKind];

/** A document attached to a stored user message. */
export const AttachedDocument = z.strictObject({
  id: documentId,
  name: z.string(),
  size: nonNegativeInt,
  kind: z.enum([DocumentKind.text, DocumentKind.pdf]),
});
export type AttachedDocument = z.infer<typeof AttachedDocument>;

export const DoneFrame = z.strictObject({
  type: z.literal('done'),
  id: requestId,
  stopReason: z.enum([StopReason.endOfText, StopReason.maxTokens, StopReason.timeLimit, StopReason.contextFull]),
  usage: z.strictObject({
    promptTokens: nonNegativeInt,
    completionTokens: nonNegativeInt,
    /** Of the prompt tokens, those served from the KV cache (the conversation's earlier turns). */
    cachedPromptTokens: z.optional(nonNegativeInt),
  }),
  timing: z.strictObject({
    /** Milliseconds from leaving the queue to the first delta. */
    firstTokenMs: z.number().check(z.gte(0)),
    /** Completion tokens per second after the first token. */
    tokensPerSecond: z.number().check(z.gte(0)),
  }),
  /** The document passages that went into the prompt, when the conversation has documents. */
  sources: z.optional(z.array(DocumentSource)),
});
export type DoneFrame = z.infer<typeof DoneFrame>;

export const CancelledFrame = z.strictObject({
  type: z.literal('cancelled'),
  id: requestId,
});
export type CancelledFrame = z.infer<typeof CancelledFrame>;

export const ErrorFrame = z.strictObject({
  type: z.literal('error'),
  /** Present when the error is the terminal frame of that request. */
  id: z.optional(requestId),
  code: z.string(),
  message: z.string(),
  retryAfterMs: z.optional(nonNegativeInt),
});
export type ErrorFrame = z.infer<typeof ErrorFrame>;

/** The reply `id` is attached to this connection again; replayed deltas (`seq > after`) follow. */
export const ResumedFrame = z.strictObject({
  type: z.literal('resumed'),
  id: requestId,
  conversationId,
  after: z.int().check(z.gte(-1)),
});
export type ResumedFrame = z.infer<typeof ResumedFrame>;

export const ConversationSummary = z.strictObject({
  id: conversationId,
  /** The start of the first message, at most 80 characters. */
  title: z.string(),
  turns: nonNegativeInt,
  /** Epoch ms of the last change. */
  updatedAt: nonNegativeInt,
  /** The id of the model that answers in it. */
  model: z.optional(z.string()),
  /** The id of the reply in progress, if any: resume it to follow along. */
  activeReplyId: z.optional(requestId),
});
export type ConversationSummary = z.infer<typeof ConversationSummary>;

/** The user's conversations, most recently updated first. */
export const ConversationsFrame = z.strictObject({
  type: z.literal('conversations'),
  items: z.array(ConversationSummary),
});
export type ConversationsFrame = z.infer<typeof ConversationsFrame>;

export const ConversationTurn = z.strictObject({
  role: z.enum(['user', 'assistant']),
  text: z.string(),
});

/** One conversation's turns as the server keeps them (a reply in progress is not included). */
export const ConversationFrame = z.strictObject({
  type: z.literal('conversation'),
  conversationId,
  turns: z.array(ConversationTurn),
  updatedAt: nonNegativeInt,
  activeReplyId: z.optional(requestId),
  /** The message whose reply is in progress (not yet among `turns`). */
  activeMessage: z.optional(z.string()),
});
export type ConversationFrame = z.infer<typeof ConversationFrame>;

export const RefreshedFrame = z.strictObject({
  type: z.literal('refreshed'),
  /** Epoch ms: the connection is closed with 4401 at this time unless refreshed again. */
  expiresAt: nonNegativeInt,
});
export type RefreshedFrame = z.infer<typeof RefreshedFrame>;

export const ServerFrame = z.discriminatedUnion('type', [
  ReadyFrame,
  RefreshedFrame,
  AcceptedFrame,
  QueuedFrame,
  DeltaFrame,
  DoneFrame,
  CancelledFrame,
  ErrorFrame,
  ResumedFrame,
  ConversationsFrame,
  ConversationFrame,
]);
export type ServerFrame = z.infer<typeof ServerFrame>;

/** Frames that end a request: exactly one per accepted id. */
export type TerminalFrame = DoneFrame | CancelledFrame | (ErrorFrame & { id: string });
export function isTerminalFrame(frame: ServerFrame): frame is TerminalFrame {
  return frame.type === 'done' || frame.type === 'cancelled' || (frame.type === 'error' && frame.id !== undefined);
}

// ---- HTTP -------------------------------------------------------------------

export const TokenRequest = z.strictObject({
  invite: z.string().check(z.minLength(1), z.maxLength(256)),
  name: z.string().check(z.minLength(1), z.maxLength(64)),
  /**
   * A random id the page keeps (localStorage) and sends with every join: an admin's revocation
   * of the user blocks joins from this device (and address) until lifted.
   */
  device: z.optional(z.string().check(z.regex(/^[A-Za-z0-9_-]{16,64}$/))),
});
export type TokenRequest = z.infer<typeof TokenRequest>;

export const TokenResponse = z.strictObject({
  token: z.string(),
  /** Epoch milliseconds. */
  expiresAt: nonNegativeInt,
  /**
   * Sign-ins only: the session's binding value. The page keeps it in its own storage and sends it
   * in REFRESH_BINDING_HEADER with every refresh and logout; the cookie alone refreshes nothing.
   */
  refreshBinding: z.optional(z.string()),
});
export type TokenResponse = z.infer<typeof TokenResponse>;

/** The request header that carries the session's binding value (TokenResponse.refreshBinding). */
export const REFRESH_BINDING_HEADER = 'x-parley-binding';

/** Named accounts (`parley user add`). */
export const LoginRequest = z.strictObject({
  name: z.string().check(z.minLength(1), z.maxLength(64)),
  password: z.string().check(z.minLength(1), z.maxLength(1024)),
});
export type LoginRequest = z.infer<typeof LoginRequest>;

/** Admin: revoke a user. `user` is an account name or a user id (`sub`). */
export const RevokeRequest = z.strictObject({
  user: z.string().check(z.minLength(1), z.maxLength(128)),
});
export type RevokeRequest = z.infer<typeof RevokeRequest>;

export interface RevokeResponse {
  /** The user id whose sessions and tokens were revoked. */
  readonly user: string;
}

export interface RotateInviteResponse {
  readonly invite: string;
}

// ---- HTTP: stored conversations (GET/PATCH/DELETE /api/conversations…, bearer access token) ----

/** How a stored reply ended; `streaming` while it is being written. */
export const StoredOutcome = z.enum(['streaming', 'done', 'stopped', 'error', 'interrupted']);
export type StoredOutcome = z.infer<typeof StoredOutcome>;

export const StoredConversationInfo = z.strictObject({
  id: z.string(),
  title: z.string(),
  createdAt: nonNegativeInt,
  updatedAt: nonNegativeInt,
  model: z.string(),
  /** Stored messages, the user's and the replies. */
  messages: nonNegativeInt,
  /** The request id of the reply in progress, if any (resume it over the socket). */
  activeReplyId: z.optional(z.string()),
});
export type StoredConversationInfo = z.infer<typeof StoredConversationInfo>;

/** GET /api/conversations: the user's conversations, most recently updated first. */
export const ConversationListResponse = z.strictObject({ items: z.array(StoredConversationInfo) });
export type ConversationListResponse = z.infer<typeof ConversationListResponse>;

export const StoredMessageInfo = z.strictObject({
  id: z.string(),
  role: z.enum(['user', 'assistant']),
  text: z.string(),
  createdAt: nonNegativeInt,
  /** Replies only: how it ended. */
  outcome: z.optional(StoredOutcome),
  /** Replies only: the request that produced it. */
  requestId: z.optional(z.string()),
  /** User messages only: the documents sent with it. */
  documents: z.optional(z.array(AttachedDocument)),
  /** Replies only: the document passages that went into its prompt. */
  sources: z.optional(z.array(DocumentSource)),
});
export type StoredMessageInfo = z.infer<typeof StoredMessageInfo>;

/** GET /api/conversations/{id}: one conversation with its messages, oldest first. */
export const ConversationResponse = z.strictObject({ conversation: StoredConversationInfo, messages: z.array(StoredMessageInfo) });
export type ConversationResponse = z.infer<typeof ConversationResponse>;

/** PATCH /api/conversations/{id}. */
export const RenameRequest = z.strictObject({ title: z.string().check(z.minLength(1), z.maxLength(200)) });
export type RenameRequest = z.infer<typeof RenameRequest>;

/** DELETE /api/conversations (every one of the user's). */
export const DeleteAllResponse = z.strictObject({ deleted: nonNegativeInt });
export type DeleteAllResponse = z.infer<typeof DeleteAllResponse>;

// ---- HTTP: API keys (GET/POST/DELETE /api/keys…, bearer access token) --------

/** Longest name of an API key, in characters (after trimming). */
export const API_KEY_NAME_MAX_LENGTH = 64;

/** One of the user's live keys. The key itself is never listed: it is shown once, at creation. */
export const ApiKeyInfo = z.strictObject({
  name: z.string(),
  /** The 8 characters after `pk-parley-`: names the key in lists and in DELETE /api/keys/{prefix}. Not secret. */
  prefix: z.string(),
  createdAt: nonNegativeInt,
  /** The last use of the key, to the minute; absent when it was never used. */
  lastUsedAt: z.optional(nonNegativeInt),
});
export type ApiKeyInfo = z.infer<typeof ApiKeyInfo>;

/** GET /api/keys: the user's live keys, newest first. */
export const ApiKeyListResponse = z.strictObject({ items: z.array(ApiKeyInfo) });
export type ApiKeyListResponse = z.infer<typeof ApiKeyListResponse>;

/** POST /api/keys. */
export const CreateApiKeyRequest = z.strictObject({ name: z.string().check(z.minLength(1), z.maxLength(API_KEY_NAME_MAX_LENGTH)) });
export type CreateApiKeyRequest = z.infer<typeof CreateApiKeyRequest>;

/** POST /api/keys: the only answer that ever holds the key. */
export const CreateApiKeyResponse = z.strictObject({
  /** `pk-parley-` + 43 characters of base64url (256 random bits). */
  key: z.string(),
  prefix: z.string(),
  name: z.string(),
  createdAt: nonNegativeInt,
});
export type CreateApiKeyResponse = z.infer<typeof CreateApiKeyResponse>;

// ---- HTTP: documents (POST /api/documents?name=…, GET/DELETE /api/documents/{id}, bearer access token) ----

/** An upload, as the server keeps it: its text only (the file's bytes are not kept). */
export const DocumentInfo = z.strictObject({
  id: documentId,
  /** The file name as given, sanitised for display (never a path). */
  name: z.string(),
  /** Bytes uploaded. */
  size: nonNegativeInt,
  kind: z.enum([DocumentKind.text, DocumentKind.pdf]),
  /** Characters of extracted text. */
  chars: nonNegativeInt,
  createdAt: nonNegativeInt,
  /** The conversation it is attached to; absent while it is an unsent upload. */
  conversationId: z.optional(z.string()),
});
export type DocumentInfo = z.infer<typeof DocumentInfo>;

/** POST /api/documents (201) and GET /api/documents/{id}. */
export const DocumentResponse = z.strictObject({ document: DocumentInfo });
export type DocumentResponse = z.infer<typeof DocumentResponse>;
