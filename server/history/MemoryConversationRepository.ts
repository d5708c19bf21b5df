import {
  MessageOutcome,
  type ConversationRepository,
  type ConversationSummary,
  type ImportedConversation,
  type MessageUpdate,
  type StoredConversation,
  type StoredMessage,
} from './ConversationRepository.js';
import { listLimit } from './listLimit.js';

interface Entry {
  conversation: StoredConversation;
  /** In append order. */
  messages: StoredMessage[];
}

/**
 * The repository for `--history off`: everything in this process's memory, gone at restart (and
 * at close). Same answers as SqliteConversationRepository, down to ordering and owner scoping;
 * the contract suite runs against both. Records are frozen copies, so a caller cannot change what
 * is stored by mutating what it got back.
 */
export class MemoryConversationRepository implements ConversationRepository {
  private readonly conversations = new Map<string, Entry>();
  private readonly byOwner = new Map<string, Set<string>>();
  /** Message id to conversation id: message ids are unique across the store. */
  private readonly messageHome = new Map<string, string>();
  private readonly removedListeners: Array<(conversationId: string) => void> = [];

  /** Tells `listener` the id of every conversation removed from now on (deleted, purged, closed): what hangs off it goes too. */
  onRemoved(listener: (conversationId: string) => void): void {
    this.removedListeners.push(listener);
  }

  async open(): Promise<void> {}

  async createConversation(conversation: StoredConversation): Promise<void> {
    this.insertConversation(conversation);
  }

  async getConversation(ownerId: string, id: string): Promise<StoredConversation | undefined> {
    return this.owned(ownerId, id)?.conversation;
  }

  async listConversations(ownerId: string, options: { readonly limit?: number } = {}): Promise<ConversationSummary[]> {
    const limit = listLimit(options.limit);
    return this.ownedEntries(ownerId)
      .sort((a, b) => b.conversation.updatedAt - a.conversation.updatedAt || compareIds(b.conversation.id, a.conversation.id))
      .slice(0, limit)
      .map((entry) => ({ ...entry.conversation, messageCount: entry.messages.length }));
  }

  async countConversations(ownerId: string): Promise<number> {
    return this.byOwner.get(ownerId)?.size ?? 0;
  }

  async listMessages(ownerId: string, conversationId: string): Promise<StoredMessage[]> {
    return [...(this.owned(ownerId, conversationId)?.messages ?? [])];
  }

  async appendMessage(ownerId: string, message: StoredMessage): Promise<boolean> {
    const entry = this.owned(ownerId, message.conversationId);
    if (entry === undefined) return false;
    this.insertMessage(entry, message);
    entry.conversation = Object.freeze({ ...entry.conversation, updatedAt: message.createdAt });
    return true;
  }

  async updateMessage(ownerId: string, messageId: string, update: MessageUpdate): Promise<boolean> {
    const conversationId = this.messageHome.get(messageId);
    const entry = conversationId === undefined ? undefined : this.owned(ownerId, conversationId);
    const index = entry?.messages.findIndex((message) => message.id === messageId) ?? -1;
    const message = entry?.messages[index];
    if (entry === undefined || message === undefined) return false;
    entry.messages[index] = Object.freeze({
      ...message,
      text: update.text ?? message.text,
      tokenCount: update.tokenCount ?? message.tokenCount,
      outcome: update.outcome ?? message.outcome,
    });
    return true;
  }

  async deleteMessages(ownerId: string, conversationId: string, messageIds: readonly string[]): Promise<number> {
    const entry = this.owned(ownerId, conversationId);
    if (entry === undefined) return 0;
    const doomed = new Set(messageIds);
    const before = entry.messages.length;
    entry.messages = entry.messages.filter((message) => {
      if (!doomed.has(message.id)) return true;
      this.messageHome.delete(message.id);
      return false;
    });
    return before - entry.messages.length;
  }

  async renameConversation(ownerId: string, id: string, title: string): Promise<boolean> {
    const entry = this.owned(ownerId, id);
    if (entry === undefined) return false;
    entry.conversation = Object.freeze({ ...entry.conversation, title });
    return true;
  }

  async setConversationModel(ownerId: string, id: string, model: string): Promise<boolean> {
    const entry = this.owned(ownerId, id);
    if (entry === undefined) return false;
    entry.conversation = Object.freeze({ ...entry.conversation, model });
    return true;
  }

  async deleteConversation(ownerId: string, id: string): Promise<boolean> {
    const entry = this.owned(ownerId, id);
    if (entry === undefined) return false;
    this.remove(entry);
    return true;
  }

  async deleteAllConversations(ownerId: string): Promise<number> {
    const entries = this.ownedEntries(ownerId);
    for (const entry of entries) this.remove(entry);
    return entries.length;
  }

  async purgeIdle(before: number): Promise<number> {
    const idle = [...this.conversations.values()].filter((entry) => entry.conversation.updatedAt < before);
    for (const entry of idle) this.remove(entry);
    return idle.length;
  }

  async markInterrupted(): Promise<number> {
    let marked = 0;
    for (const entry of this.conversations.values()) {
      entry.messages = entry.messages.map((message) => {
        if (message.outcome !== MessageOutcome.streaming) return message;
        marked += 1;
        return Object.freeze({ ...message, outcome: MessageOutcome.interrupted });
      });
    }
    return marked;
  }

  async importConversations(entries: readonly ImportedConversation[]): Promise<void> {
    // All or nothing: check everything before storing anything.
    const conversationIds = new Set<string>();
    const messageIds = new Set<string>();
    for (const { conversation, messages } of entries) {
      if (this.conversations.has(conversation.id) || conversationIds.has(conversation.id)) throw new Error(`conversation ${conversation.id} already exists`);
      conversationIds.add(conversation.id);
      for (const message of messages) {
        if (message.conversationId !== conversation.id) throw new Error(`message ${message.id} names conversation ${message.conversationId}, not ${conversation.id}`);
        if (this.messageHome.has(message.id) || messageIds.has(message.id)) throw new Error(`message ${message.id} already exists`);
        messageIds.add(message.id);
      }
    }
    for (const { conversation, messages } of entries) {
      const entry = this.insertConversation(conversation);
      for (const message of messages) this.insertMessage(entry, message);
    }
  }

  async close(): Promise<void> {
    for (const entry of [...this.conversations.values()]) this.remove(entry);
    this.conversations.clear();
    this.byOwner.clear();
    this.messageHome.clear();
  }

  private owned(ownerId: string, id: string): Entry | undefined {
    const entry = this.conversations.get(id);
    return entry?.conversation.ownerId === ownerId ? entry : undefined;
  }

  private ownedEntries(ownerId: string): Entry[] {
    return [...(this.byOwner.get(ownerId) ?? [])].flatMap((id) => this.conversations.get(id) ?? []);
  }

  private insertConversation(conversation: StoredConversation): Entry {
    if (this.conversations.has(conversation.id)) throw new Error(`conversation ${conversation.id} already exists`);
    const entry: Entry = { conversation: copyConversation(conversation), messages: [] };
    this.conversations.set(conversation.id, entry);
    let owned = this.byOwner.get(conversation.ownerId);
    if (owned === undefined) this.byOwner.set(conversation.ownerId, (owned = new Set()));
    owned.add(conversation.id);
    return entry;
  }

  private insertMessage(entry: Entry, message: StoredMessage): void {
    if (this.messageHome.has(message.id)) throw new Error(`message ${message.id} already exists`);
    this.messageHome.set(message.id, entry.conversation.id);
    entry.messages.push(copyMessage(message));
  }

  private remove(entry: Entry): void {
    const { id, ownerId } = entry.conversation;
    this.conversations.delete(id);
    const owned = this.byOwner.get(ownerId);
    owned?.delete(id);
    if (owned?.size === 0) this.byOwner.delete(ownerId);
    for (const message of entry.messages) this.messageHome.delete(message.id);
    for (const listener of this.removedListeners) listener(id);
  }
}

/** The order SQLite's BINARY collation gives ASCII ids; Parley's ids are ASCII. */
function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function copyConversation(conversation: StoredConversation): StoredConversation {
  const { id, ownerId, title, createdAt, updatedAt, model } = conversation;
  return Object.freeze({ id, ownerId, title, createdAt, updatedAt, model });
}

function copyMessage(message: StoredMessage): StoredMessage {
  const { id, conversationId, role, text, createdAt, tokenCount, requestId, outcome } = message;
  return Object.freeze({ id, conversationId, role, text, createdAt, tokenCount, requestId, outcome });
}
