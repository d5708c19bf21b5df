import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { ErrorCode } from '../../shared/errorCodes.js';
import { StopReason } from '../../shared/protocol.js';
import type { Config } from '../config.js';
import { EngineStopReason, type GenerationOptions, type Turn } from '../engine/Engine.js';
import type { DocumentContext, Documents } from '../documents/Documents.js';
import { planWithDocuments, type DocumentPlan } from '../documents/planWithDocuments.js';
import type { ContentFilter } from '../filter/ContentFilter.js';
import { MessageOutcome } from '../history/ConversationRepository.js';
import { LimitRefusedError } from '../limits/LimitRefusedError.js';
import type { Limiters } from '../limits/Limiters.js';
import type { Metrics } from '../metrics/Metrics.js';
import type { ModelLease, ModelPool } from '../models/ModelPool.js';
import { ContextOverflowError, EngineError, ParleyError, ShuttingDownError, toParleyError } from '../ParleyError.js';
import { AbortReason, isAbortReason } from './AbortReason.js';
import type { ActiveConversation, Conversations } from './Conversations.js';
import { Reply, type ReplyListener } from './Reply.js';
import type { ReplyOutcome, ReplyUsage } from './ReplyOutcome.js';
import { ReplyRegistry } from './ReplyRegistry.js';
import { Scheduler } from './Scheduler.js';

/** One chat request, from whatever surface: no wire format in it. */
export interface ChatRequest {
  /** The request id, chosen by the caller; unique per user among replies still reachable. */
  readonly id: string;
  readonly userId: string;
  /** The budgets the request is charged to (budgetKeysOf). */
  readonly budgetKeys: readonly string[];
  readonly text: string;
  /**
   * The model to answer with (its id). Absent: the conversation's model while it is served, else
   * the server's default. A stored conversation switches to the model named here.
   */
  readonly model?: string;
  /** Continue this stored conversation; a new one is created when absent (and no `history` is given). */
  readonly conversationId?: string;
  /**
   * The earlier turns, brought by the caller (a stateless API): then no conversation is opened,
   * created or stored, and the reply's conversation id is a throwaway one.
   */
  readonly history?: readonly Turn[];
  /**
   * When the history does not fit beside the reply budget: `trim` leaves the oldest turns out
   * (the default, as a chat does), `refuse` refuses the request (a caller that manages its own
   * context must not get an answer to less than it sent).
   */
  readonly fitHistory?: 'trim' | 'refuse';
  /** Replace the conversation's last exchange instead of adding one. */
  readonly regenerate?: boolean;
  /** Ids of the user's uploads to attach to the conversation with this message (stored conversations only). */
  readonly documents?: readonly string[];
  /** At most this many reply tokens (never more than the server's cap). */
  readonly maxTokens?: number;
  /** Sampling and shape of the reply (temperature 0 to 2, top_p, seed, stop, a system prompt, a response format). */
  readonly options?: GenerationOptions;
  /** Aborting it cancels the request, in whatever phase it is. */
  readonly signal?: AbortSignal;
  readonly log: Logger;
}

/** What `submit` resolves with: the admitted reply, or why the request was refused (its only answer). */
export type Submission = { readonly ok: true; readonly reply: Reply } | { readonly ok: false; readonly error: ParleyError };

/** Told once, before anything else, when a request is admitted. */
export interface AdmissionListener extends ReplyListener {
  accepted(reply: Reply): void;
  /**
   * Before admission: the request waits for its model to load, at this 1-based place among the
   * requests waiting for that model (reported when it changes).
   */
  waitingForModel?(requestId: string, position: number): void;
}

export type ChatCoreConfig = Pick<
  Config,
  | 'logContent'
  | 'maxTextChars'
  | 'maxTokens'
  | 'maxQueue'
  | 'maxQueuedPerUser'
  | 'generationTimeoutMs'
  | 'generationsPerMinute'
  | 'tokensPerHour'
  | 'resumeGraceMs'
  | 'maxReplyBytes'
>;

export interface ChatCoreDeps {
  /** The models served; each loaded model's slots become a scheduler pool. */
  readonly models: ModelPool;
  readonly limiters: Limiters;
  readonly metrics: Metrics;
  readonly conversations: Conversations;
  /** Documents in the chat (uploads, attachment at send, retrieval into the prompt); none when absent. */
  readonly documents?: Documents;
  /** How often a streaming reply's text is stored (so a crash keeps it). */
  readonly checkpointMs?: number;
  /** Screens messages before any work and replies as they stream (`--filter-rules`); none when absent. */
  readonly filter?: ContentFilter;
}

const DEFAULT_CHECKPOINT_MS = 3000;

/**
 * The chat core: every surface (parley.v1 sockets, the HTTP API) submits here and maps the
 * events it gets back. It owns, in this order: cheap checks and rate limits, prompt planning,
 * the token reservation, scheduling, the engine run, and settling (refund, metrics, storage).
 *
 * Invariant: a request `submit` admits (ok: true) ends in exactly one outcome (Reply.finish),
 * whatever stops it; a refused one gets its error as its only answer, and costs no more than
 * the checks that refused it.
 */
export class ChatCore {
  readonly scheduler: Scheduler;
  readonly replies: ReplyRegistry;
  readonly conversations: Conversations;
  private closing = false;
  private readonly live = new Set<Reply>();
  private readonly liveSettled = new Set<() => void>();
  readonly models: ModelPool;
  private readonly limiters: Limiters;
  private readonly metrics: Metrics;
  private readonly checkpointMs: number;
  readonly documents: Documents | undefined;
  private readonly filter: ContentFilter | undefined;

  constructor(
    private readonly config: ChatCoreConfig,
    deps: ChatCoreDeps,
  ) {
    this.models = deps.models;
    this.limiters = deps.limiters;
    this.metrics = deps.metrics;
    this.conversations = deps.conversations;
    this.checkpointMs = deps.checkpointMs ?? DEFAULT_CHECKPOINT_MS;
    this.documents = deps.documents;
    this.filter = deps.filter;
    this.replies = new ReplyRegistry(config.resumeGraceMs);
    this.scheduler = new Scheduler({ slots: 0, maxQueue: config.maxQueue, maxQueuedPerUser: config.maxQueuedPerUser });
    const scheduler = this.scheduler;
    this.models.subscribe({
      loaded: (id, engine) => scheduler.addPool(id, engine.slots),
      unloaded: (id) => scheduler.removePool(id),
    });
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

  /** Replies kept for a resume with no listener, as a view for diagnostics and tests. */
  get detached(): { readonly size: number; peek(userId: string, id: string): Reply | undefined } {
    const replies = this.replies;
    return { get size() { return replies.detachedCount; }, peek: (userId, id) => replies.peek(userId, id) };
  }

  async submit(given: ChatRequest, listener: AdmissionListener): Promise<Submission> {
    let request = given;
    const refused = (error: ParleyError): Submission => {
      this.metrics.error(error.code);
      return { ok: false, error };
    };
    // Cheap checks first: a refused request costs almost nothing.
    if (this.closing) return refused(new ShuttingDownError());
    if (request.text.length > this.config.maxTextChars) {
      return refused(new ParleyError(ErrorCode.messageTooLong, `Message is ${request.text.length} characters; the limit is ${this.config.maxTextChars}.`, { httpStatus: 413 }));
    }
    if (request.signal?.aborted) return refused(cancelledBeforeStart());
    if (request.history !== undefined && request.conversationId !== undefined) {
      return refused(new ParleyError(ErrorCode.badRequest, 'Give a conversation or a history, not both.'));
    }
    const temperature = request.options?.temperature;
    if (temperature !== undefined && !(temperature >= 0 && temperature <= 2)) {
      return refused(new ParleyError(ErrorCode.badRequest, 'temperature is between 0 and 2.'));
    }
    if (request.documents !== undefined && request.documents.length > 0) {
      if (!this.documents || request.history !== undefined) return refused(new ParleyError(ErrorCode.badRequest, 'Documents go with a stored conversation on this server only.'));
      const tooMany = this.documents.countError(request.documents);
      if (tooMany) return refused(tooMany);
    }
    // The content filter's input rules: after the shape checks, before anything costs (a refusal is its only answer).
    if (this.filter) {
      const screened = this.filter.screen(request, request.log, request.id);
      if (!screened.ok) return refused(screened.error);
      request = screened.request;
    }
    let conversation: ActiveConversation | undefined;
    if (request.conversationId !== undefined) {
      conversation = await this.conversations.open(request.userId, request.conversationId);
      if (!conversation) return refused(new ParleyError(ErrorCode.conversationNotFound, 'No such conversation.', { httpStatus: 404 }));
      if (conversation.busy) return refused(busyError());
    }
    let modelId: string;
    try {
      // A conversation keeps its model while it is served; one no longer served falls back to the default.
      const stored = conversation?.model;
      modelId = this.models.resolve(request.model ?? (stored !== undefined && this.models.served(stored) ? stored : this.models.defaultModel));
    } catch (error) {
      return refused(toParleyError(error));
    }
    const generationLimit = await this.limiters.generation(request.budgetKeys);
    if (!generationLimit.ok) return refused(new LimitRefusedError(generationLimit, `You can start ${this.config.generationsPerMinute} replies per minute.`));

    let lease: ModelLease;
    try {
      lease = await this.models.acquire(modelId, { signal: request.signal, onWaiting: (position) => listener.waitingForModel?.(request.id, position) });
    } catch (error) {
      return refused(request.signal?.aborted ? cancelledBeforeStart() : toParleyError(error));
    }
    const submission = await this.admit(request, listener, conversation, lease);
    if (!submission.ok) {
      lease.release();
      return refused(submission.error);
    }
    return submission;
  }

  /** The rest of `submit` once the model is held: plan, reserve, store, run. Refusals are returned, not counted. */
  private async admit(request: ChatRequest, listener: AdmissionListener, conversation: ActiveConversation | undefined, lease: ModelLease): Promise<Submission> {
    const refused = (error: ParleyError): Submission => ({ ok: false, error });
    const engine = lease.engine;
    // Planning: the newest turns that fit, from cached per-turn counts.
    const turns = conversation?.turns ?? request.history ?? [];
    const replacing = request.regenerate === true && turns.length >= 2 && turns.at(-1)?.role === 'assistant';
    const history = replacing ? turns.slice(0, -2) : [...turns];
    const cap = Math.min(this.config.maxTokens, request.maxTokens ?? this.config.maxTokens);
    let plan;
    let planned: DocumentPlan;
    let documents: DocumentContext | undefined;
    try {
      // The conversation's documents and this send's (checked here): whole or retrieved into the user turn.
      documents = request.history === undefined ? await this.documents?.prepare(request.userId, conversation?.id, request.documents ?? [], request.text) : undefined;
      // Counting is a round trip for an upstream engine: after the cheap checks, before planning.
      await engine.prepareTokenCounts?.([request.text, ...history.filter((turn) => turn.tokens === undefined).map((turn) => turn.text), ...(request.options?.system === undefined ? [] : [request.options.system])], request.signal);
      planned = planWithDocuments(engine, history, request.text, cap, request.options?.system, documents);
      plan = planned.plan;
      if (request.options?.format !== undefined) await engine.prepareFormat(request.options.format);
    } catch (error) {
      return refused(toParleyError(error));
    }
    // Token counts belong to a model: remember them only for the conversation's own.
    if (conversation && conversation.model === lease.id) this.conversations.remember(conversation, plan.turnTokens);
    if (request.fitHistory === 'refuse' && plan.firstTurn > 0) {
      return refused(new ContextOverflowError(`These messages need more than the model's context of ${engine.info.contextSize} tokens with room for the reply; shorten them or ask for fewer tokens.`));
    }

    // Reserve the worst case now; what the reply does not use is refunded when it ends.
    const reserved = plan.promptTokens + plan.maxTokens;
    const tokenLimit = await this.limiters.reserveTokens(request.budgetKeys, reserved);
    if (!tokenLimit.ok) {
      return refused(new LimitRefusedError(tokenLimit, `This reply needs up to ${reserved} tokens; your hourly budget of ${this.config.tokensPerHour} tokens is used up.`));
    }
    const refund = (used: number) => void this.limiters.refundTokens(request.budgetKeys, reserved - used);
    // The awaits above let other requests of this user in: check again.
    if (this.closing || conversation?.busy || request.signal?.aborted) {
      refund(0);
      return refused(this.closing ? new ShuttingDownError() : conversation?.busy ? busyError() : cancelledBeforeStart());
    }
    if (request.history !== undefined) {
      return { ok: true, reply: this.run(request, listener, lease, undefined, undefined, plan, history.slice(plan.firstTurn), refund, planned) };
    }
    let exchange: { userMessageId: string; replyMessageId: string };
    let owned: ActiveConversation;
    try {
      owned = conversation ?? (await this.conversations.create(request.userId, request.text, lease.id));
      if (owned.busy) {
        refund(0);
        return refused(busyError());
      }
      owned.busy = true;
      owned.activeReplyId = request.id;
      owned.activeMessage = request.text;
      await this.conversations.setModel(owned, lease.id);
      if (documents && this.documents) {
        try {
          await this.documents.attach(request.userId, owned.id, documents.attaching);
        } catch (error) {
          // Another send took a document meanwhile: a conversation made for this send goes again.
          release(owned);
          refund(0);
          if (conversation === undefined) {
            await this.conversations.repository.deleteConversation(request.userId, owned.id).catch(() => false);
            this.conversations.forget(owned.id);
          }
          return refused(toParleyError(error));
        }
      }
      exchange = await this.conversations.beginExchange(owned, request.text, request.id, replacing);
      if (documents && this.documents) await this.documents.noteAttachments(request.userId, owned.id, exchange.userMessageId, documents.named);
    } catch (error) {
      if (conversation?.activeReplyId === request.id) release(conversation);
      refund(0);
      request.log.error({ err: error, req: request.id }, 'storing the message failed');
      return refused(toParleyError(error));
    }
    // The prompt's turns as planned: beginExchange has since dropped a replaced exchange from memory.
    return { ok: true, reply: this.run(request, listener, lease, owned, exchange, plan, history.slice(plan.firstTurn), refund, planned) };
  }

  /**
   * Stops accepting work, lets every admitted request (running, queued or detached) finish for
   * up to `timeoutMs`, then aborts the rest with the shutdown reason. Resolves when every one of
   * them has its outcome and the engine is idle.
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
    await Promise.all([...this.settling]);
    this.replies.clear();
  }

  /**
   * Cancels the user's replies in progress (in these conversations, or in all of theirs) and
   * resolves once each has ended and been stored: then their conversations can be deleted.
   */
  async stopReplies(userId: string, conversationIds?: ReadonlySet<string>): Promise<void> {
    const targets = [...this.live].filter((reply) => reply.userId === userId && (conversationIds === undefined || conversationIds.has(reply.conversationId)));
    for (const reply of targets) reply.controller.abort(AbortReason.cancel);
    while (targets.some((reply) => !reply.finished)) {
      await new Promise<void>((resolve) => {
        const notify = () => {
          this.liveSettled.delete(notify);
          resolve();
        };
        this.liveSettled.add(notify);
      });
    }
    await Promise.all([...this.settling]);
  }

  /** Cancels every admitted request now (a second signal during shutdown). */
  abortAll(): void {
    this.closing = true;
    for (const reply of [...this.live]) reply.controller.abort(AbortReason.shutdown);
  }

  /** Stores still in progress (a reply's end being written). */
  private readonly settling = new Set<Promise<void>>();

  /** Runs an admitted request: registers its reply, queues it, generates, settles. */
  private run(
    request: ChatRequest,
    listener: AdmissionListener,
    lease: ModelLease,
    conversation: ActiveConversation | undefined,
    exchange: { userMessageId: string; replyMessageId: string } | undefined,
    plan: { promptTokens: number; maxTokens: number; limitedByContext: boolean },
    history: readonly Turn[],
    refund: (used: number) => void,
    /** The user turn as planned (with quoted documents) and the passages it quotes. */
    planned?: DocumentPlan,
  ): Reply {
    const sources = planned?.sources ?? [];
    // A caller-brought history has no stored conversation: a throwaway id keys its KV cache.
    const conversationId = conversation?.id ?? `x_${randomBytes(12).toString('base64url')}`;
    const reply = new Reply(request.id, request.userId, conversationId, this.config.maxReplyBytes);
    const signal = reply.controller.signal;
    this.live.add(reply);
    let produced = '';
    // The output rules see the reply as it streams; `produced` is what the user was shown, and what is stored.
    const output = this.filter?.output(request.log, request.id);
    const show = (text: string) => {
      if (text.length === 0) return;
      produced += text;
      reply.delta(text);
    };
    // At the reply's end, whatever stopped it: the held-back tail, decided as the text's end.
    const flushOutput = () => {
      if (output && !output.refused) show(output.end());
    };
    let firstTokenMs: number | undefined;
    let checkpoint: NodeJS.Timeout | undefined;
    let settled = false;
    const settle = (outcome: ReplyOutcome, replyText: string) => {
      if (settled) return;
      settled = true;
      clearInterval(checkpoint);
      lease.release();
      if (conversation) release(conversation);
      this.live.delete(reply);
      refund(outcome.usage.promptTokens + outcome.usage.completionTokens);
      if (outcome.kind === 'finished') {
        this.metrics.generationFinished('done', { completionTokens: outcome.usage.completionTokens, firstTokenMs, tokensPerSecond: outcome.timing.tokensPerSecond });
      } else {
        this.metrics.generationFinished(outcome.kind === 'cancelled' ? 'cancelled' : 'error', { completionTokens: outcome.usage.completionTokens, firstTokenMs });
        if (outcome.kind === 'failed') this.metrics.error(outcome.error.code);
        if (signal.aborted) this.metrics.cancelled(String(signal.reason));
      }
      // Stored in the background; shutdown waits for it. The outcome goes out at once.
      const stored = (conversation === undefined || exchange === undefined ? Promise.resolve() : this.conversations
        .endExchange(conversation, {
          ...exchange,
          text: request.text,
          reply: replyText,
          outcome: storedOutcome(outcome),
          userTokens: undefined,
          replyTokens: undefined,
        }))
        .then(() => (conversation === undefined || exchange === undefined ? undefined : this.documents?.noteSources(request.userId, conversation.id, exchange.replyMessageId, sources)))
        .catch((error: unknown) => request.log.error({ err: error, req: request.id }, 'storing the reply failed'));
      this.settling.add(stored);
      void stored.finally(() => this.settling.delete(stored));
      reply.finish(outcome);
      this.replies.ended(reply);
      for (const notify of this.liveSettled) notify();
    };
    const none: ReplyUsage = { promptTokens: 0, completionTokens: 0 };

    this.replies.add(reply, listener);
    listener.accepted(reply);
    // The caller's reason when it is one of Parley's (a revocation), else a cancel (a client that left).
    const onCallerAbort = () => reply.controller.abort(isAbortReason(request.signal?.reason) ? request.signal.reason : AbortReason.cancel);
    request.signal?.addEventListener('abort', onCallerAbort, { once: true });
    signal.addEventListener('abort', () => request.signal?.removeEventListener('abort', onCallerAbort), { once: true });
    const started = Date.now();
    try {
      reply.ticket = this.scheduler.submit({
        userId: request.userId,
        pool: lease.id,
        preferredSlot: conversation?.lastSlot,
        onQueuePosition: (position) => reply.queued(position),
        run: async (slot) => {
          reply.queuePosition = undefined;
          if (signal.aborted) {
            settle(outcomeOfAbort(signal, none), '');
            return;
          }
          if (conversation) conversation.lastSlot = slot;
          const timer = setTimeout(() => reply.controller.abort(AbortReason.timeLimit), this.config.generationTimeoutMs);
          if (exchange) {
            checkpoint = setInterval(() => {
              void this.conversations.checkpoint(request.userId, exchange.replyMessageId, produced).catch(() => undefined);
            }, this.checkpointMs);
            checkpoint.unref();
          }
          const runStart = Date.now();
          let firstTokenAt: number | undefined;
          try {
            const result = await lease.engine.generate({
              slot,
              conversationId,
              history,
              text: planned?.text ?? request.text,
              maxTokens: plan.maxTokens,
              ...(request.options === undefined ? {} : { options: request.options }),
              signal,
              onText: (text) => {
                firstTokenAt ??= Date.now();
                show(output ? output.push(text) : text);
                if (output?.refused && !signal.aborted) reply.controller.abort(AbortReason.contentFiltered);
                // A dropped reply that outgrew its resume buffer cannot be resumed losslessly: stop it.
                if (!reply.resumable && reply.attached === undefined) reply.controller.abort(AbortReason.disconnect);
              },
            });
            const finishedAt = Date.now();
            flushOutput();
            const replyText = output ? produced : result.text;
            request.log.info(
              {
                ...(this.config.logContent ? { content: { prompt: request.text, reply: replyText } } : {}),
                req: request.id,
                conv: conversationId,
                model: lease.id,
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
            const usage = { promptTokens: result.promptTokens, completionTokens: result.completionTokens, ...(result.cachedPromptTokens === undefined ? {} : { cachedPromptTokens: result.cachedPromptTokens }) };
            // Refused by an output rule, mid-stream or in the flushed tail: whatever else stopped the engine.
            if (output?.refused) {
              settle({ kind: 'failed', error: output.refused, usage }, replyText);
              return;
            }
            if (result.stopReason === EngineStopReason.aborted && signal.reason !== AbortReason.timeLimit) {
              settle(outcomeOfAbort(signal, usage), replyText);
              return;
            }
            const decodeMs = firstTokenAt === undefined ? 0 : finishedAt - firstTokenAt;
            settle(
              {
                kind: 'finished',
                stopReason: stopReasonOf(result.stopReason, signal, plan.limitedByContext),
                ...(sources.length > 0 ? { sources } : {}),
                usage,
                timing: {
                  firstTokenMs: firstTokenAt === undefined ? 0 : firstTokenAt - runStart,
                  tokensPerSecond: decodeMs > 0 ? round1(((result.completionTokens - 1) * 1000) / decodeMs) : 0,
                },
              },
              replyText,
            );
          } catch (error) {
            // Whatever the engine throws ends this request only; the slot is released below.
            const parleyError = error instanceof ParleyError ? error : new EngineError(error);
            const inner = error instanceof Error ? error.cause : undefined;
            const cause = inner === undefined ? undefined : inner instanceof Error ? `${inner.name}: ${inner.message}` : String(inner);
            request.log.error({ err: error, cause, req: request.id, code: parleyError.code }, 'generation failed');
            flushOutput();
            settle({ kind: 'failed', error: parleyError, usage: none }, produced);
          } finally {
            clearTimeout(timer);
          }
        },
      });
    } catch (error) {
      settle({ kind: 'failed', error: toParleyError(error), usage: none }, '');
      return reply;
    }
    // A queued request that is stopped leaves the queue at once and ends here.
    signal.addEventListener(
      'abort',
      () => {
        if (reply.ticket?.withdraw()) settle(outcomeOfAbort(signal, none), '');
      },
      { once: true },
    );
    return reply;
  }
}

function release(conversation: ActiveConversation): void {
  conversation.busy = false;
  conversation.activeReplyId = undefined;
  conversation.activeMessage = undefined;
}

function cancelledBeforeStart(): ParleyError {
  return new ParleyError(ErrorCode.badRequest, 'The request was cancelled before it started.');
}

function busyError(): ParleyError {
  return new ParleyError(ErrorCode.conversationBusy, 'This conversation already has a reply in progress.', { httpStatus: 409 });
}

/** The outcome of a request its signal stopped, by why it was stopped. */
function outcomeOfAbort(signal: AbortSignal, usage: ReplyUsage): ReplyOutcome {
  switch (signal.reason as AbortReason) {
    case AbortReason.shutdown:
      return { kind: 'failed', error: new ShuttingDownError(), usage };
    case AbortReason.tokenExpired:
      return { kind: 'failed', error: new ParleyError(ErrorCode.tokenExpired, 'Your session expired; reconnect to continue.', { httpStatus: 401 }), usage };
    case AbortReason.revoked:
      return { kind: 'failed', error: new ParleyError(ErrorCode.revoked, 'You were signed out.', { httpStatus: 401 }), usage };
    case AbortReason.flood:
      return { kind: 'failed', error: new ParleyError(ErrorCode.rateLimited, 'The connection was closed for sending too many frames.', { httpStatus: 429 }), usage };
    default:
      return { kind: 'cancelled', usage };
  }
}

/** How a reply's end is stored: a shutdown leaves it interrupted, a failure of the engine an error, any other stop stopped. */
function storedOutcome(outcome: ReplyOutcome): MessageOutcome {
  if (outcome.kind === 'finished') return MessageOutcome.done;
  if (outcome.kind === 'cancelled') return MessageOutcome.stopped;
  if (outcome.error.code === ErrorCode.shuttingDown) return MessageOutcome.interrupted;
  if (outcome.error.code === ErrorCode.engineError || outcome.error.code === ErrorCode.upstreamFailed || outcome.error.code === ErrorCode.internal) return MessageOutcome.error;
  return MessageOutcome.stopped;
}

function stopReasonOf(reason: EngineStopReason, signal: AbortSignal, limitedByContext: boolean): StopReason {
  if (signal.aborted && signal.reason === AbortReason.timeLimit) return StopReason.timeLimit;
  if (reason === EngineStopReason.maxTokens) return limitedByContext ? StopReason.contextFull : StopReason.maxTokens;
  return StopReason.endOfText;
}

function round1(value: number): number {
  return Math.round(value * 10) / 10;
}
