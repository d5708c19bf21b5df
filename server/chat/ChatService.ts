import type { Logger } from 'pino';
import { ErrorCode } from '../../shared/errorCodes.js';
import { StopReason, type SendFrame, type ServerFrame } from '../../shared/protocol.js';
import type { Config } from '../config.js';
import { EngineStopReason, type Engine } from '../engine/Engine.js';
import { ParleyError, ShuttingDownError, toParleyError } from '../ParleyError.js';
import { AbortReason } from './AbortReason.js';
import { ConversationStore, type Conversation } from './ConversationStore.js';
import { Scheduler, type Ticket } from './Scheduler.js';
import type { LimitDecision, Limiters } from '../limits/Limiters.js';

/** What the service needs from a connection: its owner and a way to emit frames in order. */
export interface RequestSink {
  readonly userId: string;
  readonly log: Logger;
  send(frame: ServerFrame): void;
  delta(id: string, text: string): void;
}

/** A request that has been admitted and has not yet had its terminal frame. */
export interface ActiveRequest {
  readonly id: string;
  readonly controller: AbortController;
  ticket: Ticket | undefined;
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
>;

/**
 * Admits, queues and runs chat requests. Invariant: every request that passes `start`'s
 * first check (a well-formed `send` with a fresh id) ends in exactly one terminal frame
 * (done, cancelled or error with its id), whatever stops it.
 */
export class ChatService {
  readonly scheduler: Scheduler;
  readonly conversations: ConversationStore;
  private closing = false;
  private readonly live = new Set<ActiveRequest>();

  constructor(
    private readonly config: ChatConfig,
    private readonly engine: Engine,
    private readonly limiters: Limiters,
  ) {
    this.scheduler = new Scheduler({ slots: engine.slots, maxQueue: config.maxQueue, maxQueuedPerUser: config.maxQueuedPerUser });
    this.conversations = new ConversationStore({ maxPerUser: config.maxConversationsPerUser, maxTurns: config.maxTurnsPerConversation });
  }

  /**
   * Starts a request. Resolves with the ActiveRequest when admitted; otherwise the terminal
   * error frame has already been sent. `onSettled` runs once after the terminal frame.
   */
  async start(sink: RequestSink, frame: SendFrame, onSettled: () => void): Promise<ActiveRequest | undefined> {
    const fail = (error: ParleyError) => {
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
    const request: ActiveRequest = { id: frame.id, controller: new AbortController(), ticket: undefined };
    this.live.add(request);
    let settled = false;
    const settle = (terminal: ServerFrame | undefined) => {
      if (settled) return;
      settled = true;
      owned.busy = false;
      this.live.delete(request);
      void this.limiters.refundTokens(sink.userId, reserved - used);
      if (terminal) sink.send(terminal);
      onSettled();
    };
    const signal = request.controller.signal;
    const terminalForAbort = (): ServerFrame | undefined => {
      const reason = signal.reason as AbortReason;
      switch (reason) {
        case AbortReason.disconnect:
          return undefined;
        case AbortReason.shutdown:
          return { type: 'error', id: frame.id, ...new ShuttingDownError().toWire() };
        case AbortReason.tokenExpired:
          return { type: 'error', id: frame.id, code: ErrorCode.tokenExpired, message: 'Your session expired; reconnect to continue.' };
        case AbortReason.revoked:
          return { type: 'error', id: frame.id, code: ErrorCode.revoked, message: 'You were signed out.' };
        default:
          return { type: 'cancelled', id: frame.id };
      }
    };

    sink.send({ type: 'accepted', id: frame.id, conversationId: owned.id });
    const started = Date.now();
    try {
      request.ticket = this.scheduler.submit({
        userId: sink.userId,
        preferredSlot: owned.lastSlot,
        onQueuePosition: (position) => sink.send({ type: 'queued', id: frame.id, position }),
        run: async (slot) => {
          if (signal.aborted) {
            settle(terminalForAbort());
            return;
          }
          owned.lastSlot = slot;
          const timer = setTimeout(() => request.controller.abort(AbortReason.timeLimit), this.config.generationTimeoutMs);
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
                sink.delta(frame.id, text);
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
            if (result.stopReason === EngineStopReason.aborted && signal.reason !== AbortReason.timeLimit) {
              settle(terminalForAbort());
              return;
            }
            const decodeMs = firstTokenAt === undefined ? 0 : finishedAt - firstTokenAt;
            settle({
              type: 'done',
              id: frame.id,
              stopReason: stopReasonOf(result.stopReason, signal, plan.limitedByContext),
              usage: { promptTokens: result.promptTokens, completionTokens: result.completionTokens },
              timing: {
                firstTokenMs: firstTokenAt === undefined ? 0 : firstTokenAt - runStart,
                tokensPerSecond: decodeMs > 0 ? round1(((result.completionTokens - 1) * 1000) / decodeMs) : 0,
              },
            });
          } catch (error) {
            const parleyError = toParleyError(error);
            sink.log.error({ err: error, req: frame.id, code: parleyError.code }, 'generation failed');
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
        if (request.ticket?.withdraw()) settle(terminalForAbort());
      },
      { once: true },
    );
    return settled ? undefined : request;
  }

  /** Refuses new work and aborts everything in flight with the shutdown reason. */
  shutdown(): Promise<void> {
    this.closing = true;
    for (const request of this.live) request.controller.abort(AbortReason.shutdown);
    return this.scheduler.whenIdle();
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
