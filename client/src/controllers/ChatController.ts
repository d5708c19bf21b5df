import type { ReactiveController, ReactiveControllerHost } from 'lit';
import { ErrorCode } from '../../../shared/errorCodes.js';
import type { AttachedDocument, ServerFrame } from '../../../shared/protocol.js';
import { MessageStatus, Sender, type ChatMessage, type Conversation } from '../state/ChatMessage.js';
import { modelToSend } from '../state/chosenModel.js';
import { PAGE_CLOSED, type ConversationStore } from '../state/ConversationStore.js';
import { SERVER_INTERRUPTED } from '../state/messagesFromServer.js';
import { ReplyStream } from '../state/ReplyStream.js';
import { describeError } from '../util/describeError.js';
import { newId } from '../util/newId.js';
import type { ConnectionController } from './ConnectionController.js';

/** A request the server has not finished: which reply it fills. */
interface Running {
  readonly conversationId: string;
  readonly message: ChatMessage;
  readonly stream: ReplyStream;
  /** The model the send named (absent: the server chose, from the conversation or its default). */
  readonly model?: string;
  /** The seq of the next delta to apply: every delta below it is in the message, none above. */
  nextSeq: number;
  /** Its socket dropped: it waits for the next `ready` to be resumed. */
  detached: boolean;
  /** Stop was pressed while detached: cancel it as soon as it is resumed. */
  cancelOnResume: boolean;
  /** Another connection's reply, followed from a conversation opened from the server's list. */
  readonly followed: boolean;
  /**
   * A reply this page was running when it was reloaded: its stored text is replaced by the
   * server's replay from the start once `resumed` arrives.
   */
  replaceOnResume: boolean;
}

/** What the chat announces to assistive technology: one sentence per finished reply. */
export type Announce = (text: string) => void;

/** The server keeps conversations across restarts: one it does not have was deleted. */
export const DELETED_ELSEWHERE = 'This conversation was deleted in another tab or on another device, so the message was not sent.';
export const UNRECOVERABLE_REPLY = 'The connection dropped and the reply could not be recovered.';
const CUT_OFF_REPLY = 'The connection dropped, so this reply was cut off.';

/**
 * Requests and replies: sends messages, routes each server frame to its reply, and keeps the
 * conversation store up to date. Streaming text goes through a ReplyStream per reply;
 * everything else is a structural change of the store.
 *
 * Replies outlive a dropped socket: they stay here, detached, and on the next `ready` each is
 * resumed from the last seq applied. Deltas apply strictly in seq order, so a replayed delta
 * is never applied twice and the text has no gap. They outlive a reload too: a running reply's
 * request id is stored with its message, and the reloaded page resumes it from the start.
 */
export class ChatController implements ReactiveController {
  private readonly running = new Map<string, Running>();

  constructor(
    host: ReactiveControllerHost,
    private readonly store: ConversationStore,
    private readonly connection: ConnectionController,
    private readonly announce: Announce,
  ) {
    host.addController(this);
  }

  /** The page is going away: keep what streamed so far. */
  hostDisconnected(): void {
    this.store.saveNow();
  }

  /** The live stream of a reply that is still running, for its message element. */
  streamFor(messageId: string): ReplyStream | undefined {
    for (const running of this.running.values()) if (running.message.id === messageId) return running.stream;
    return undefined;
  }

  /** Any reply of this tab is still running. */
  get busy(): boolean {
    return this.running.size > 0;
  }

  /** This tab is following (or waiting to resume) the reply with this request id. */
  tracks(requestId: string): boolean {
    return this.running.has(requestId);
  }

  isGenerating(conversationId: string): boolean {
    for (const running of this.running.values()) if (running.conversationId === conversationId) return true;
    return false;
  }

  /** Sends a message, with the documents uploaded for it, in the current conversation (a new one if there is none). */
  send(text: string, documents: readonly AttachedDocument[] = []): boolean {
    const trimmed = text.trim();
    if (!trimmed || !this.connection.connected) return false;
    const conversation = this.store.current ?? this.store.create();
    if (this.isGenerating(conversation.id) || conversation.unfetched) return false;
    this.store.autoTitle(conversation, trimmed);
    conversation.messages.push({ id: newId('m'), from: Sender.user, text: trimmed, status: MessageStatus.done, ...(documents.length > 0 ? { documents: [...documents] } : {}) });
    this.startReply(conversation, trimmed, false, documents.map((document) => document.id));
    return true;
  }

  /** Asks again for the last reply of the current conversation, replacing it. */
  regenerate(): boolean {
    const conversation = this.store.current;
    if (!conversation || !this.connection.connected || this.isGenerating(conversation.id)) return false;
    const last = conversation.messages.at(-1);
    const prompt = [...conversation.messages].reverse().find((message) => message.from === Sender.user);
    if (!prompt) return false;
    if (last?.from === Sender.assistant) conversation.messages.pop();
    // The server replaces its own copy of the last exchange, so the model never sees the old reply.
    this.startReply(conversation, prompt.text, last?.from === Sender.assistant);
    return true;
  }

  /** Stops the reply running in a conversation (the current one by default). */
  stop(conversationId = this.store.current?.id): void {
    for (const [id, running] of this.running) {
      if (running.conversationId !== conversationId) continue;
      if (running.detached) running.cancelOnResume = true;
      else this.connection.send({ type: 'cancel', id });
    }
  }

  /**
   * Follows a reply that another connection of this user started (in a conversation loaded from
   * the server): resumes it from the start, below the message it answers.
   */
  follow(conversation: Conversation, requestId: string): void {
    if (this.running.has(requestId) || !this.connection.connected) return;
    const message: ChatMessage = { id: newId('m'), from: Sender.assistant, text: '', status: MessageStatus.starting };
    conversation.messages.push(message);
    message.requestId = requestId;
    this.running.set(requestId, { ...this.track(conversation, message), followed: true });
    this.connection.send({ type: 'resume', id: requestId, after: -1 });
    this.store.touch(conversation);
    this.store.changed();
  }

  /**
   * Forgets a conversation and its replies. The server stops the replies of a conversation it
   * deletes; `stop` stops them from here (a conversation the server never had).
   */
  remove(conversationId: string, stop: boolean): void {
    if (stop) this.stop(conversationId);
    for (const [id, running] of this.running) if (running.conversationId === conversationId) this.running.delete(id);
    this.store.remove(conversationId);
  }

  /** Forgets every conversation and every reply: the server has deleted them all, stopping the replies. */
  removeAll(): void {
    for (const running of this.running.values()) running.stream.flush();
    this.running.clear();
    this.store.clear();
  }

  private startReply(conversation: Conversation, text: string, regenerate = false, documents: readonly string[] = []): void {
    const message: ChatMessage = { id: newId('m'), from: Sender.assistant, text: '', status: MessageStatus.sending };
    conversation.messages.push(message);
    this.store.touch(conversation);
    this.submit(conversation, message, text, regenerate, documents);
  }

  private submit(conversation: Conversation, message: ChatMessage, text: string, regenerate: boolean, documents: readonly string[]): void {
    const id = newId('r');
    const model = modelToSend(conversation, this.connection.ready);
    message.requestId = id;
    this.running.set(id, { ...this.track(conversation, message), ...(model === undefined ? {} : { model }) });
    const sent = this.connection.send({
      type: 'send',
      id,
      text,
      ...(model === undefined ? {} : { model }),
      ...(conversation.serverId ? { conversationId: conversation.serverId, ...(regenerate ? { regenerate: true as const } : {}) } : {}),
      // Only with documents: a server without them refuses the unknown key.
      ...(documents.length > 0 ? { documents: [...documents] } : {}),
    });
    if (!sent) {
      this.running.delete(id);
      delete message.requestId;
      message.status = MessageStatus.error;
      message.error = 'Not connected: the message was not sent.';
    }
    this.store.changed();
  }

  private track(conversation: Conversation, message: ChatMessage): Running {
    return {
      conversationId: conversation.id,
      message,
      stream: new ReplyStream(message),
      nextSeq: 0,
      detached: false,
      cancelOnResume: false,
      followed: false,
      replaceOnResume: false,
    };
  }

  /** A frame from the server. */
  handle(frame: ServerFrame): void {
    if (frame.type === 'ready') {
      this.adoptOrphans();
      this.resumeAll();
      return;
    }
    if (frame.type === 'refreshed' || frame.type === 'conversations' || frame.type === 'conversation') return;
    if (frame.type === 'error' && frame.id === undefined) {
      // A frame the server could not read at all (or a `get_conversation` miss, ConversationSync's).
      if (frame.code !== ErrorCode.conversationNotFound) console.warn('Parley: the server refused a frame:', frame.code);
      return;
    }
    const running = this.running.get(frame.id as string);
    if (!running) return;
    const { message } = running;
    const conversation = this.store.get(running.conversationId);
    switch (frame.type) {
      case 'accepted':
        if (conversation) {
          const created = conversation.serverId === undefined;
          conversation.serverId = frame.conversationId;
          // The server stored the model the send named; a new conversation without one got the default.
          const model = running.model ?? (created ? this.connection.ready?.model.id : undefined);
          if (model !== undefined) this.store.setModel(conversation, model);
        }
        message.status = MessageStatus.starting;
        message.queuePosition = undefined;
        this.store.changed();
        return;
      case 'resumed':
        if (conversation && conversation.serverId === undefined) conversation.serverId = frame.conversationId;
        if (running.replaceOnResume) {
          // The replay starts at seq 0: it rebuilds the text this page had stored.
          running.replaceOnResume = false;
          message.text = '';
          running.stream.flush();
        }
        message.status = running.nextSeq > 0 ? MessageStatus.streaming : MessageStatus.starting;
        this.store.changed();
        return;
      case 'queued':
        // Before `accepted`, the request waits for its model to load: a place in that line.
        message.status = message.status === MessageStatus.sending || message.status === MessageStatus.loadingModel ? MessageStatus.loadingModel : MessageStatus.queued;
        message.queuePosition = frame.position;
        this.store.changed();
        return;
      case 'delta':
        // A resume replays from the seq asked for, so an older one can only be a duplicate.
        if (frame.seq < running.nextSeq) return;
        if (frame.seq > running.nextSeq) console.error(`Parley: reply ${frame.id} has a gap: seq ${running.nextSeq} to ${frame.seq - 1} never arrived`);
        running.nextSeq = frame.seq + 1;
        running.stream.append(frame.text);
        if (message.status !== MessageStatus.streaming) {
          message.status = MessageStatus.streaming;
          message.queuePosition = undefined;
          this.store.changed();
        }
        return;
      case 'done':
        message.status = MessageStatus.done;
        if (frame.sources && frame.sources.length > 0) message.sources = frame.sources.map(({ documentId, name, chunk }) => ({ documentId, name, chunk }));
        message.stats = {
          tokensPerSecond: frame.timing.tokensPerSecond,
          firstTokenMs: frame.timing.firstTokenMs,
          completionTokens: frame.usage.completionTokens,
          stopReason: frame.stopReason,
        };
        this.finish(frame.id, running, conversation);
        this.announce(`Reply complete${conversation ? ` in ${conversation.title}` : ''}: ${excerpt(message.text)}`);
        return;
      case 'cancelled':
        message.status = MessageStatus.stopped;
        this.finish(frame.id, running, conversation);
        this.announce('Reply stopped.');
        return;
      case 'error':
        if (frame.code === ErrorCode.resumeUnavailable && running.followed && !message.text) {
          // The reply ended before it could be followed: the server's copy has it.
          this.running.delete(frame.id as string);
          if (conversation) {
            conversation.messages = conversation.messages.filter((other) => other !== message);
            this.store.touch(conversation);
            this.store.markStale(conversation);
          }
          this.store.changed();
          return;
        }
        if (frame.code === ErrorCode.resumedElsewhere) {
          message.status = MessageStatus.interrupted;
          message.error = 'This reply continues in another tab or on another device.';
          this.finish(frame.id as string, running, conversation);
          return;
        }
        if (frame.code === ErrorCode.resumeUnavailable) {
          message.status = MessageStatus.interrupted;
          message.error = UNRECOVERABLE_REPLY;
          this.finish(frame.id as string, running, conversation);
          this.announce(`Reply interrupted: ${UNRECOVERABLE_REPLY}`);
          return;
        }
        if (frame.code === ErrorCode.shuttingDown && message.status !== MessageStatus.sending && message.status !== MessageStatus.loadingModel) {
          // An accepted reply cut off by a shutdown: the server keeps it as interrupted, and so does the page.
          message.status = MessageStatus.interrupted;
          message.error = SERVER_INTERRUPTED;
          this.finish(frame.id as string, running, conversation);
          this.announce(`Reply interrupted: ${SERVER_INTERRUPTED}`);
          return;
        }
        message.status = MessageStatus.error;
        message.error = frame.code === ErrorCode.conversationNotFound ? DELETED_ELSEWHERE : describeError(frame, this.connection.ready?.limits);
        this.finish(frame.id as string, running, conversation);
        this.announce(`Reply failed: ${message.error}`);
        return;
    }
  }

  /**
   * The socket closed. After a drop (`resumable`) the server keeps replies for its grace period,
   * so they wait to be resumed; otherwise (sign-out, a server restart, or a server that keeps
   * nothing) they are over.
   */
  disconnected(resumable: boolean): void {
    const keep = resumable && this.serverKeepsReplies;
    for (const [id, running] of this.running) {
      running.stream.flush();
      if (keep) {
        running.detached = true;
        running.message.status = MessageStatus.reconnecting;
        running.message.queuePosition = undefined;
        continue;
      }
      running.message.status = MessageStatus.interrupted;
      running.message.error = running.detached ? UNRECOVERABLE_REPLY : CUT_OFF_REPLY;
      delete running.message.requestId;
      this.running.delete(id);
    }
    this.store.changed();
  }

  /**
   * The replies this page was running when it was last closed (stored with their request ids)
   * join the detached ones, to be resumed from the start. A server that keeps nothing across
   * drops has already ended them.
   */
  private adoptOrphans(): void {
    const orphans = this.store.takeOrphans();
    for (const { conversation, message, requestId } of orphans) {
      if (this.running.has(requestId)) continue;
      if (!this.serverKeepsReplies) {
        message.status = MessageStatus.interrupted;
        message.error = PAGE_CLOSED;
        delete message.requestId;
        continue;
      }
      this.running.set(requestId, { ...this.track(conversation, message), detached: true, replaceOnResume: true });
    }
    if (orphans.length > 0) this.store.changed();
  }

  /** The server keeps a reply whose socket dropped, for its grace period. */
  private get serverKeepsReplies(): boolean {
    return (this.connection.ready?.resumeGraceMs ?? 0) > 0;
  }

  /** A new socket is ready: picks up every detached reply where it left off. */
  private resumeAll(): void {
    for (const [id, running] of this.running) {
      if (!running.detached) continue;
      if (!this.connection.send({ type: 'resume', id, after: running.nextSeq - 1 })) return;
      running.detached = false;
      // Frames on one socket are handled in order: this cancel reaches the reply once it is attached again.
      if (running.cancelOnResume) this.connection.send({ type: 'cancel', id });
    }
  }

  private finish(id: string, running: Running, conversation: Conversation | undefined): void {
    this.running.delete(id);
    delete running.message.requestId;
    running.stream.flush();
    if (conversation) this.store.touch(conversation);
    this.store.changed();
  }
}

function excerpt(text: string): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > 1000 ? `${flat.slice(0, 1000)}… (continues)` : flat || '(empty)';
}
