import type { Logger } from 'pino';
import { ErrorCode } from '../../shared/errorCodes.js';
import { StopReason, type SendFrame, type TerminalFrame } from '../../shared/protocol.js';
import type { Config } from '../config.js';
import { EngineStopReason, type Engine } from '../engine/Engine.js';
import { EngineError, ParleyError, ShuttingDownError, toParleyError } from '../ParleyError.js';
import { AbortReason } from './AbortReason.js';
import { ConversationStore, type Conversation } from './ConversationStore.js';
import { DetachedReplies } from './DetachedReplies.js';
import { Reply, type ReplyTarget } from './Reply.js';
import { Scheduler } from './Scheduler.js';
import type { LimitDecision, Limiters } from '../limits/Limiters.js';
import type { Metrics } from '../metrics/Metrics.js';

/** A connection as the service sees it: its owner, its log, and where its replies' frames go. */
export interface ReplyOwner extends ReplyTarget {
  readonly userId: string;
  readonly log: Logger;
}

type ChatConfig = Pick<
  Config,
  | 'logContent'
  | 'maxTextChars'
  | 'maxTokens'
  | 'slots'
  | 'maxQueue'
  | 'maxQueuedPerUser'
  | 'generationTimeoutMs'
  | 'maxConversationsPerUser'
  | 'maxTurnsPerConversation'
  | 'generationsPerMinute'
  | 'tokensPerHour'
  | 'resumeGraceMs'
  | 'maxReplyBytes'
>;

/**
 * Admits, queues and runs chat requests. Invariant: every request that passes `start`'s
 * first check (a well-formed `send` with a fresh id) ends in exactly one terminal frame
 * (done, cancelled or error with its id), whatever stops it. An admitted request is a Reply,
 * which outlives its connection for the resume grace period.
 */
export class ChatService {
  readonly scheduler: Scheduler;
  readonly conversations: ConversationStore;
  readonly detached: DetachedReplies;
  private closing = false;
  private readonly live = new Set<Reply>();
  private readonly liveSettled = new Set<() => void>();

  constructor(
    private readonly config: ChatConfig,
    private readonly engine: Engine,
    private readonly limiters: Limiters,
    private readonly metrics: Metrics,
  ) {
    this.detached = new DetachedReplies(config.resumeGraceMs);
    this.scheduler = new Scheduler({ slots: engine.slots, maxQueue: config.maxQueue, maxQueuedPerUser: config.maxQueuedPerUser });
    this.conversations = new ConversationStore({ maxPerUser: config.maxConversationsPerUser, maxTurns: config.maxTurnsPerConversation });
  }

  /** Whether new requests are accepted (false once shutdown began). */
  get accepting(): boolean {
    return !this.closing;
  }

  get resumeGraceMs(): number {
    return this.config.resumeGraceMs;
  }

  /** Requests admitted and not yet ended, attached or not. */
  get liveCount(): number {
    return this.live.size;
  }

  /**
   * Starts a request. Resolves with its Reply, attached to `owner`, when admitted; otherwise
   * the terminal error frame has already been sent to `owner`.
   */
  async start(owner: ReplyOwner, frame: SendFrame): Promise<Reply | undefined> {
    const sink = owner;
    const fail = (error: ParleyError) => {
      this.metrics.error(error.code);
      sink.send({ type: 'error', id: frame.id, ...error.toWire(), ...(error.retryAfterMs === undefined ? {} : { retryAfterMs: error.retryAfterMs }) });
    };
    if (this.closing) {
      fail(new ShuttingDownError());
      return undefined;
    }
    if (frame.text.length > this.config.maxTextChars) {
      fail(new ParleyError(ErrorCode.messageTooLong, `Message is ${frame.text.length} characters; the limit is ${this.config.maxTextChars}.`));
      return undefined;
    }
    let conversation: Conversation | undefined;
    if (frame.conversationId !== undefined) {
      conversation = this.conversations.get(sink.userId, frame.conversationId);
      if (!conversation) {
        fail(new ParleyError(ErrorCode.conversationNotFound, 'No such conversation.'));
        return undefined;
      }
      if (conversation.busy) {
        fail(new ParleyError(ErrorCode.conversationBusy, 'This conversation already has a reply in progress.'));
        return undefined;
      }
    }
    // A regenerated reply replaces the last exchange, so that exchange stays out of the prompt.
    const turns = conversation?.turns ?? [];
    const replacing = frame.regenerate === true && turns.length >= 2 && turns.at(-1)?.role === 'assistant';
    const history = replacing ? turns.slice(0, -2) : [...turns];
    let plan;
    try {
      plan = this.engine.planPrompt(history, frame.text, this.config.maxTokens);
    } catch (error) {
      fail(toParleyError(error));
      return undefined;
    }
    const generationLimit = await this.limiters.generation(sink.userId);
    if (!generationLimit.ok) {
      fail(limitError(generationLimit, `You can start ${this.config.generationsPerMinute} replies per minute.`));
      return undefined;
    }
    // Reserve the worst case now; what the reply does not use is refunded when it ends.
    const reserved = plan.promptTokens + plan.maxTokens;
    const tokenLimit = await this.limiters.reserveTokens(sink.userId, reserved);
    if (!tokenLimit.ok) {
      fail(limitError(tokenLimit, `This reply needs up to ${reserved} tokens; your hourly budget of ${this.config.tokensPerHour} tokens is used up.`));
      return undefined;
    }
    let used = 0;
    // The awaits above let other sockets of this user in: check the conversation again.
    if (this.closing || conversation?.busy) {
      void this.limiters.refundTokens(sink.userId, reserved);
      fail(this.closing ? new ShuttingDownError() : new ParleyError(ErrorCode.conversationBusy, 'This conversation already has a reply in progress.'));
      return undefined;
    }
    conversation ??= this.conversations.create(sink.userId);
    const owned = conversation;
    owned.busy = true;
    owned.activeReplyId = frame.id;
    owned.activeMessage = frame.text;
    const reply = new Reply(frame.id, sink.userId, owned.id, this.config.maxReplyBytes);
    this.live.add(reply);
    const signal = reply.controller.signal;
    let firstTokenMs: number | undefined;
    let settled = false;
    const settle = (terminal: TerminalFrame, completionTokens = 0) => {
      if (settled) return;
      settled = true;
      owned.busy = false;
      owned.activeReplyId = undefined;
      owned.activeMessage = undefined;
      this.live.delete(reply);
      void this.limiters.refundTokens(sink.userId, reserved - used);
      if (terminal.type === 'done') {
        this.metrics.generationFinished('done', { completionTokens, firstTokenMs, tokensPerSecond: terminal.timing.tokensPerSecond });
      } else {
        this.metrics.generationFinished(terminal.type, { completionTokens, firstTokenMs });
        if (terminal.type === 'error') this.metrics.error(terminal.code);
        if (signal.aborted) this.metrics.cancelled(String(signal.reason));
      }
      reply.finish(terminal);
      for (const notify of this.liveSettled) notify();
    };
    const terminalForAbort = (): TerminalFrame => {
      const reason = signal.reason as AbortReason;
      switch (reason) {
        case AbortReason.shutdown:
          return { type: 'error', id: frame.id, ...new ShuttingDownError().toWire() };
        case AbortReason.tokenExpired:
          return { type: 'error', id: frame.id, code: ErrorCode.tokenExpired, message: 'Your session expired; reconnect to continue.' };
        case AbortReason.revoked:
          return { type: 'error', id: frame.id, code: ErrorCode.revoked, message: 'You were signed out.' };
        case AbortReason.flood:
          return { type: 'error', id: frame.id, code: ErrorCode.rateLimited, message: 'The connection was closed for sending too many frames.' };
        default:
          return { type: 'cancelled', id: frame.id };
      }
    };

    reply.attach(owner);
    sink.send({ type: 'accepted', id: frame.id, conversationId: owned.id });
    const started = Date.now();
    try {
      reply.ticket = this.scheduler.submit({
        userId: sink.userId,
        preferredSlot: owned.lastSlot,
        onQueuePosition: (position) => {
          reply.queuePosition = position;
          reply.emit({ type: 'queued', id: frame.id, position });
        },
        run: async (slot) => {
          reply.queuePosition = undefined;
          if (signal.aborted) {
            settle(terminalForAbort());
            return;
          }
          owned.lastSlot = slot;
          const timer = setTimeout(() => reply.controller.abort(AbortReason.timeLimit), this.config.generationTimeoutMs);
          const runStart = Date.now();
          let firstTokenAt: number | undefined;
          try {
            const result = await this.engine.generate({
              slot,
              conversationId: owned.id,
              history: history.slice(plan.firstTurn),
              text: frame.text,
              maxTokens: plan.maxTokens,
              signal,
              onText: (text) => {
                firstTokenAt ??= Date.now();
                reply.delta(text);
                // A dropped reply that outgrew its resume buffer cannot be resumed losslessly: stop it.
                if (!reply.resumable && reply.attachedTarget === undefined) reply.controller.abort(AbortReason.disconnect);
              },
            });
            used = result.promptTokens + result.completionTokens;
            // A stopped reply keeps its partial text in the history, as the user saw it.
            if (replacing) this.conversations.replaceLast(owned, frame.text, result.text);
            else this.conversations.append(owned, frame.text, result.text);
            const finishedAt = Date.now();
            sink.log.info(
              {
                ...(this.config.logContent ? { content: { prompt: frame.text, reply: result.text } } : {}),
                req: frame.id,
                conv: owned.id,
                slot,
                stop: result.stopReason,
                reason: signal.aborted ? signal.reason : undefined,
                promptTokens: result.promptTokens,
                completionTokens: result.completionTokens,
                queuedMs: runStart - started,
                ms: finishedAt - runStart,
              },
              'generation finished',
            );
            if (firstTokenAt !== undefined) firstTokenMs = firstTokenAt - runStart;
            if (result.stopReason === EngineStopReason.aborted && signal.reason !== AbortReason.timeLimit) {
              settle(terminalForAbort(), result.completionTokens);
              return;
            }
            const decodeMs = firstTokenAt === undefined ? 0 : finishedAt - firstTokenAt;
            settle(
              {
              type: 'done',
              id: frame.id,
              stopReason: stopReasonOf(result.stopReason, signal, plan.limitedByContext),
              usage: { promptTokens: result.promptTokens, completionTokens: result.completionTokens },
              timing: {
                firstTokenMs: firstTokenAt === undefined ? 0 : firstTokenAt - runStart,
                  tokensPerSecond: decodeMs > 0 ? round1(((result.completionTokens - 1) * 1000) / decodeMs) : 0,
                },
              },
              result.completionTokens,
            );
          } catch (error) {
            // Whatever the engine throws ends this request only; the slot is released below.
            const parleyError = error instanceof ParleyError ? error : new EngineError(error);
            const inner = error instanceof Error ? error.cause : undefined;
            const cause = inner === undefined ? undefined : inner instanceof Error ? `${inner.name}: ${inner.message}` : String(inner);
            sink.log.error({ err: error, cause, req: frame.id, code: parleyError.code }, 'generation failed');
            settle({ type: 'error', id: frame.id, ...parleyError.toWire() });
          } finally {
            clearTimeout(timer);
          }
        },
      });
    } catch (error) {
      settle({ type: 'error', id: frame.id, ...toParleyError(error).toWire() });
      return undefined;
    }
    // A queued request that is stopped leaves the queue at once and ends here.
    signal.addEventListener(
      'abort',
      () => {
        if (reply.ticket?.withdraw()) settle(terminalForAbort());
      },
      { once: true },
    );
    return settled ? undefined : reply;
  }

  /**
   * Stops accepting work, lets every admitted request (running, queued or detached) finish for
   * up to `timeoutMs`, then aborts the rest with the shutdown reason. Resolves when every one of
   * them has its terminal frame and the engine is idle.
   */
  async shutdown(timeoutMs: number): Promise<void> {
    this.closing = true;
    if (this.live.size > 0 && timeoutMs > 0) {
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.liveSettled.delete(check);
          resolve();
        };
        const check = () => {
          if (this.live.size === 0) done();
        };
        const timer = setTimeout(done, timeoutMs);
        this.liveSettled.add(check);
      });
    }
    for (const reply of [...this.live]) reply.controller.abort(AbortReason.shutdown);
    await this.scheduler.whenIdle();
    this.detached.clear();
  }

  /** Cancels every admitted request now (a second signal during shutdown). */
  abortAll(): void {
    this.closing = true;
    for (const reply of [...this.live]) reply.controller.abort(AbortReason.shutdown);
  }
}

function limitError(decision: Extract<LimitDecision, { ok: false }>, message: string): ParleyError {
  if (decision.failed) {
    return new ParleyError(ErrorCode.limiterUnavailable, 'Rate limiter unavailable; try again shortly.', { httpStatus: 503, retryAfterMs: decision.retryAfterMs });
  }
  return new ParleyError(ErrorCode.rateLimited, message, { httpStatus: 429, retryAfterMs: decision.retryAfterMs });
}

function stopReasonOf(reason: EngineStopReason, signal: AbortSignal, limitedByContext: boolean): StopReason {
  if (signal.aborted && signal.reason === AbortReason.timeLimit) return StopReason.timeLimit;
  if (reason === EngineStopReason.maxTokens) return limitedByContext ? StopReason.contextFull : StopReason.maxTokens;
  return StopReason.endOfText;
}

function round1(value: number): number {
  return Math.round(value * 10) / 10;
}
