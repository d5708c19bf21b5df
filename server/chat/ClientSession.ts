import type { Logger } from 'pino';
import { CloseCode, ErrorCode } from '../../shared/errorCodes.js';
import { parseClientFrame } from '../../shared/parseClientFrame.js';
import type { ErrorFrame, ReadyFrame, ServerFrame } from '../../shared/protocol.js';
import type { TokenService } from '../auth/createTokenService.js';
import type { LimitDecision, Limiters } from '../limits/Limiters.js';
import type { Connection } from '../transport/Connection.js';
import { AbortReason } from './AbortReason.js';
import type { ChatService, ReplyOwner } from './ChatService.js';
import { Outbox } from './Outbox.js';
import type { Reply } from './Reply.js';
import type { Metrics } from '../metrics/Metrics.js';

export interface ClientSessionDeps {
  readonly chat: ChatService;
  readonly limiters: Limiters;
  readonly tokens: TokenService;
  readonly metrics: Metrics;
  readonly log: Logger;
  /**
   * Another live session of `userId` that holds reply `id` (running, or recently finished):
   * after a drop the client may reconnect before the server has noticed the old socket died.
   */
  readonly findHolder: (userId: string, id: string, except: ClientSession) => ClientSession | undefined;
}

/** Finished replies each connection remembers, so a terminal frame lost in a dying socket can be replayed. */
const MAX_RECENT = 8;

export interface ClientSessionOptions {
  readonly highWaterBytes: number;
  readonly maxOutboxBytes: number;
  readonly ready: Omit<ReadyFrame, 'type' | 'protocol' | 'user' | 'transport' | 'expiresAt'>;
}

/** Longest delay setTimeout honours; later expiries are re-armed. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * The protocol state of one connection: rate-limits and parses frames, starts and cancels
 * this connection's requests, refreshes its token in-band, and stops all of its requests when
 * the socket closes, the token expires or the user is revoked.
 *
 * Invariants: frames are handled strictly in arrival order (one chain per connection); bad
 * input gets an error frame and never throws; the socket is closed only for a flood (4429),
 * an expired token (4401), a revocation (4403) or a reader too slow to serve (1008).
 */
export class ClientSession {
  private readonly outbox: Outbox;
  private readonly active = new Map<string, Reply>();
  /** Recently finished replies, oldest first, each with the time it finished. */
  private recent: Array<{ reply: Reply; at: number }> = [];
  private readonly owner: ReplyOwner;
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
    this.outbox = new Outbox(connection, {
      highWaterBytes: options.highWaterBytes,
      maxQueuedBytes: options.maxOutboxBytes,
      onOverflow: () => {
        deps.log.warn({ pendingBytes: this.outbox.pendingBytes }, 'closing slow consumer');
        connection.close(CloseCode.policyViolation, 'client too slow');
      },
      owns: (reply) => reply.attachedTarget === this.owner,
    });
    this.owner = {
      userId: connection.principal.userId,
      log: deps.log,
      send: (frame) => this.send(frame),
      deltaPending: (reply, bytes) => this.outbox.deltaPending(reply, bytes),
      settled: (reply) => this.settled(reply),
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
    this.send({
      type: 'ready',
      protocol: 'parley.v1',
      user: { id: principal.userId, name: principal.name },
      transport: this.connection.transport,
      expiresAt: this.expiresAt,
      ...this.options.ready,
    });
    this.armExpiry();
  }

  message(data: string | null): void {
    this.chain = this.chain
      .then(() => this.handle(data))
      .catch((error: unknown) => {
        this.deps.log.error({ err: error }, 'frame handling failed');
        this.sendError({ code: ErrorCode.internal, message: 'Internal error.' });
      });
  }

  drain(): void {
    this.outbox.drain();
  }

  /**
   * The socket is gone. Its replies, running or recently finished, are kept for a resume within
   * the grace period (or cancelled at once when they cannot be resumed).
   */
  close(): void {
    this.closed = true;
    clearTimeout(this.expiryTimer);
    for (const { reply } of this.recent) this.deps.chat.detached.keep(reply);
    for (const reply of this.active.values()) this.deps.chat.detached.keep(reply);
    this.recent = [];
    this.active.clear();
  }

  /** The reply with this id, running here or recently finished here. */
  holds(id: string): Reply | undefined {
    return this.active.get(id) ?? this.recent.findLast((entry) => entry.reply.id === id)?.reply;
  }

  /** Lets go of a reply that is being resumed on another connection; a running one ends here with `resumed_elsewhere`. */
  release(reply: Reply): void {
    if (this.active.get(reply.id) === reply) {
      this.active.delete(reply.id);
      if (!this.closed) this.sendError({ id: reply.id, code: ErrorCode.resumedElsewhere, message: 'This reply continues on another connection.' });
    }
    this.recent = this.recent.filter((entry) => entry.reply !== reply);
    reply.detach();
  }

  /** Ends every request with a terminal frame for `reason`, then closes the socket. */
  terminate(reason: AbortReason, code: number, message: string): void {
    if (this.closed) return;
    this.abortAll(reason);
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
      this.sendError({ code: ErrorCode.binaryFrame, message: 'Binary frames are not supported; send JSON text.' });
      return;
    }
    const parsed = parseClientFrame(data);
    if (!parsed.ok) {
      this.sendError({ code: parsed.code, message: parsed.message });
      return;
    }
    const frame = parsed.frame;
    switch (frame.type) {
      case 'send': {
        if (this.active.has(frame.id)) {
          this.sendError({ code: ErrorCode.duplicateId, message: `Request id ${frame.id} is still running; use a new id.` });
          return;
        }
        const reply = await this.deps.chat.start(this.owner, frame);
        if (!reply || reply.finished) return;
        // The socket may have closed while admission awaited the limiters.
        if (this.closed) this.deps.chat.detached.keep(reply);
        else this.active.set(frame.id, reply);
        return;
      }
      case 'resume': {
        this.resume(frame.id, frame.after);
        return;
      }
      case 'list_conversations': {
        const items = this.deps.chat.conversations.list(this.userId).map((conversation) => ({
          id: conversation.id,
          title: titleOf(conversation.turns[0]?.text ?? ''),
          turns: conversation.turns.length,
          updatedAt: conversation.updatedAt,
          ...(conversation.activeReplyId === undefined ? {} : { activeReplyId: conversation.activeReplyId }),
        }));
        this.send({ type: 'conversations', items });
        return;
      }
      case 'get_conversation': {
        const conversation = this.deps.chat.conversations.get(this.userId, frame.conversationId);
        if (!conversation) {
          this.sendError({ code: ErrorCode.conversationNotFound, message: 'No such conversation.' });
          return;
        }
        this.send({
          type: 'conversation',
          conversationId: conversation.id,
          turns: conversation.turns.map((turn) => ({ role: turn.role, text: turn.text })),
          updatedAt: conversation.updatedAt,
          ...(conversation.activeReplyId === undefined ? {} : { activeReplyId: conversation.activeReplyId }),
          ...(conversation.activeMessage === undefined ? {} : { activeMessage: conversation.activeMessage }),
        });
        return;
      }
      case 'cancel': {
        const request = this.active.get(frame.id);
        if (!request) {
          this.sendError({ code: ErrorCode.unknownRequest, message: `No running request with id ${frame.id} on this connection (resume it first).` });
          return;
        }
        request.controller.abort(AbortReason.cancel);
        return;
      }
      case 'refresh': {
        await this.refresh(frame.token);
        return;
      }
    }
  }

  /**
   * Attaches the owner's reply `id` to this connection: a reply kept after a drop, or one still
   * held by another of the owner's connections (which may be dead without the server knowing yet).
   */
  private resume(id: string, after: number): void {
    if (this.active.has(id)) {
      this.sendError({ code: ErrorCode.duplicateId, message: `Request id ${id} is already streaming on this connection.` });
      return;
    }
    const holder = this.deps.findHolder(this.userId, id, this);
    const reply = this.deps.chat.detached.peek(this.userId, id) ?? holder?.holds(id);
    if (!reply || !reply.resumable) {
      this.deps.metrics.resume('unavailable');
      this.sendError({ id, code: ErrorCode.resumeUnavailable, message: 'This reply can no longer be resumed: its grace period ended or it is unknown.' });
      return;
    }
    if (after > reply.lastSeq) {
      this.sendError({ code: ErrorCode.badFrame, message: `resume.after is ${after}, but the last delta sent for ${id} was ${reply.lastSeq}.` });
      return;
    }
    if (this.deps.chat.detached.take(this.userId, id) !== reply) holder?.release(reply);
    this.deps.metrics.resume('resumed');
    this.deps.log.info({ event: 'reply_resumed', req: id, after, lastSeq: reply.lastSeq, finished: reply.finished }, 'reply resumed');
    if (!reply.finished) this.active.set(id, reply);
    reply.resume(this.owner, after);
  }

  /** A reply attached here ended: it stays replayable for a while in case the terminal frame is lost. */
  private settled(reply: Reply): void {
    if (this.active.get(reply.id) === reply) this.active.delete(reply.id);
    if (this.closed) return;
    const now = Date.now();
    this.recent = this.recent.filter((entry) => entry.reply !== reply && now - entry.at < this.deps.chat.resumeGraceMs);
    this.recent.push({ reply, at: now });
    if (this.recent.length > MAX_RECENT) this.recent.shift();
  }

  /** Answers a rate-limited frame: a `send` gets its terminal error, anything else an error without id. */
  private refuse(data: string | null, decision: Extract<LimitDecision, { ok: false }>): void {
    const parsed = data === null ? undefined : parseClientFrame(data);
    const sendId = parsed?.ok && parsed.frame.type === 'send' && !this.active.has(parsed.frame.id) ? parsed.frame.id : undefined;
    const base = decision.failed
      ? { code: ErrorCode.limiterUnavailable, message: 'Rate limiter unavailable; try again shortly.' }
      : { code: ErrorCode.rateLimited, message: 'Too many frames; slow down.' };
    this.sendError({ ...(sendId === undefined ? {} : { id: sendId }), ...base, retryAfterMs: decision.retryAfterMs });
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
        this.sendError({ code: ErrorCode.unauthorized, message: 'That token belongs to another user.' });
        return;
      }
      this.expiresAt = Math.max(this.expiresAt, principal.expiresAt);
      this.armExpiry();
      this.deps.log.info({ event: 'socket_token_refreshed' }, 'token refreshed in-band');
      this.send({ type: 'refreshed', expiresAt: this.expiresAt });
    } catch {
      this.sendError({ code: ErrorCode.unauthorized, message: 'Invalid or expired token; the connection keeps its current expiry.' });
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

  private abortAll(reason: AbortReason): void {
    for (const reply of [...this.active.values()]) reply.controller.abort(reason);
  }

  private send(frame: ServerFrame): void {
    this.outbox.send(frame);
  }

  private sendError(error: Omit<ErrorFrame, 'type'>): void {
    this.deps.metrics.error(error.code);
    this.send({ type: 'error', ...error });
  }
}

function titleOf(text: string): string {
  const line = text.trim().split('\n')[0] ?? '';
  return line.length > 80 ? `${line.slice(0, 79)}…` : line;
}
