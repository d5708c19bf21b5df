/**
 * Where conversations are kept, behind one async interface: the chat core and the HTTP API call
 * this and nothing else. SQLite (SqliteConversationRepository) is the embedded default,
 * MemoryConversationRepository serves `--history off`, and PostgresConversationRepository serves
 * `--database`, one store shared by several gateways.
 *
 * Invariants every implementation keeps:
 * - Every read and write is scoped to the owner: another user's id and an unknown id give the
 *   same answer (undefined, false or nothing).
 * - Records are plain data; the caller never sees storage types, and an implementation never
 *   sees protocol frames.
 * - Deleting a conversation deletes its messages with it.
 * - Conversation ids and message ids are unique across the store (not per owner): creating or
 *   appending one that exists rejects, whoever owns it.
 * - A stored value that cannot be read back (altered, moved, or written under another key)
 *   rejects with HistoryUnreadableError; a method never resolves with garbage text.
 */

/** How a stored reply ended. `streaming` is a reply still being written; after a crash it reads as `interrupted`. */
export const MessageOutcome = {
  streaming: 'streaming',
  done: 'done',
  stopped: 'stopped',
  error: 'error',
  interrupted: 'interrupted',
} as const;
export type MessageOutcome = (typeof MessageOutcome)[keyof typeof MessageOutcome];

export type MessageRole = 'user' | 'assistant';

export interface StoredConversation {
  readonly id: string;
  readonly ownerId: string;
  readonly title: string;
  /** Epoch milliseconds. */
  readonly createdAt: number;
  readonly updatedAt: number;
  /** The name of the model that answered in it. */
  readonly model: string;
}

export interface StoredMessage {
  readonly id: string;
  readonly conversationId: string;
  readonly role: MessageRole;
  readonly text: string;
  readonly createdAt: number;
  /** Tokens of this message as the model saw it; undefined until known. */
  readonly tokenCount: number | undefined;
  /** For replies: the request id that produced it. */
  readonly requestId: string | undefined;
  /** For replies: how it ended. Undefined for user messages. */
  readonly outcome: MessageOutcome | undefined;
}

/** A conversation in a list: no messages, but how many. */
export interface ConversationSummary extends StoredConversation {
  readonly messageCount: number;
}

/** A change to a stored message (a reply's checkpoint or its end). */
export interface MessageUpdate {
  readonly text?: string;
  readonly tokenCount?: number;
  readonly outcome?: MessageOutcome;
}

export interface ConversationRepository {
  /** Applies pending migrations and readies the store. Called once before any other method. */
  open(): Promise<void>;

  createConversation(conversation: StoredConversation): Promise<void>;
  getConversation(ownerId: string, id: string): Promise<StoredConversation | undefined>;
  /**
   * The owner's conversations, most recently updated first (equal updatedAt: greater id first),
   * at most `limit` of them (see listLimit: 100 by default, 1 to 1,000).
   */
  listConversations(ownerId: string, options?: { readonly limit?: number }): Promise<ConversationSummary[]>;
  /** How many conversations the owner has. */
  countConversations(ownerId: string): Promise<number>;
  /** The conversation's messages, oldest first; empty for an unknown or foreign conversation. */
  listMessages(ownerId: string, conversationId: string): Promise<StoredMessage[]>;

  /** Adds a message and sets the conversation's updatedAt to its createdAt. False if the conversation is unknown or foreign. */
  appendMessage(ownerId: string, message: StoredMessage): Promise<boolean>;
  /** False if the message is unknown or not the owner's. */
  updateMessage(ownerId: string, messageId: string, update: MessageUpdate): Promise<boolean>;
  /** Deletes messages of the conversation, by id (a regenerated exchange); resolves with how many. Ids of other conversations are ignored. */
  deleteMessages(ownerId: string, conversationId: string, messageIds: readonly string[]): Promise<number>;

  renameConversation(ownerId: string, id: string, title: string): Promise<boolean>;
  /** Records the model that answers in the conversation from now on. False if unknown or foreign. */
  setConversationModel(ownerId: string, id: string, model: string): Promise<boolean>;
  deleteConversation(ownerId: string, id: string): Promise<boolean>;
  /** Deletes every conversation of the owner; resolves with how many. */
  deleteAllConversations(ownerId: string): Promise<number>;

  /** Deletes conversations (of every owner) not updated since `before` (epoch ms); resolves with how many. */
  purgeIdle(before: number): Promise<number>;
  /**
   * Marks every reply still `streaming` as `interrupted` (at start, after a crash); resolves with
   * how many. A store shared by several gateways skips the replies another running gateway is
   * still writing.
   */
  markInterrupted(): Promise<number>;

  /**
   * Adds whole conversations with their messages (each message's conversationId must be its
   * conversation's id; order is kept), all or nothing, and keeps each conversation's updatedAt as
   * given. For imports and for filling a store to measure it: one call is one transaction.
   */
  importConversations(entries: readonly ImportedConversation[]): Promise<void>;

  /** Releases the store; safe to call twice. */
  close(): Promise<void>;
}

export interface ImportedConversation {
  readonly conversation: StoredConversation;
  readonly messages: readonly StoredMessage[];
}
