import { randomBytes } from 'node:crypto';
import type { Turn } from '../engine/Engine.js';

export interface Conversation {
  readonly id: string;
  readonly ownerId: string;
  readonly turns: Turn[];
  /** True while a reply is being generated; a conversation runs one reply at a time. */
  busy: boolean;
  /** The request id of the reply in progress, while busy. */
  activeReplyId: string | undefined;
  /** The message being answered, while busy. */
  activeMessage: string | undefined;
  /** The slot that last served it: its KV cache may still hold this conversation's prefix. */
  lastSlot: number | undefined;
  updatedAt: number;
}

/**
 * In-memory conversations, keyed by id and owned by one user. Lookups are always scoped
 * to the owner: another user's id and an unknown id give the same answer (undefined).
 */
export class ConversationStore {
  private readonly byId = new Map<string, Conversation>();
  private readonly byOwner = new Map<string, Set<Conversation>>();

  constructor(private readonly limits: { maxPerUser: number; maxTurns: number }) {}

  create(ownerId: string): Conversation {
    const owned = this.byOwner.get(ownerId) ?? new Set<Conversation>();
    this.byOwner.set(ownerId, owned);
    // At the cap, forget the least recently used idle conversation.
    if (owned.size >= this.limits.maxPerUser) {
      const idle = [...owned].filter((conversation) => !conversation.busy).sort((a, b) => a.updatedAt - b.updatedAt);
      const oldest = idle[0];
      if (oldest) this.remove(oldest);
    }
    const conversation: Conversation = {
      id: `c_${randomBytes(12).toString('base64url')}`,
      ownerId,
      turns: [],
      busy: false,
      activeReplyId: undefined,
      activeMessage: undefined,
      lastSlot: undefined,
      updatedAt: Date.now(),
    };
    this.byId.set(conversation.id, conversation);
    owned.add(conversation);
    return conversation;
  }

  get(ownerId: string, id: string): Conversation | undefined {
    const conversation = this.byId.get(id);
    return conversation && conversation.ownerId === ownerId ? conversation : undefined;
  }

  /** The owner's conversations, most recently updated first. */
  list(ownerId: string): Conversation[] {
    return [...(this.byOwner.get(ownerId) ?? [])].sort((a, b) => b.updatedAt - a.updatedAt);
  }

  /** Records a finished exchange, keeping at most maxTurns turns (oldest dropped first, in pairs). */
  append(conversation: Conversation, user: string, assistant: string): void {
    conversation.turns.push({ role: 'user', text: user }, { role: 'assistant', text: assistant });
    const excess = conversation.turns.length - this.limits.maxTurns;
    if (excess > 0) conversation.turns.splice(0, excess + (excess % 2));
    conversation.updatedAt = Date.now();
  }

  /** Replaces the last exchange (a regenerated reply); appends when there is none. */
  replaceLast(conversation: Conversation, user: string, assistant: string): void {
    const last = conversation.turns.at(-1);
    if (conversation.turns.length >= 2 && last?.role === 'assistant') conversation.turns.splice(-2, 2);
    this.append(conversation, user, assistant);
  }

  private remove(conversation: Conversation): void {
    this.byId.delete(conversation.id);
    this.byOwner.get(conversation.ownerId)?.delete(conversation);
  }
}
