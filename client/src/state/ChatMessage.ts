import type { AttachedDocument, DocumentSource, StopReason } from '../../../shared/protocol.js';

/** Where a message is in its life. Transient states end in exactly one of the last four. */
export const MessageStatus = {
  /** Sent; no answer from the server yet. */
  sending: 'sending',
  /** Not accepted yet: waits in line while the model it asked for loads. */
  loadingModel: 'loading_model',
  /** Accepted but waiting for a free slot. */
  queued: 'queued',
  /** Accepted and running, no text yet. */
  starting: 'starting',
  streaming: 'streaming',
  /**
   * The connection dropped while the reply ran; it is resumed (with no text lost or repeated)
   * once the connection is back, or ends as `interrupted` if the server no longer has it.
   */
  reconnecting: 'reconnecting',
  done: 'done',
  stopped: 'stopped',
  error: 'error',
  /** The connection dropped (or the page closed) while the reply was running. */
  interrupted: 'interrupted',
} as const;
export type MessageStatus = (typeof MessageStatus)[keyof typeof MessageStatus];

export const TRANSIENT_STATUSES: ReadonlySet<MessageStatus> = new Set([
  MessageStatus.sending,
  MessageStatus.loadingModel,
  MessageStatus.queued,
  MessageStatus.starting,
  MessageStatus.streaming,
  MessageStatus.reconnecting,
]);

export const Sender = { user: 'user', assistant: 'assistant' } as const;
export type Sender = (typeof Sender)[keyof typeof Sender];

export interface ReplyStats {
  tokensPerSecond: number;
  firstTokenMs: number;
  completionTokens: number;
  stopReason: StopReason;
}

export interface ChatMessage {
  id: string;
  from: Sender;
  text: string;
  status: MessageStatus;
  /** While `queued` or `loadingModel`: the 1-based place in line. */
  queuePosition?: number;
  stats?: ReplyStats;
  /** Why the reply failed, for people. */
  error?: string;
  /** Something the user should know about this reply, shown above it. */
  notice?: string;
  /** A user's message: the documents sent with it. */
  documents?: AttachedDocument[];
  /** A reply: the passages of documents it drew on. */
  sources?: DocumentSource[];
  /**
   * The request that fills this reply, while it runs. Stored with the message, so a page
   * reloaded mid-reply can resume it.
   */
  requestId?: string;
}

export const TitleSource = { none: 'none', auto: 'auto', user: 'user' } as const;
export type TitleSource = (typeof TitleSource)[keyof typeof TitleSource];

/**
 * A conversation as this browser caches it. The server keeps every conversation and is the
 * source of truth; this copy lets the page show history at once and while offline.
 */
export interface Conversation {
  /** Local id; the server's id is `serverId`, known once the server accepted the first message. */
  id: string;
  serverId?: string;
  /**
   * Known from the server's list only (another device, or cleared storage): its messages are
   * fetched when it is opened. Has no messages, and takes none (nothing is sent in it) until then.
   */
  unfetched?: boolean;
  /** The server's copy changed since this one was taken (another device): fetched again when opened. */
  stale?: boolean;
  /**
   * The server's `updatedAt` when this copy was last known to match it; undefined after a change
   * made here (this page's own messages), until the server's list confirms it.
   */
  serverUpdatedAt?: number;
  title: string;
  titleSource: TitleSource;
  /** Renamed before the server had it: the title goes to the server once it does. */
  titlePending?: boolean;
  messages: ChatMessage[];
  /**
   * The id of the model that answers in it, as the server last said (its list, its copy, or the
   * `accepted` of a message sent with a model). Undefined for a conversation the server does not
   * have yet: the server's default answers its first message unless one is picked.
   */
  model?: string;
  /**
   * A model picked here that the server does not know of yet: the next message (or regenerate)
   * names it, and the server switches the conversation to it.
   */
  pickedModel?: string;
  createdAt: number;
  updatedAt: number;
}
