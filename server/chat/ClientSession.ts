import type { Logger } from 'pino';
import { CloseCode, ErrorCode } from '../../shared/errorCodes.js';
import { parseClientFrame } from '../../shared/parseClientFrame.js';
import type { ReadyFrame, ServerFrame } from '../../shared/protocol.js';
import type { TokenService } from '../auth/createTokenService.js';
import type { LimitDecision, Limiters } from '../limits/Limiters.js';
import type { Connection } from '../transport/Connection.js';
import { AbortReason } from './AbortReason.js';
import type { ActiveRequest, ChatService } from './ChatService.js';
import { Outbox } from './Outbox.js';

export interface ClientSessionDeps {
  readonly chat: ChatService;
  readonly limiters: Limiters;
  readonly tokens: TokenService;
  readonly log: Logger;
}

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
  private readonly active = new Map<string, ActiveRequest>();
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
    });
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
        this.send({ type: 'error', code: ErrorCode.internal, message: 'Internal error.' });
      });
  }

  drain(): void {
    this.outbox.drain();
  }

  /** The socket is gone: stop every request of this connection and free their slots. */
  close(): void {
    this.closed = true;
    clearTimeout(this.expiryTimer);
    this.abortAll(AbortReason.disconnect);
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
      this.send({ type: 'error', code: ErrorCode.binaryFrame, message: 'Binary frames are not supported; send JSON text.' });
      return;
    }
    const parsed = parseClientFrame(data);
    if (!parsed.ok) {
      this.send({ type: 'error', code: parsed.code, message: parsed.message });
      return;
    }
    const frame = parsed.frame;
    switch (frame.type) {
      case 'send': {
        if (this.active.has(frame.id)) {
          this.send({ type: 'error', code: ErrorCode.duplicateId, message: `Request id ${frame.id} is still running; use a new id.` });
          return;
        }
        const sink = {
          userId: this.userId,
          log: this.deps.log,
          send: (out: ServerFrame) => this.send(out),
          delta: (id: string, text: string) => this.outbox.delta(id, text),
        };
        const request = await this.deps.chat.start(sink, frame, () => this.active.delete(frame.id));
        if (!request) return;
        // The socket may have closed while admission awaited the limiters.
        if (this.closed) request.controller.abort(AbortReason.disconnect);
        else this.active.set(frame.id, request);
        return;
      }
      case 'cancel': {
        const request = this.active.get(frame.id);
        if (!request) {
          this.send({ type: 'error', code: ErrorCode.unknownRequest, message: `No running request with id ${frame.id}.` });
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

  /** Answers a rate-limited frame: a `send` gets its terminal error, anything else an error without id. */
  private refuse(data: string | null, decision: Extract<LimitDecision, { ok: false }>): void {
    const parsed = data === null ? undefined : parseClientFrame(data);
    const sendId = parsed?.ok && parsed.frame.type === 'send' && !this.active.has(parsed.frame.id) ? parsed.frame.id : undefined;
    const base = decision.failed
      ? { code: ErrorCode.limiterUnavailable, message: 'Rate limiter unavailable; try again shortly.' }
      : { code: ErrorCode.rateLimited, message: 'Too many frames; slow down.' };
    this.send({ type: 'error', ...(sendId === undefined ? {} : { id: sendId }), ...base, retryAfterMs: decision.retryAfterMs });
  }

  /** A refused frame counts as a strike; too many strikes in the window is a flood. */
  private async strike(): Promise<void> {
    const strike = await this.deps.limiters.strike(this.connection.id);
    if (strike.ok || this.closed) return;
    this.deps.log.info({ event: 'flood_closed', ip: this.connection.remoteAddress }, 'closing flooding connection');
    this.terminate(AbortReason.disconnect, CloseCode.flood, 'flood');
  }

  private async refresh(token: string): Promise<void> {
    try {
      const principal = await this.deps.tokens.verifyAccessToken(token);
      if (principal.userId !== this.userId) {
        this.send({ type: 'error', code: ErrorCode.unauthorized, message: 'That token belongs to another user.' });
        return;
      }
      this.expiresAt = Math.max(this.expiresAt, principal.expiresAt);
      this.armExpiry();
      this.deps.log.info({ event: 'socket_token_refreshed' }, 'token refreshed in-band');
      this.send({ type: 'refreshed', expiresAt: this.expiresAt });
    } catch {
      this.send({ type: 'error', code: ErrorCode.unauthorized, message: 'Invalid or expired token; the connection keeps its current expiry.' });
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
    for (const request of [...this.active.values()]) request.controller.abort(reason);
    if (reason === AbortReason.disconnect) this.active.clear();
  }

  private send(frame: ServerFrame): void {
    this.outbox.send(frame);
  }
}
