import type { Logger } from 'pino';
import { CloseCode, ErrorCode } from '../../shared/errorCodes.js';
import { parseClientFrame } from '../../shared/parseClientFrame.js';
import type { ModelInfo, ReadyFrame, ServerFrame } from '../../shared/protocol.js';
import type { TokenService } from '../auth/createTokenService.js';
import type { RelayFollow, ReplyRelay } from '../cluster/ReplyRelay.js';
import { budgetKeysOf } from '../limits/budgetKeysOf.js';
import type { LimitDecision, Limiters } from '../limits/Limiters.js';
import type { Metrics } from '../metrics/Metrics.js';
import { ListLimit } from '../history/listLimit.js';
import { LimitRefusedError } from '../limits/LimitRefusedError.js';
import { ParleyError } from '../ParleyError.js';
import type { Connection } from '../transport/Connection.js';
import { AbortReason } from './AbortReason.js';
import type { AdmissionListener, ChatCore } from './ChatCore.js';
import { Outbox } from './Outbox.js';
import type { Reply } from './Reply.js';
import { toErrorFrame } from './toErrorFrame.js';
import { toTerminalFrame } from './toTerminalFrame.js';

export interface ClientSessionDeps {
  readonly chat: ChatCore;
  readonly limiters: Limiters;
  readonly tokens: TokenService;
  readonly metrics: Metrics;
  readonly log: Logger;
  /** `--redis`: replies shared with the other gateways (published when admitted, followed on resume); none when absent. */
  readonly relay?: ReplyRelay;
}

export interface ClientSessionOptions {
  readonly highWaterBytes: number;
  readonly maxOutboxBytes: number;
  /** The ready frame's server part; `models` is asked for at each open, since models load and unload. */
  readonly ready: Omit<ReadyFrame, 'type' | 'protocol' | 'user' | 'transport' | 'expiresAt' | 'model' | 'models'> & { readonly models: () => ModelInfo[] };
}

/** Longest delay setTimeout honours; later expiries are re-armed. */

/** Conversations a listing shows: the store's largest page, which is also the default per-user cap. */
const MAX_LISTED = ListLimit.max;
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * The parley.v1 adapter for one connection: maps frames to chat-core calls and the core's
 * events to frames, and nothing else. It rate-limits and parses frames, refreshes its token
 * in-band, and stops its requests when the socket closes, the token expires or the user is
 * revoked.
 *
 * Invariants: frames are handled strictly in arrival order (one chain per connection); bad
 * input gets an error frame and never throws; every admitted request's outcome reaches this
 * socket as exactly one terminal frame while its reply is attached here; the socket is closed
 * only for a flood (4429), an expired token (4401), a revocation (4403) or a reader too slow
 * to serve (1008).
 */
export class ClientSession {
  private readonly outbox: Outbox;
  /** Replies attached here that have not ended. */
  private readonly active = new Map<string, Reply>();
  /** Replies another gateway runs that this socket follows (resumed here), until their end. */
  private readonly follows = new Map<string, RelayFollow>();
  /**
   * Sends not yet admitted (their model is loading, or they await the limiters): a cancel or a
   * revocation aborts them. A dropped socket does not: once admitted they are kept for a resume,
   * like every reply of a dropped socket.
   */
  private readonly admitting = new Map<string, { readonly controller: AbortController; readonly waiting: () => void }>();
  private readonly listener: AdmissionListener;
  private readonly budgetKeys: readonly string[];
  private chain: Promise<void> = Promise.resolve();
  private expiresAt: number;
  private expiryTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly connection: Connection,
    private readonly deps: ClientSessionDeps,
    private readonly options: ClientSessionOptions,
  ) {
    this.expiresAt = connection.principal.expiresAt;
    this.budgetKeys = budgetKeysOf(connection.principal, connection.remoteAddress);
    this.outbox = new Outbox(connection, {
      highWaterBytes: options.highWaterBytes,
      maxQueuedBytes: options.maxOutboxBytes,
      onOverflow: () => {
        deps.log.warn({ pendingBytes: this.outbox.pendingBytes }, 'closing slow consumer');
        connection.close(CloseCode.policyViolation, 'client too slow');
      },
      owns: (reply) => reply.attached === this.listener,
    });
    this.listener = {
      accepted: (reply) => {
        this.active.set(reply.id, reply);
        this.deps.relay?.publish(reply);
        this.send({ type: 'accepted', id: reply.id, conversationId: reply.conversationId });
      },
      queued: (reply, position) => this.send({ type: 'queued', id: reply.id, position }),
      // Before `accepted`: the request waits for its model to load, which is a place in line too.
      waitingForModel: (id, position) => {
        this.send({ type: 'queued', id, position });
        this.admitting.get(id)?.waiting();
      },
      textPending: (reply, bytes) => this.outbox.deltaPending(reply, bytes),
      ended: (reply) => {
        if (this.active.get(reply.id) === reply) this.active.delete(reply.id);
        if (reply.outcome) this.send(toTerminalFrame(reply.id, reply.outcome));
      },
      released: (reply) => {
        if (this.active.get(reply.id) !== reply) return;
        this.active.delete(reply.id);
        if (!this.closed) this.sendError(new ParleyError(ErrorCode.resumedElsewhere, 'This reply continues on another connection.'), reply.id);
      },
    };
  }

  /** Nothing waits to be written to the socket. */
  get flushed(): boolean {
    return this.outbox.idle;
  }

  get userId(): string {
    return this.connection.principal.userId;
  }

  open(): void {
    const { principal } = this.connection;
    const { models: listModels, ...ready } = this.options.ready;
    const models = listModels();
    this.send({
      type: 'ready',
      protocol: 'parley.v1',
      user: { id: principal.userId, name: principal.name },
      transport: this.connection.transport,
      expiresAt: this.expiresAt,
      ...ready,
      model: models[0] as ModelInfo,
      models,
    });
    this.armExpiry();
  }

  message(data: string | null): void {
    this.chain = this.chain
      .then(() => this.handle(data))
      .catch((error: unknown) => {
        this.deps.log.error({ err: error }, 'frame handling failed');
        this.sendError(new ParleyError(ErrorCode.internal, 'Internal error.'));
      });
  }

  drain(): void {
    this.outbox.drain();
  }

  /** The socket is gone. Its replies, running or recently ended, are kept for a resume within the grace period. */
  close(): void {
    this.closed = true;
    clearTimeout(this.expiryTimer);
    this.active.clear();
    this.deps.chat.replies.detachAll(this.listener);
    // Their gateways start the grace period again.
    for (const follow of this.follows.values()) follow.stop();
    this.follows.clear();
  }

  /** Ends every request with a terminal frame for `reason`, then closes the socket. */
  terminate(reason: AbortReason, code: number, message: string): void {
    if (this.closed) return;
    for (const { controller } of this.admitting.values()) controller.abort(reason);
    for (const reply of [...this.active.values()]) reply.controller.abort(reason);
    for (const follow of this.follows.values()) follow.cancel(reason);
    // Terminal frames of queued requests are already written; running ones settle within
    // milliseconds of the abort, so give them that long before the close frame.
    setTimeout(() => this.connection.close(code, message), 50).unref();
  }

  private async handle(data: string | null): Promise<void> {
    if (this.closed) return;
    const rate = await this.deps.limiters.frame(this.connection.id);
    if (!rate.ok) {
      this.refuse(data, rate);
      await this.strike();
      return;
    }
    if (data === null) {
      this.sendError(new ParleyError(ErrorCode.binaryFrame, 'Binary frames are not supported; send JSON text.'));
      return;
    }
    const parsed = parseClientFrame(data);
    if (!parsed.ok) {
      this.sendError(new ParleyError(parsed.code, parsed.message));
      return;
    }
    const frame = parsed.frame;
    switch (frame.type) {
      case 'send': {
        if (this.active.has(frame.id) || this.admitting.has(frame.id) || this.follows.has(frame.id)) {
          this.sendError(new ParleyError(ErrorCode.duplicateId, `Request id ${frame.id} is still running; use a new id.`));
          return;
        }
        const controller = new AbortController();
        let waiting!: () => void;
        const waitingForModel = new Promise<void>((resolve) => { waiting = resolve; });
        this.admitting.set(frame.id, { controller, waiting });
        const submission = this.deps.chat
          .submit(
            {
              id: frame.id,
              userId: this.userId,
              budgetKeys: this.budgetKeys,
              text: frame.text,
              ...(frame.conversationId === undefined ? {} : { conversationId: frame.conversationId }),
              ...(frame.model === undefined ? {} : { model: frame.model }),
              ...(frame.regenerate === undefined ? {} : { regenerate: frame.regenerate }),
              ...(frame.documents === undefined ? {} : { documents: frame.documents }),
              signal: controller.signal,
              log: this.deps.log,
            },
            this.listener,
          )
          .then((submitted) => {
            this.admitting.delete(frame.id);
            if (!submitted.ok) {
              // Stopped while it waited for its model: the stop's own terminal frame.
              if (controller.signal.reason === AbortReason.cancel) this.send({ type: 'cancelled', id: frame.id });
              else this.send(toErrorFrame(submitted.error, frame.id));
              return;
            }
            // The socket may have closed while admission awaited the limiters and the store.
            if (this.closed) this.deps.chat.replies.detachAll(this.listener);
          });
        // Frames are handled in order, but a wait for a model to load must not hold up this
        // socket's other frames (a cancel of this very request, a listing, a refresh).
        await Promise.race([submission, waitingForModel]);
        return;
      }
      case 'resume': {
        await this.resume(frame.id, frame.after);
        return;
      }
      case 'list_conversations': {
        const chat = this.deps.chat;
        const summaries = await chat.conversations.repository.listConversations(this.userId, { limit: MAX_LISTED });
        const items = summaries.map((summary) => {
          const active = chat.conversations.cached(this.userId, summary.id);
          const busy = active?.busy === true;
          return {
            id: summary.id,
            title: summary.title,
            // A reply in progress is not a turn yet: its exchange is stored, but not finished.
            turns: Math.max(0, summary.messageCount - (busy ? 2 : 0)),
            updatedAt: summary.updatedAt,
            model: summary.model,
            ...(busy && active.activeReplyId !== undefined ? { activeReplyId: active.activeReplyId } : {}),
          };
        });
        this.send({ type: 'conversations', items });
        return;
      }
      case 'get_conversation': {
        const chat = this.deps.chat;
        const stored = await chat.conversations.repository.getConversation(this.userId, frame.conversationId);
        if (!stored) {
          this.sendError(new ParleyError(ErrorCode.conversationNotFound, 'No such conversation.'));
          return;
        }
        const messages = await chat.conversations.repository.listMessages(this.userId, frame.conversationId);
        const active = chat.conversations.cached(this.userId, frame.conversationId);
        const busy = active?.busy === true;
        const done = busy ? messages.slice(0, -2) : messages;
        this.send({
          type: 'conversation',
          conversationId: stored.id,
          turns: done.map((message) => ({ role: message.role, text: message.text })),
          updatedAt: stored.updatedAt,
          ...(busy && active.activeReplyId !== undefined ? { activeReplyId: active.activeReplyId } : {}),
          ...(busy && active.activeMessage !== undefined ? { activeMessage: active.activeMessage } : {}),
        });
        return;
      }
      case 'cancel': {
        const admitting = this.admitting.get(frame.id);
        if (admitting) {
          admitting.controller.abort(AbortReason.cancel);
          return;
        }
        const follow = this.follows.get(frame.id);
        if (follow) {
          follow.cancel(AbortReason.cancel);
          return;
        }
        const reply = this.active.get(frame.id);
        if (!reply) {
          this.sendError(new ParleyError(ErrorCode.unknownRequest, `No running request with id ${frame.id} on this connection (resume it first).`));
          return;
        }
        reply.controller.abort(AbortReason.cancel);
        return;
      }
      case 'refresh': {
        await this.refresh(frame.token);
        return;
      }
    }
  }

  /**
   * Attaches the owner's reply `id` here: one kept after a drop, or one another of the owner's
   * connections holds (which may be dead without the server knowing yet).
   */
  private async resume(id: string, after: number): Promise<void> {
    if (this.active.has(id) || this.follows.has(id)) {
      this.sendError(new ParleyError(ErrorCode.duplicateId, `Request id ${id} is already streaming on this connection.`));
      return;
    }
    const replies = this.deps.chat.replies;
    const found = replies.get(this.userId, id);
    if (!found && this.deps.relay) {
      await this.resumeRemote(this.deps.relay, id, after);
      return;
    }
    if (!found || !found.resumable) {
      this.deps.metrics.resume('unavailable');
      this.sendError(new ParleyError(ErrorCode.resumeUnavailable, 'This reply can no longer be resumed: its grace period ended or it is unknown.'), id);
      return;
    }
    if (after > found.lastSeq) {
      this.sendError(new ParleyError(ErrorCode.badFrame, `resume.after is ${after}, but the last delta sent for ${id} was ${found.lastSeq}.`));
      return;
    }
    const reply = replies.take(this.userId, id, this.listener);
    if (!reply) return;
    this.deps.metrics.resume('resumed');
    this.deps.log.info({ event: 'reply_resumed', req: id, after, lastSeq: reply.lastSeq, finished: reply.finished }, 'reply resumed');
    this.send({ type: 'resumed', id, conversationId: reply.conversationId, after });
    for (const { seq, text } of reply.committedAfter(after)) this.send({ type: 'delta', id, seq, text });
    if (reply.queuePosition !== undefined && !reply.finished) this.send({ type: 'queued', id, position: reply.queuePosition });
    if (!reply.finished) this.active.set(id, reply);
    reply.attach(this.listener);
  }

  /** Follows the owner's reply `id` that another gateway runs: to the client, exactly a local resume. */
  private async resumeRemote(relay: ReplyRelay, id: string, after: number): Promise<void> {
    let over = false;
    const end = () => {
      over = true;
      this.follows.delete(id);
    };
    const result = await relay.follow(this.userId, id, after, {
      resumed: (conversationId) => {
        this.deps.metrics.resume('resumed');
        this.deps.log.info({ event: 'reply_resumed', req: id, after, remote: true }, 'reply resumed from another gateway');
        this.send({ type: 'resumed', id, conversationId, after });
      },
      delta: (seq, text) => this.send({ type: 'delta', id, seq, text }),
      queued: (position) => this.send({ type: 'queued', id, position }),
      ended: (frame) => {
        end();
        this.send(frame);
      },
      released: () => {
        end();
        if (!this.closed) this.sendError(new ParleyError(ErrorCode.resumedElsewhere, 'This reply continues on another connection.'), id);
      },
      lost: () => {
        end();
        this.deps.log.warn({ event: 'reply_follow_lost', req: id }, 'a reply followed from another gateway was lost');
        this.sendError(new ParleyError(ErrorCode.resumeUnavailable, 'This reply can no longer be followed: the server running it is unreachable.'), id);
      },
    });
    switch (result.kind) {
      case 'unavailable':
        this.deps.metrics.resume('unavailable');
        this.sendError(new ParleyError(ErrorCode.resumeUnavailable, 'This reply can no longer be resumed: its grace period ended or it is unknown.'), id);
        return;
      case 'after_beyond':
        this.sendError(new ParleyError(ErrorCode.badFrame, `resume.after is ${after}, but the last delta sent for ${id} was ${result.lastSeq}.`));
        return;
      case 'following':
        if (over) return;
        // The socket closed while the stream was read: its gateway starts the grace period again.
        if (this.closed) result.follow.stop();
        else this.follows.set(id, result.follow);
        return;
    }
  }

  /** Answers a rate-limited frame: a `send` gets its terminal error, anything else an error without id. */
  private refuse(data: string | null, decision: Extract<LimitDecision, { ok: false }>): void {
    const parsed = data === null ? undefined : parseClientFrame(data);
    const sendId = parsed?.ok && parsed.frame.type === 'send' && !this.active.has(parsed.frame.id) ? parsed.frame.id : undefined;
    this.sendError(new LimitRefusedError(decision, 'Too many frames; slow down.'), sendId);
  }

  /** A refused frame counts as a strike; too many strikes in the window is a flood. */
  private async strike(): Promise<void> {
    const strike = await this.deps.limiters.strike(this.connection.id);
    if (strike.ok || this.closed) return;
    this.deps.log.info({ event: 'flood_closed', ip: this.connection.remoteAddress }, 'closing flooding connection');
    this.terminate(AbortReason.flood, CloseCode.flood, 'flood');
  }

  private async refresh(token: string): Promise<void> {
    try {
      const principal = await this.deps.tokens.verifyAccessToken(token);
      if (principal.userId !== this.userId) {
        this.sendError(new ParleyError(ErrorCode.unauthorized, 'That token belongs to another user.'));
        return;
      }
      this.expiresAt = Math.max(this.expiresAt, principal.expiresAt);
      this.armExpiry();
      this.deps.log.info({ event: 'socket_token_refreshed' }, 'token refreshed in-band');
      this.send({ type: 'refreshed', expiresAt: this.expiresAt });
    } catch {
      this.sendError(new ParleyError(ErrorCode.unauthorized, 'Invalid or expired token; the connection keeps its current expiry.'));
    }
  }

  private armExpiry(): void {
    clearTimeout(this.expiryTimer);
    const delay = this.expiresAt - Date.now();
    if (delay <= 0) {
      this.deps.log.info({ event: 'token_expired' }, 'closing connection: token expired');
      this.terminate(AbortReason.tokenExpired, CloseCode.tokenExpired, 'token expired');
      return;
    }
    this.expiryTimer = setTimeout(() => this.armExpiry(), Math.min(delay, MAX_TIMER_MS));
    this.expiryTimer.unref();
  }

  private send(frame: ServerFrame): void {
    this.outbox.send(frame);
  }

  private sendError(error: ParleyError, id?: string): void {
    this.deps.metrics.error(error.code);
    this.send(toErrorFrame(error, id));
  }
}
