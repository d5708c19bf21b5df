import * as z from 'zod/mini';
import { newId } from '../util/newId.js';
import { MessageStatus, Sender, TitleSource, TRANSIENT_STATUSES, type Conversation } from './ChatMessage.js';

const STORAGE_PREFIX = 'parley.v1.conversations.';
const MAX_CONVERSATIONS = 50;
const TITLE_LENGTH = 48;

// What is read back from localStorage is checked like any other input: it may be stale,
// hand-edited or from an older client.
const StoredMessage = z.object({
  id: z.string(),
  from: z.enum([Sender.user, Sender.assistant]),
  text: z.string(),
  status: z.enum(Object.values(MessageStatus) as [MessageStatus, ...MessageStatus[]]),
  queuePosition: z.optional(z.number()),
  stats: z.optional(
    z.object({
      tokensPerSecond: z.number(),
      firstTokenMs: z.number(),
      completionTokens: z.number(),
      stopReason: z.enum(['eos', 'max_tokens', 'time_limit', 'context_full']),
    }),
  ),
  error: z.optional(z.string()),
  notice: z.optional(z.string()),
});
const StoredConversation = z.object({
  id: z.string(),
  serverId: z.optional(z.string()),
  title: z.string(),
  titleSource: z.enum([TitleSource.none, TitleSource.auto, TitleSource.user]),
  messages: z.array(StoredMessage),
  createdAt: z.number(),
  updatedAt: z.number(),
});
const StoredState = z.object({ currentId: z.optional(z.string()), conversations: z.array(StoredConversation) });

/**
 * The user's conversations, kept in this browser's localStorage under their user id (the
 * server holds conversations only in memory and has no list endpoint). Emits `change` on every
 * structural change: a message added, a status moved, a conversation renamed. Streaming text
 * does not go through here (see ReplyStream).
 */
export class ConversationStore extends EventTarget {
  private userId: string | undefined;
  private conversations: Conversation[] = [];
  private currentId: string | undefined;
  private saveTimer: ReturnType<typeof setTimeout> | undefined;

  /**
   * @param busy Whether this tab has replies running: while it does, another tab's save is not
   *   taken over (the running replies hold on to this tab's message objects).
   */
  constructor(private readonly busy: () => boolean = () => false) {
    super();
    window.addEventListener('storage', (event) => {
      if (this.userId !== undefined && event.key === STORAGE_PREFIX + this.userId && !this.busy()) this.read(event.newValue, true);
    });
  }

  /** Loads one user's conversations. Replies that were running when the page closed are marked interrupted. */
  load(userId: string): void {
    if (this.userId === userId) return;
    this.userId = userId;
    let raw: string | null = null;
    try {
      raw = localStorage.getItem(STORAGE_PREFIX + userId);
    } catch {
      // No storage: start empty.
    }
    this.read(raw, false);
  }

  private read(raw: string | null, fromOtherTab: boolean): void {
    const keep = this.currentId;
    this.conversations = [];
    this.currentId = undefined;
    try {
      const parsed = raw ? StoredState.safeParse(JSON.parse(raw)) : undefined;
      if (parsed?.success) {
        this.conversations = parsed.data.conversations;
        this.currentId = fromOtherTab ? keep : parsed.data.currentId;
        // Another tab's running replies are its own business; a reloaded page's are over.
        if (!fromOtherTab) {
          for (const message of this.conversations.flatMap((conversation) => conversation.messages)) {
            if (!TRANSIENT_STATUSES.has(message.status)) continue;
            message.status = MessageStatus.interrupted;
            message.error = 'The page closed while this reply was running.';
          }
        }
      }
    } catch {
      // Unreadable storage: start empty.
    }
    if (!this.conversations.some((conversation) => conversation.id === this.currentId)) this.currentId = this.list[0]?.id;
    this.changed(!fromOtherTab);
  }

  /** Most recently used first. */
  get list(): readonly Conversation[] {
    return [...this.conversations].sort((a, b) => b.updatedAt - a.updatedAt);
  }

  get current(): Conversation | undefined {
    return this.conversations.find((conversation) => conversation.id === this.currentId);
  }

  get(id: string): Conversation | undefined {
    return this.conversations.find((conversation) => conversation.id === id);
  }

  create(): Conversation {
    const now = Date.now();
    const conversation: Conversation = { id: newId('c'), title: 'New conversation', titleSource: TitleSource.none, messages: [], createdAt: now, updatedAt: now };
    this.conversations.push(conversation);
    this.currentId = conversation.id;
    this.trim();
    this.changed();
    return conversation;
  }

  select(id: string): void {
    if (!this.get(id)) return;
    this.currentId = id;
    this.changed();
  }

  rename(id: string, title: string): void {
    const conversation = this.get(id);
    const trimmed = title.trim().slice(0, 200);
    if (!conversation || !trimmed) return;
    conversation.title = trimmed;
    conversation.titleSource = TitleSource.user;
    this.changed();
  }

  /** Names a conversation after its first message unless the user named it. */
  autoTitle(conversation: Conversation, text: string): void {
    if (conversation.titleSource !== TitleSource.none) return;
    const line = text.trim().split('\n')[0]?.trim() ?? '';
    conversation.title = line.length > TITLE_LENGTH ? `${line.slice(0, TITLE_LENGTH - 1).trimEnd()}…` : line || 'Untitled';
    conversation.titleSource = TitleSource.auto;
  }

  remove(id: string): void {
    this.conversations = this.conversations.filter((conversation) => conversation.id !== id);
    if (this.currentId === id) this.currentId = this.list[0]?.id;
    this.changed();
  }

  touch(conversation: Conversation): void {
    conversation.updatedAt = Date.now();
  }

  /** Forgets everything stored for the signed-in user (on sign-out). */
  forgetUser(): void {
    if (this.userId !== undefined) {
      try {
        localStorage.removeItem(STORAGE_PREFIX + this.userId);
      } catch {
        // Nothing to forget.
      }
    }
    clearTimeout(this.saveTimer);
    this.saveTimer = undefined;
    this.userId = undefined;
    this.conversations = [];
    this.currentId = undefined;
    this.changed(false);
  }

  /** Announces a structural change and saves soon (coalesced, so a burst of frames writes once). */
  changed(persist = true): void {
    this.dispatchEvent(new Event('change'));
    if (persist && this.userId !== undefined && this.saveTimer === undefined) {
      this.saveTimer = setTimeout(() => this.saveNow(), 250);
    }
  }

  saveNow(): void {
    clearTimeout(this.saveTimer);
    this.saveTimer = undefined;
    if (this.userId === undefined) return;
    try {
      localStorage.setItem(STORAGE_PREFIX + this.userId, JSON.stringify({ currentId: this.currentId, conversations: this.conversations }));
    } catch {
      // Quota exceeded: drop the oldest conversation and try once more.
      if (this.conversations.length > 1) {
        const oldest = this.list.at(-1);
        if (oldest) this.conversations = this.conversations.filter((conversation) => conversation !== oldest);
        try {
          localStorage.setItem(STORAGE_PREFIX + this.userId, JSON.stringify({ currentId: this.currentId, conversations: this.conversations }));
        } catch {
          // Still too big: the page keeps working from memory.
        }
      }
    }
  }

  private trim(): void {
    while (this.conversations.length > MAX_CONVERSATIONS) {
      const oldest = this.list.at(-1);
      if (!oldest) break;
      this.conversations = this.conversations.filter((conversation) => conversation !== oldest);
    }
  }
}
