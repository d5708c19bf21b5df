import * as z from 'zod/mini';
import type { ConversationFrame, ConversationSummary } from '../../../shared/protocol.js';
import { newId } from '../util/newId.js';
import { MessageStatus, Sender, TitleSource, TRANSIENT_STATUSES, type ChatMessage, type Conversation } from './ChatMessage.js';

const STORAGE_PREFIX = 'parley.v1.conversations.';
const MAX_CONVERSATIONS = 50;
const TITLE_LENGTH = 48;
export const PAGE_CLOSED = 'The page closed while this reply was running.';

/** A reply that was running when the page closed, and the request that fills it. */
export interface OrphanedReply {
  readonly conversation: Conversation;
  readonly message: ChatMessage;
  readonly requestId: string;
}

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
  requestId: z.optional(z.string()),
});
const StoredConversation = z.object({
  id: z.string(),
  serverId: z.optional(z.string()),
  unfetched: z.optional(z.boolean()),
  title: z.string(),
  titleSource: z.enum([TitleSource.none, TitleSource.auto, TitleSource.user]),
  messages: z.array(StoredMessage),
  createdAt: z.number(),
  updatedAt: z.number(),
});
const StoredState = z.object({
  currentId: z.optional(z.string()),
  conversations: z.array(StoredConversation),
  forgotten: z.optional(z.array(z.string())),
});

/**
 * The user's conversations, kept in this browser's localStorage under their user id. Emits
 * `change` on every structural change: a message added, a status moved, a conversation
 * renamed. Streaming text does not go through here (see ReplyStream).
 *
 * The server also keeps the user's recent conversations (in memory). This browser's copy of a
 * conversation is authoritative once it has one; the server's list only adds the conversations
 * this browser has never seen (as `unfetched` placeholders). A conversation deleted here is
 * remembered as `forgotten`, so the server's list does not bring it back.
 */
export class ConversationStore extends EventTarget {
  private userId: string | undefined;
  private conversations: Conversation[] = [];
  private currentId: string | undefined;
  /** Server ids deleted here; pruned to those the server still lists. */
  private forgotten = new Set<string>();
  /** Replies that were running when the page closed, to be resumed (see takeOrphans). */
  private orphans: OrphanedReply[] = [];
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

  /**
   * Loads one user's conversations. Replies that were running when the page closed wait to be
   * resumed (see takeOrphans); those without a request id are marked interrupted.
   */
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
    this.forgotten = new Set();
    this.orphans = [];
    try {
      const parsed = raw ? StoredState.safeParse(JSON.parse(raw)) : undefined;
      if (parsed?.success) {
        this.conversations = parsed.data.conversations;
        this.forgotten = new Set(parsed.data.forgotten);
        this.currentId = fromOtherTab ? keep : parsed.data.currentId;
        // Another tab's running replies are its own business; a reloaded page's wait to be resumed.
        if (!fromOtherTab) {
          for (const conversation of this.conversations) {
            for (const message of conversation.messages) {
              if (!TRANSIENT_STATUSES.has(message.status)) continue;
              if (message.requestId === undefined) {
                message.status = MessageStatus.interrupted;
                message.error = PAGE_CLOSED;
                continue;
              }
              message.status = MessageStatus.reconnecting;
              message.queuePosition = undefined;
              this.orphans.push({ conversation, message, requestId: message.requestId });
            }
          }
        }
      }
    } catch {
      // Unreadable storage: start empty.
    }
    if (!this.conversations.some((conversation) => conversation.id === this.currentId)) this.currentId = this.list[0]?.id;
    this.changed(!fromOtherTab);
  }

  /**
   * The replies that were running when this page last closed, once: the chat resumes them (the
   * server keeps a dropped reply for its grace period) or, when it cannot, marks them with
   * `PAGE_CLOSED`.
   */
  takeOrphans(): OrphanedReply[] {
    const orphans = this.orphans.filter(({ conversation, message }) => this.conversations.includes(conversation) && conversation.messages.includes(message));
    this.orphans = [];
    return orphans;
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

  byServerId(serverId: string): Conversation | undefined {
    return this.conversations.find((conversation) => conversation.serverId === serverId);
  }

  /**
   * Takes in the server's list (most recent first): conversations this browser has never seen
   * become placeholders, as long as there is room (they never push out a conversation that
   * exists only here); placeholders the server no longer lists go. `skip` names items that
   * already belong to a conversation here (a reply of this tab whose `accepted` never came).
   */
  mergeServerList(items: readonly ConversationSummary[], skip: (item: ConversationSummary) => boolean): void {
    const listed = new Set(items.map((item) => item.id));
    this.forgotten = new Set([...this.forgotten].filter((id) => listed.has(id)));
    this.conversations = this.conversations.filter((conversation) => !conversation.unfetched || listed.has(conversation.serverId ?? ''));
    if (!this.get(this.currentId ?? '')) this.currentId = undefined;
    for (const item of items) {
      const known = this.byServerId(item.id);
      if (known) {
        if (known.unfetched) {
          known.title = titleFrom(item.title);
          known.updatedAt = Math.max(known.updatedAt, item.updatedAt);
        }
        continue;
      }
      if (this.forgotten.has(item.id) || skip(item) || this.conversations.length >= MAX_CONVERSATIONS) continue;
      this.conversations.push({
        id: newId('c'),
        serverId: item.id,
        unfetched: true,
        title: titleFrom(item.title),
        titleSource: TitleSource.auto,
        messages: [],
        createdAt: item.updatedAt,
        updatedAt: item.updatedAt,
      });
    }
    this.changed();
  }

  /** A placeholder's turns arrived: it becomes an ordinary conversation. */
  fill(frame: ConversationFrame): Conversation | undefined {
    const conversation = this.byServerId(frame.conversationId);
    if (!conversation?.unfetched) return undefined;
    conversation.messages = frame.turns.map((turn) => ({ id: newId('m'), from: turn.role, text: turn.text, status: MessageStatus.done }));
    conversation.unfetched = undefined;
    conversation.updatedAt = Math.max(conversation.updatedAt, frame.updatedAt);
    this.changed();
    return conversation;
  }

  /** The server no longer has a placeholder's conversation (it restarted): the placeholder goes. */
  dropUnfetched(serverId: string): void {
    const conversation = this.byServerId(serverId);
    if (conversation?.unfetched) this.remove(conversation.id);
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
    conversation.title = titleFrom(text);
    conversation.titleSource = TitleSource.auto;
  }

  remove(id: string): void {
    const serverId = this.get(id)?.serverId;
    if (serverId !== undefined) this.forgotten.add(serverId);
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
    this.forgotten = new Set();
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
      localStorage.setItem(STORAGE_PREFIX + this.userId, this.serialise());
    } catch {
      // Quota exceeded: drop the oldest conversation and try once more.
      if (this.conversations.length > 1) {
        const oldest = this.list.at(-1);
        if (oldest) this.conversations = this.conversations.filter((conversation) => conversation !== oldest);
        try {
          localStorage.setItem(STORAGE_PREFIX + this.userId, this.serialise());
        } catch {
          // Still too big: the page keeps working from memory.
        }
      }
    }
  }

  private serialise(): string {
    return JSON.stringify({ currentId: this.currentId, conversations: this.conversations, forgotten: [...this.forgotten] });
  }

  private trim(): void {
    while (this.conversations.length > MAX_CONVERSATIONS) {
      const oldest = this.list.at(-1);
      if (!oldest) break;
      this.conversations = this.conversations.filter((conversation) => conversation !== oldest);
    }
  }
}

/** A conversation's title from its first message: the first line, shortened. */
function titleFrom(text: string): string {
  const line = text.trim().split('\n')[0]?.trim() ?? '';
  return line.length > TITLE_LENGTH ? `${line.slice(0, TITLE_LENGTH - 1).trimEnd()}…` : line || 'Untitled';
}
