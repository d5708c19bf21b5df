import * as z from 'zod/mini';
import { AttachedDocument, DocumentSource, type ConversationSummary, type StoredConversationInfo } from '../../../shared/protocol.js';
import { newId } from '../util/newId.js';
import { MessageStatus, Sender, TitleSource, TRANSIENT_STATUSES, type ChatMessage, type Conversation } from './ChatMessage.js';
import type { ServerCopy } from './messagesFromServer.js';

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
  documents: z.optional(z.array(AttachedDocument)),
  sources: z.optional(z.array(DocumentSource)),
});
const StoredConversation = z.object({
  id: z.string(),
  serverId: z.optional(z.string()),
  unfetched: z.optional(z.boolean()),
  stale: z.optional(z.boolean()),
  serverUpdatedAt: z.optional(z.number()),
  title: z.string(),
  titleSource: z.enum([TitleSource.none, TitleSource.auto, TitleSource.user]),
  titlePending: z.optional(z.boolean()),
  messages: z.array(StoredMessage),
  model: z.optional(z.string()),
  pickedModel: z.optional(z.string()),
  createdAt: z.number(),
  updatedAt: z.number(),
});
const StoredState = z.object({
  currentId: z.optional(z.string()),
  conversations: z.array(StoredConversation),
});

/**
 * The user's conversations, cached in this browser's localStorage under their user id. Emits
 * `change` on every structural change: a message added, a status moved, a conversation
 * renamed. Streaming text does not go through here (see ReplyStream).
 *
 * The server keeps every conversation and is the source of truth; this cache lets the page
 * show history at once. The server's list (mergeServerList) decides which conversations exist
 * and what they are called; a conversation's messages come from the server when this copy is
 * missing (`unfetched`) or out of date (`stale`) (applyServerCopy). Renames and deletions are
 * made on the server first and only then here (see ConversationSync).
 */
export class ConversationStore extends EventTarget {
  private userId: string | undefined;
  private conversations: Conversation[] = [];
  private currentId: string | undefined;
  /** Replies that were running when the page closed, to be resumed (see takeOrphans). */
  private orphans: OrphanedReply[] = [];
  /** Bumped by every change this page makes to a conversation's messages (see revision). */
  private readonly revisions = new Map<string, number>();
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
    this.orphans = [];
    try {
      const parsed = raw ? StoredState.safeParse(JSON.parse(raw)) : undefined;
      if (parsed?.success) {
        this.conversations = parsed.data.conversations;
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
   * Takes in the server's list (most recent first); the server wins:
   * - a conversation it lists takes its title, and is marked `stale` when this copy no longer
   *   matches (a different number of messages, or a change made elsewhere since it was taken);
   * - one it lists that this browser has not seen becomes an `unfetched` placeholder;
   * - one it does not list is dropped: it was deleted elsewhere. Kept are those `busy` says this
   *   page is working on (a reply running or being resumed), and those the server never had
   *   while they are being created (the open one, or one whose first message is on its way).
   * `skip` names items that already belong to a conversation here under no server id yet (a
   * reply of this tab whose `accepted` never came). At most MAX_CONVERSATIONS are kept, the
   * most recent. Resolves with the conversations dropped because the server no longer has them.
   */
  mergeServerList(items: readonly ConversationSummary[], busy: (conversation: Conversation) => boolean, skip: (item: ConversationSummary) => boolean): Conversation[] {
    const listed = new Map(items.map((item) => [item.id, item]));
    const deleted: Conversation[] = [];
    this.conversations = this.conversations.filter((conversation) => {
      if (busy(conversation)) return true;
      if (conversation.serverId === undefined) return conversation.id === this.currentId;
      if (listed.has(conversation.serverId)) return true;
      deleted.push(conversation);
      return false;
    });
    for (const item of items) {
      const known = this.byServerId(item.id);
      if (!known) {
        if (skip(item)) continue;
        this.conversations.push({
          id: newId('c'),
          serverId: item.id,
          unfetched: true,
          title: serverTitle(item.title),
          titleSource: TitleSource.auto,
          messages: [],
          ...(item.model === undefined ? {} : { model: item.model }),
          createdAt: item.updatedAt,
          updatedAt: item.updatedAt,
        });
        continue;
      }
      if (!known.titlePending) known.title = serverTitle(item.title);
      if (item.model !== undefined) this.setModel(known, item.model);
      known.updatedAt = item.updatedAt;
      if (known.unfetched || busy(known)) continue;
      const matches = known.messages.length === item.turns && item.activeReplyId === undefined && (known.serverUpdatedAt ?? item.updatedAt) === item.updatedAt;
      if (matches && !known.stale) known.serverUpdatedAt = item.updatedAt;
      else known.stale = true;
    }
    const kept = new Set(this.list.slice(0, MAX_CONVERSATIONS));
    this.conversations = this.conversations.filter((conversation) => kept.has(conversation) || conversation.id === this.currentId || busy(conversation));
    // A placeholder is not opened on its own (that would fetch it): with the open one gone, none is.
    if (!this.get(this.currentId ?? '')) this.currentId = undefined;
    this.changed();
    return deleted;
  }

  /**
   * The server's copy of a conversation arrived: it replaces this one's messages (a message
   * that reads the same here keeps this page's object, with its stats) and title.
   */
  applyServerCopy(conversation: Conversation, info: StoredConversationInfo, copy: ServerCopy): void {
    if (!this.conversations.includes(conversation)) return;
    const before = conversation.messages;
    conversation.messages = copy.messages.map((message, index) => {
      const mine = before[index];
      if (!mine || mine.from !== message.from || mine.text !== message.text || mine.status !== message.status) return message;
      // The server's attachments and sources hold for the message kept here too.
      if (message.documents) mine.documents = message.documents;
      if (message.sources) mine.sources = message.sources;
      return mine;
    });
    if (!conversation.titlePending) conversation.title = serverTitle(info.title);
    this.setModel(conversation, info.model);
    conversation.unfetched = undefined;
    conversation.stale = copy.settled ? undefined : true;
    conversation.serverUpdatedAt = copy.settled ? info.updatedAt : undefined;
    conversation.createdAt = info.createdAt;
    conversation.updatedAt = Math.max(conversation.updatedAt, info.updatedAt);
    this.changed();
  }

  /** The server's copy may differ from this one: fetch it again when the conversation is open. */
  markStale(conversation: Conversation): void {
    conversation.stale = true;
    this.changed();
  }

  /**
   * How many changes this page has made to a conversation's messages (a message sent, a reply
   * ended): a copy fetched from the server before the last one is out of date on arrival.
   */
  revision(conversation: Conversation): number {
    return this.revisions.get(conversation.id) ?? 0;
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

  /** Renames a conversation (on the server already, or `pending` until the server has it). */
  rename(id: string, title: string, pending = false): void {
    const conversation = this.get(id);
    const trimmed = title.trim().slice(0, 200);
    if (!conversation || !trimmed) return;
    conversation.title = trimmed;
    conversation.titleSource = TitleSource.user;
    conversation.titlePending = pending || undefined;
    this.changed();
  }

  /** Picks the model for a conversation's next message (see modelToSend); the server switches it then. */
  pickModel(conversation: Conversation, modelId: string): void {
    if (!this.conversations.includes(conversation)) return;
    if (modelId === conversation.model) delete conversation.pickedModel;
    else conversation.pickedModel = modelId;
    this.changed();
  }

  /**
   * The server says which model answers in a conversation (its list, its copy, or the `accepted`
   * of a message that named one). A pick of that same model has nothing left to ask. The
   * caller announces the change.
   */
  setModel(conversation: Conversation, modelId: string): void {
    conversation.model = modelId;
    if (conversation.pickedModel === modelId) delete conversation.pickedModel;
  }

  /** Names a conversation after its first message unless the user named it. */
  autoTitle(conversation: Conversation, text: string): void {
    if (conversation.titleSource !== TitleSource.none) return;
    conversation.title = titleFrom(text);
    conversation.titleSource = TitleSource.auto;
  }

  remove(id: string): void {
    this.conversations = this.conversations.filter((conversation) => conversation.id !== id);
    this.revisions.delete(id);
    if (this.currentId === id) this.currentId = this.list[0]?.id;
    this.changed();
  }

  /** Forgets every conversation (the server deleted them all). */
  clear(): void {
    this.conversations = [];
    this.currentId = undefined;
    this.revisions.clear();
    this.changed();
  }

  /** A change made here to the conversation's messages: it moves up the list. */
  touch(conversation: Conversation): void {
    conversation.updatedAt = Date.now();
    this.revisions.set(conversation.id, this.revision(conversation) + 1);
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
    this.revisions.clear();
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
      // Quota exceeded: drop the oldest conversation and try once more (the server still has it).
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
    return JSON.stringify({ currentId: this.currentId, conversations: this.conversations });
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

/** The server's title for a conversation (the start of its first message, or what the user named it). */
function serverTitle(title: string): string {
  return title.trim() || 'Untitled';
}
