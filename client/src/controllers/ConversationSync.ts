import type { ReactiveController, ReactiveControllerHost } from 'lit';
import type { ServerFrame } from '../../../shared/protocol.js';
import { ApiError } from '../api/ApiError.js';
import type { ConversationApi, ExportFormat } from '../api/ConversationApi.js';
import type { Conversation } from '../state/ChatMessage.js';
import type { ConversationStore } from '../state/ConversationStore.js';
import { messagesFromServer } from '../state/messagesFromServer.js';
import { saveFile } from '../util/saveFile.js';
import type { Announce, ChatController } from './ChatController.js';
import { NoticeTone, type ConnectionController, type Notice } from './ConnectionController.js';

/**
 * Keeps this browser's cache in step with the server, which keeps every conversation and is
 * the source of truth:
 * - after every `ready` it asks for the list (over the socket, so the answer is ordered with
 *   the `accepted` of this page's own messages) and merges it, the server winning;
 * - the open conversation's messages are fetched (GET /api/conversations/{id}) when this copy
 *   is missing or stale, and a reply running elsewhere in it is followed;
 * - renames, deletions, delete-all and exports go to the HTTP API, and the cache changes only
 *   once the server has agreed. A failure is said in `notice` and changes nothing.
 */
export class ConversationSync implements ReactiveController {
  /** A failure or a deletion elsewhere, for the page to show until dismissed or replaced. */
  notice: Notice | undefined;
  /** Local ids of the conversations being fetched. */
  private readonly fetching = new Set<string>();
  /** Local ids whose fetch failed: not tried again until opened again or reconnected. */
  private readonly failed = new Map<string, string>();

  constructor(
    private readonly host: ReactiveControllerHost,
    private readonly store: ConversationStore,
    private readonly connection: ConnectionController,
    private readonly chat: ChatController,
    private readonly api: ConversationApi,
    private readonly announce: Announce,
  ) {
    host.addController(this);
  }

  hostConnected(): void {
    this.store.addEventListener('change', this.fetchCurrent);
  }

  hostDisconnected(): void {
    this.store.removeEventListener('change', this.fetchCurrent);
  }

  handle(frame: ServerFrame): void {
    switch (frame.type) {
      case 'ready':
        this.failed.clear();
        this.connection.send({ type: 'list_conversations' });
        return;
      case 'conversations': {
        const current = this.store.current;
        const deleted = this.store.mergeServerList(
          frame.items,
          (conversation) => this.chat.isGenerating(conversation.id),
          // A conversation whose reply this tab is resuming is already here, under no server id until `resumed` says which.
          (item) => item.activeReplyId !== undefined && this.chat.tracks(item.activeReplyId),
        );
        if (current && deleted.includes(current)) this.say(`“${current.title}” was deleted in another tab or on another device.`);
        this.fetchCurrent();
        return;
      }
      case 'accepted': {
        const conversation = this.store.byServerId(frame.conversationId);
        if (!conversation) return;
        // This page changed the server's copy: the next list sets the time it changed.
        conversation.serverUpdatedAt = undefined;
        if (conversation.titlePending) void this.rename(conversation.id, conversation.title);
        return;
      }
    }
  }

  /** Opens a conversation; one that failed to load is tried again. */
  open(id: string): void {
    this.failed.delete(id);
    this.store.select(id);
  }

  /** Why the open conversation could not be loaded, if it could not. */
  loadError(id: string | undefined): string | undefined {
    return id === undefined ? undefined : this.failed.get(id);
  }

  /** Tries loading the open conversation again. */
  retry(): void {
    const current = this.store.current;
    if (current) this.failed.delete(current.id);
    this.host.requestUpdate();
    this.fetchCurrent();
  }

  /** Renames on the server, then here. One the server does not have yet is renamed here, and on the server once it has it. */
  async rename(id: string, title: string): Promise<void> {
    const conversation = this.store.get(id);
    const trimmed = title.trim().slice(0, 200);
    if (!conversation || !trimmed) return;
    if (conversation.serverId === undefined) {
      this.store.rename(id, trimmed, true);
      return;
    }
    try {
      await this.api.rename(conversation.serverId, trimmed);
    } catch (error) {
      if (error instanceof ApiError && error.notFound) return this.deletedElsewhere(conversation);
      return this.fail(`Could not rename “${conversation.title}”`, error);
    }
    this.store.rename(id, trimmed);
    this.dismiss();
  }

  /** Deletes on the server (which stops its reply), then here. */
  async remove(id: string): Promise<void> {
    const conversation = this.store.get(id);
    if (!conversation) return;
    if (conversation.serverId !== undefined) {
      try {
        await this.api.remove(conversation.serverId);
      } catch (error) {
        // Already gone is what was asked for.
        if (!(error instanceof ApiError && error.notFound)) return this.fail(`Could not delete “${conversation.title}”`, error);
      }
    }
    // The server stopped its reply; one the server never had is stopped here.
    this.chat.remove(id, conversation.serverId === undefined);
    this.dismiss();
    this.announce(`Deleted “${conversation.title}”.`);
  }

  /** Deletes every conversation of the user on the server, then here. */
  async removeAll(): Promise<void> {
    let deleted: number;
    try {
      deleted = await this.api.removeAll();
    } catch (error) {
      return this.fail('Could not delete your conversations', error);
    }
    this.chat.removeAll();
    this.dismiss();
    this.announce(deleted === 1 ? 'Deleted 1 conversation.' : `Deleted ${deleted} conversations.`);
  }

  /** Downloads one conversation (`id`, local) or all of them. */
  async export(format: ExportFormat, id?: string): Promise<void> {
    const conversation = id === undefined ? undefined : this.store.get(id);
    if (id !== undefined && conversation?.serverId === undefined) {
      this.say('This conversation is not on the server yet: send a message first.', NoticeTone.info);
      return;
    }
    try {
      const { blob, fileName } = await this.api.export(format, conversation?.serverId);
      saveFile(blob, fileName);
    } catch (error) {
      if (conversation && error instanceof ApiError && error.notFound) return this.deletedElsewhere(conversation);
      return this.fail(conversation ? `Could not export “${conversation.title}”` : 'Could not export your conversations', error);
    }
    this.dismiss();
  }

  dismiss(): void {
    if (this.notice === undefined) return;
    this.notice = undefined;
    this.host.requestUpdate();
  }

  /**
   * Fetches the open conversation when this copy is missing or stale: on opening it, after each
   * list, and when a reply of this page in it ends. Never while this page runs a reply in it
   * (the running reply holds on to its message), and a copy that left the server before this
   * page's last change to the conversation is dropped (the change makes it stale again).
   */
  private readonly fetchCurrent = (): void => {
    const conversation = this.store.current;
    if (!conversation?.serverId || !(conversation.unfetched || conversation.stale)) return;
    if (!this.connection.connected || this.fetching.has(conversation.id) || this.failed.has(conversation.id) || this.chat.isGenerating(conversation.id)) return;
    void this.fetch(conversation, conversation.serverId);
  };

  private async fetch(conversation: Conversation, serverId: string): Promise<void> {
    this.fetching.add(conversation.id);
    const revision = this.store.revision(conversation);
    let outdated = false;
    try {
      const response = await this.api.get(serverId);
      outdated = this.store.get(conversation.id) !== conversation || this.chat.isGenerating(conversation.id) || this.store.revision(conversation) !== revision;
      if (!outdated) {
        const copy = messagesFromServer(response);
        this.store.applyServerCopy(conversation, response.conversation, copy);
        if (copy.activeReplyId !== undefined && !this.chat.tracks(copy.activeReplyId)) this.chat.follow(conversation, copy.activeReplyId);
      }
    } catch (error) {
      if (error instanceof ApiError && error.notFound) this.deletedElsewhere(conversation);
      else {
        this.failed.set(conversation.id, error instanceof Error ? error.message : String(error));
        this.host.requestUpdate();
      }
    } finally {
      this.fetching.delete(conversation.id);
    }
    // The copy was out of date on arrival, or another conversation was opened meanwhile.
    if (outdated || this.store.current !== conversation) this.fetchCurrent();
  }

  private deletedElsewhere(conversation: Conversation): void {
    if (!this.store.get(conversation.id)) return;
    this.chat.remove(conversation.id, false);
    this.say(`“${conversation.title}” was deleted in another tab or on another device.`);
  }

  private fail(what: string, error: unknown): void {
    const reason = error instanceof Error ? error.message : 'Something went wrong.';
    this.say(`${what}: ${reason}`, NoticeTone.error);
  }

  private say(text: string, tone: NoticeTone = NoticeTone.warning): void {
    this.notice = { text, tone };
    this.host.requestUpdate();
  }
}
