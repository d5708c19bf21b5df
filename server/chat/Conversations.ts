import { randomBytes } from 'node:crypto';
import type { Turn } from '../engine/Engine.js';
import { MessageOutcome, type ConversationRepository, type StoredMessage } from '../history/ConversationRepository.js';

/** A turn as the core keeps it: the stored message it came from, and its token count once known. */
export interface ActiveTurn extends Turn {
  readonly messageId: string;
  tokens?: number;
}

/** A conversation in use: its recent turns and the state of the reply in progress. */
export interface ActiveConversation {
  readonly id: string;
  readonly ownerId: string;
  readonly title: string;
  /** The id of the model that answers in it (it may no longer be served). */
  model: string;
  /** The most recent completed exchanges, oldest first (at most maxTurns turns). */
  readonly turns: ActiveTurn[];
  /** True while a reply is being generated; a conversation runs one reply at a time. */
  busy: boolean;
  /** The request id of the reply in progress, while busy. */
  activeReplyId: string | undefined;
  /** The message being answered, while busy. */
  activeMessage: string | undefined;
  /** The slot that last served it: its KV cache may still hold this conversation's prefix. */
  lastSlot: number | undefined;
  /** Last use, for eviction from memory (epoch ms). */
  usedAt: number;
}

export interface ConversationsOptions {
  /** Turns kept in memory for a conversation's prompt (older ones stay in the store). */
  readonly maxTurns: number;
  /** Conversations a user may keep; at the cap, the least recently updated idle one is deleted. */
  readonly maxPerUser: number;
  /** Idle conversations held in memory at most; the least recently used are evicted first. */
  readonly maxCached: number;
  readonly now?: () => number;
}

/**
 * The conversations in use, over the repository that keeps them all. Only conversations in use
 * (and at most `maxCached` idle ones) are in memory, so memory does not grow with stored history.
 *
 * Invariants: every lookup is scoped to the owner (another user's id reads as unknown); a busy
 * conversation is never evicted; the store is written before memory changes, so what memory
 * shows was stored.
 */
export class Conversations {
  private readonly cache = new Map<string, ActiveConversation>();
  private readonly now: () => number;

  constructor(
    readonly repository: ConversationRepository,
    private readonly options: ConversationsOptions,
  ) {
    this.now = options.now ?? Date.now;
  }

  /** The owner's conversation, from memory or loaded from the store. */
  async open(ownerId: string, id: string): Promise<ActiveConversation | undefined> {
    const cached = this.cache.get(id);
    if (cached) {
      if (cached.ownerId !== ownerId) return undefined;
      cached.usedAt = this.now();
      return cached;
    }
    const stored = await this.repository.getConversation(ownerId, id);
    if (!stored) return undefined;
    // Another request may have loaded it while the store answered.
    const raced = this.cache.get(id);
    if (raced) return raced.ownerId === ownerId ? raced : undefined;
    const messages = await this.repository.listMessages(ownerId, id);
    const conversation: ActiveConversation = {
      id,
      ownerId,
      title: stored.title,
      model: stored.model,
      turns: turnsOf(messages).slice(-this.options.maxTurns),
      busy: false,
      activeReplyId: undefined,
      activeMessage: undefined,
      lastSlot: undefined,
      usedAt: this.now(),
    };
    this.cache.set(id, conversation);
    this.evict(conversation);
    return conversation;
  }

  /** The conversation in memory, if it is there (no store access). */
  cached(ownerId: string, id: string): ActiveConversation | undefined {
    const conversation = this.cache.get(id);
    return conversation?.ownerId === ownerId ? conversation : undefined;
  }

  /** Creates and stores a new conversation titled after its first message, answered by `model`. */
  async create(ownerId: string, firstMessage: string, model: string): Promise<ActiveConversation> {
    await this.makeRoom(ownerId);
    const now = this.now();
    const id = `c_${randomBytes(12).toString('base64url')}`;
    const title = titleOf(firstMessage);
    await this.repository.createConversation({ id, ownerId, title, createdAt: now, updatedAt: now, model });
    const conversation: ActiveConversation = { id, ownerId, title, model, turns: [], busy: false, activeReplyId: undefined, activeMessage: undefined, lastSlot: undefined, usedAt: now };
    this.cache.set(id, conversation);
    this.evict(conversation);
    return conversation;
  }

  /** Switches the conversation to another model (the page's picker); stored before memory changes. */
  async setModel(conversation: ActiveConversation, model: string): Promise<void> {
    if (conversation.model === model) return;
    await this.repository.setConversationModel(conversation.ownerId, conversation.id, model);
    conversation.model = model;
    // Token counts belong to the model that counted them.
    for (const turn of conversation.turns) turn.tokens = undefined;
  }

  /**
   * Stores the start of an exchange: the user's message and an empty reply marked streaming (so
   * a crash leaves it `interrupted`). A regenerated exchange first deletes the one it replaces.
   */
  async beginExchange(conversation: ActiveConversation, text: string, requestId: string, replacing: boolean): Promise<{ userMessageId: string; replyMessageId: string }> {
    const { ownerId, id } = conversation;
    if (replacing) {
      const replaced = conversation.turns.slice(-2).map((turn) => turn.messageId);
      await this.repository.deleteMessages(ownerId, id, replaced);
      conversation.turns.splice(-2, 2);
    }
    const createdAt = this.now();
    const userMessageId = newMessageId();
    const replyMessageId = newMessageId();
    await this.repository.appendMessage(ownerId, { id: userMessageId, conversationId: id, role: 'user', text, createdAt, tokenCount: undefined, requestId: undefined, outcome: undefined });
    await this.repository.appendMessage(ownerId, { id: replyMessageId, conversationId: id, role: 'assistant', text: '', createdAt, tokenCount: undefined, requestId, outcome: MessageOutcome.streaming });
    return { userMessageId, replyMessageId };
  }

  /** Stores a reply's text so far (a checkpoint while it streams). */
  async checkpoint(ownerId: string, replyMessageId: string, text: string): Promise<void> {
    await this.repository.updateMessage(ownerId, replyMessageId, { text });
  }

  /**
   * Stores how the exchange ended, and adds it to the turns the next prompt sees unless the reply
   * failed (a failed exchange is kept for the record but not sent to the model again).
   */
  async endExchange(
    conversation: ActiveConversation,
    exchange: { userMessageId: string; replyMessageId: string; text: string; reply: string; outcome: MessageOutcome; userTokens: number | undefined; replyTokens: number | undefined },
  ): Promise<void> {
    await this.repository.updateMessage(conversation.ownerId, exchange.replyMessageId, {
      text: exchange.reply,
      outcome: exchange.outcome,
      ...(exchange.replyTokens === undefined ? {} : { tokenCount: exchange.replyTokens }),
    });
    if (exchange.outcome === MessageOutcome.error) return;
    conversation.turns.push(
      { role: 'user', text: exchange.text, messageId: exchange.userMessageId, ...(exchange.userTokens === undefined ? {} : { tokens: exchange.userTokens }) },
      { role: 'assistant', text: exchange.reply, messageId: exchange.replyMessageId },
    );
    const excess = conversation.turns.length - this.options.maxTurns;
    if (excess > 0) conversation.turns.splice(0, excess + (excess % 2));
  }

  /** Keeps the token counts the engine computed for the turns, in memory and in the store, so they are not counted again. */
  remember(conversation: ActiveConversation, counts: readonly number[]): void {
    counts.forEach((tokens, index) => {
      const turn = conversation.turns[index];
      if (!turn || turn.tokens !== undefined) return;
      turn.tokens = tokens;
      void this.repository.updateMessage(conversation.ownerId, turn.messageId, { tokenCount: tokens }).catch(() => undefined);
    });
  }

  /** Forgets a conversation from memory (it was deleted, or its owner is gone). */
  forget(id: string): void {
    const conversation = this.cache.get(id);
    if (conversation && !conversation.busy) this.cache.delete(id);
  }

  /** Forgets every idle conversation of the owner from memory. */
  forgetOwner(ownerId: string): void {
    for (const conversation of [...this.cache.values()]) if (conversation.ownerId === ownerId) this.forget(conversation.id);
  }

  /** Conversations in memory (in use or cached). */
  get cachedCount(): number {
    return this.cache.size;
  }

  /** At the per-user cap, deletes the owner's least recently updated conversation that is not in use. */
  private async makeRoom(ownerId: string): Promise<void> {
    if ((await this.repository.countConversations(ownerId)) < this.options.maxPerUser) return;
    const summaries = await this.repository.listConversations(ownerId);
    for (const summary of summaries.reverse()) {
      if (this.cache.get(summary.id)?.busy) continue;
      await this.repository.deleteConversation(ownerId, summary.id);
      this.cache.delete(summary.id);
      return;
    }
  }

  /** Evicts the least recently used idle conversations past maxCached, never `keep`. */
  private evict(keep: ActiveConversation): void {
    if (this.cache.size <= this.options.maxCached) return;
    const idle = [...this.cache.values()].filter((conversation) => !conversation.busy && conversation !== keep).sort((a, b) => a.usedAt - b.usedAt);
    for (const conversation of idle.slice(0, this.cache.size - this.options.maxCached)) this.cache.delete(conversation.id);
  }
}

/** A conversation's title: the first line of its first message, at most 80 characters. */
export function titleOf(text: string): string {
  const line = text.trim().split('\n')[0] ?? '';
  return line.length > 80 ? `${line.slice(0, 79)}…` : line;
}

/**
 * The prompt turns of stored messages: each user message with the reply after it, skipping
 * exchanges whose reply failed and a user message with no reply.
 */
export function turnsOf(messages: readonly StoredMessage[]): ActiveTurn[] {
  const turns: ActiveTurn[] = [];
  for (let index = 0; index + 1 < messages.length; index++) {
    const user = messages[index] as StoredMessage;
    const reply = messages[index + 1] as StoredMessage;
    if (user.role !== 'user' || reply.role !== 'assistant') continue;
    index++;
    if (reply.outcome === MessageOutcome.error || reply.outcome === MessageOutcome.streaming) continue;
    turns.push(
      { role: 'user', text: user.text, messageId: user.id, ...(user.tokenCount === undefined ? {} : { tokens: user.tokenCount }) },
      { role: 'assistant', text: reply.text, messageId: reply.id, ...(reply.tokenCount === undefined ? {} : { tokens: reply.tokenCount }) },
    );
  }
  return turns;
}

function newMessageId(): string {
  return `m_${randomBytes(12).toString('base64url')}`;
}
