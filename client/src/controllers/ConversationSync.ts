import type { ReactiveController, ReactiveControllerHost } from 'lit';
import { ErrorCode } from '../../../shared/errorCodes.js';
import type { ServerFrame } from '../../../shared/protocol.js';
import type { ConversationStore } from '../state/ConversationStore.js';
import type { ChatController } from './ChatController.js';
import type { ConnectionController } from './ConnectionController.js';

/**
 * Brings in the conversations the server keeps for this user that this browser has not seen
 * (another device, cleared storage): after every `ready` it asks for the list, and when such a
 * conversation is opened it fetches its turns, and follows its reply if one is running.
 *
 * A `get_conversation` miss is an error without an id, so misses are matched to requests in
 * order: the server answers one socket's frames in the order they came, and every fetch in
 * flight is forgotten when the socket closes.
 */
export class ConversationSync implements ReactiveController {
  /** Server ids asked for on this socket, oldest first. */
  private fetching: string[] = [];

  constructor(
    host: ReactiveControllerHost,
    private readonly store: ConversationStore,
    private readonly connection: ConnectionController,
    private readonly chat: ChatController,
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
        this.connection.send({ type: 'list_conversations' });
        this.fetchCurrent();
        return;
      case 'conversations':
        // A conversation whose reply this tab is resuming is already here, under another id until `resumed` says which.
        this.store.mergeServerList(frame.items, (item) => item.activeReplyId !== undefined && this.chat.tracks(item.activeReplyId));
        return;
      case 'conversation': {
        this.fetching = this.fetching.filter((id) => id !== frame.conversationId);
        const conversation = this.store.fill(frame);
        if (conversation && frame.activeReplyId !== undefined) this.chat.follow(conversation, frame.activeReplyId, frame.activeMessage);
        return;
      }
      case 'error': {
        if (frame.id !== undefined || frame.code !== ErrorCode.conversationNotFound) return;
        const serverId = this.fetching.shift();
        if (serverId !== undefined) this.store.dropUnfetched(serverId);
        return;
      }
    }
  }

  /** The socket closed: its answers will never come. */
  disconnected(): void {
    this.fetching = [];
  }

  /** Fetches the open conversation if it is a placeholder (on opening it, and again after a reconnect). */
  private readonly fetchCurrent = (): void => {
    const serverId = this.store.current?.unfetched ? this.store.current.serverId : undefined;
    if (serverId === undefined || this.fetching.includes(serverId)) return;
    if (this.connection.send({ type: 'get_conversation', conversationId: serverId })) this.fetching.push(serverId);
  };
}
