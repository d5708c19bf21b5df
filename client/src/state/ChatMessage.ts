import type { StopReason } from '../../../shared/protocol.js';

/** Where a message is in its life. Transient states end in exactly one of the last four. */
export const MessageStatus = {
  /** Sent; no answer from the server yet. */
  sending: 'sending',
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
  queuePosition?: number;
  stats?: ReplyStats;
  /** Why the reply failed, for people. */
  error?: string;
  /** Something the user should know about this reply (e.g. the server lost the conversation). */
  notice?: string;
  /**
   * The request that fills this reply, while it runs. Stored with the message, so a page
   * reloaded mid-reply can resume it.
   */
  requestId?: string;
}

export const TitleSource = { none: 'none', auto: 'auto', user: 'user' } as const;
export type TitleSource = (typeof TitleSource)[keyof typeof TitleSource];

export interface Conversation {
  /** Local id; the server's id (which changes when the server forgets it) is `serverId`. */
  id: string;
  serverId?: string;
  /**
   * Known from the server's list only (another device, or cleared storage): its turns are
   * fetched when it is opened. Has no messages, and takes none (nothing is sent in it) until then.
   */
  unfetched?: boolean;
  title: string;
  titleSource: TitleSource;
  messages: ChatMessage[];
  createdAt: number;
  updatedAt: number;
}
