import type { LlamaContext, LlamaContextSequence } from 'node-llama-cpp';

/**
 * A decode request as node-llama-cpp 3.21.1 queues it: the tokens of one sequence, placed from
 * `firstTokenSequenceIndex` on, with `logits[i]` saying whether token i's logits are wanted. It
 * resolves with the mapped logits of those tokens, in order.
 */
interface DecodeRequest {
  readonly sequenceId: number;
  readonly tokens?: readonly unknown[];
  readonly logits?: readonly unknown[];
  readonly firstTokenSequenceIndex?: number;
}

/** The internal entry point every decode of a LlamaContext goes through in node-llama-cpp 3.21.1. */
type DecodeTokens = (request: DecodeRequest, logitDataMapper: unknown) => Promise<unknown>;

interface HeldDecode {
  readonly sequenceId: number;
  readonly run: () => void;
}

export interface DecodeBarrierOptions {
  /**
   * The longest held requests wait for a generation that is between decodes (sampling, running
   * its JS). Only reached when a generation stalls (a slow onText, a GC pause): in lockstep the
   * last request arrives within the JS time of one token per generation. A generation whose
   * decode is in progress is always waited for, however long: it comes back, and waiting for it
   * is what brings two groups that drifted apart back into one step.
   */
  readonly maxWaitMs: number;
  /**
   * How many waiting prompts start together, in one decode, once the prompts in progress are
   * done. Default 1.
   */
  readonly promptsPerDecode?: number;
  /**
   * While other generations run, a longer prompt goes in chunks of this many tokens, each
   * after the first released together with the others' step, so their replies keep streaming
   * during a long prompt. Unset: a prompt goes as one request.
   */
  readonly promptChunkTokens?: number;
}

/**
 * Makes the generations on one context advance in lockstep: one llama_decode per step, carrying
 * the next token of every generation, in ascending sequence order.
 *
 * Why: llama.cpp reads every weight once per graph computation, so a decode of N tokens costs
 * little more than a decode of one. node-llama-cpp 3.21.1 defeats that twice over:
 * - Phase splitting. Each generation samples and runs its JS between tokens on its own, and the
 *   context's dispatch loop decodes whatever is queued the moment the previous decode's samples
 *   are in; so a step carries the generations that were quick enough, and the others go into a
 *   decode of their own.
 * - Split micro-batches. Its contexts keep one KV stream per sequence (kv_unified = false, fixed
 *   in the addon), and with several streams llama.cpp puts into one graph computation only
 *   sequences whose ids run consecutively upwards in batch order (llama_batch_allocr::
 *   split_equal with sequential = true). A batch queued as sequences [2, 0, 1] runs as two
 *   computations, [3, 2, 1, 0] as four. The queue order is the order in which samples finished.
 *
 * The barrier holds each decode request of a generating sequence until every generating sequence
 * has one (or maxWaitMs passes), then queues them all in one synchronous pass, lowest sequence id
 * first, so the dispatcher sees them together and in order. Sequences that are not generating
 * (see begin/end) pass straight through. With one generation nothing is ever held.
 *
 * A generation's first request (its prompt) is never held for the step. Prompts go in arrival
 * order, a few at a time (promptsPerDecode), each group once the one before is done, whether a
 * generation runs alone or not: evaluating a prompt is compute-bound, so many prompts in one
 * decode all wait for the last, while a small group still shares the decode's fixed cost; the
 * first reply of a burst starts streaming after its own prompt (4 prompts of ~35 tokens on the
 * 0.5B shape, one at a time: first tokens at about 0.2, 0.4, 0.6 and 0.8 s instead of all at
 * 0.85 s). Each prompt still shares its decode with the running generations' step, as
 * llama-server's continuous batching does.
 *
 * Invariant: a held request is always released, by the last arrival, by end(), by the timer, or
 * by dispose(); it is never dropped, so node-llama-cpp's promise for it always settles.
 *
 * This wraps an internal method of node-llama-cpp (LlamaContext._decodeTokens), pinned at 3.21.1.
 * When the method is missing, install() returns undefined and decoding runs unchanged.
 */
export class DecodeBarrier {
  /** Sequences between begin() and end(). */
  private readonly generating = new Set<number>();
  /** Generating sequences whose first request (the prompt) has been made. */
  private readonly prompted = new Set<number>();
  /** Generating sequences whose first request is done: the ones a step waits for. */
  private readonly participants = new Set<number>();
  /** Sequences whose prompt goes in chunks: a step waits for each next chunk too. */
  private readonly chunking = new Set<number>();
  private held: HeldDecode[] = [];
  /** The sequences whose prompts are being decoded, as the barrier started them. */
  private readonly promptsInFlight = new Set<number>();
  /** Prompts waiting for it, in arrival order. */
  private waitingPrompts: HeldDecode[] = [];
  /** Released requests not yet settled, by sequence. */
  private readonly inFlight = new Map<number, number>();
  private timer: NodeJS.Timeout | undefined;
  private disposed = false;

  private constructor(
    private readonly context: LlamaContext,
    private readonly original: DecodeTokens,
    private readonly options: DecodeBarrierOptions,
  ) {}

  static install(context: LlamaContext, options: DecodeBarrierOptions): DecodeBarrier | undefined {
    const target = context as unknown as { _decodeTokens?: DecodeTokens };
    if (typeof target._decodeTokens !== 'function') return undefined;
    const barrier = new DecodeBarrier(context, target._decodeTokens.bind(context), options);
    const wrapped: DecodeTokens = (request, logitDataMapper) => barrier.decode(request, logitDataMapper);
    Object.defineProperty(context, '_decodeTokens', { value: wrapped, configurable: true, writable: true });
    return barrier;
  }

  /** The id llama.cpp knows the sequence by (node-llama-cpp keeps it internal). */
  static sequenceIdOf(sequence: LlamaContextSequence): number {
    const id = (sequence as unknown as { _sequenceId?: unknown })._sequenceId;
    if (typeof id !== 'number') throw new TypeError('node-llama-cpp sequence has no _sequenceId');
    return id;
  }

  /** A generation starts on the sequence: its decodes join the lockstep. */
  begin(sequenceId: number): void {
    this.generating.add(sequenceId);
    this.prompted.delete(sequenceId);
    // A generation that ran alone steps with the newcomer from its next request on.
    const prompting = new Set([...this.promptsInFlight, ...this.waitingPrompts.map((prompt) => prompt.sequenceId)]);
    for (const id of this.prompted) {
      if (id !== sequenceId && this.generating.has(id) && !prompting.has(id)) this.participants.add(id);
    }
  }

  /**
   * The generation on the sequence is over, or stopping (an abort): the others stop waiting for
   * it, and a request of its own that is still held goes ahead now. Idempotent.
   */
  end(sequenceId: number): void {
    this.generating.delete(sequenceId);
    this.prompted.delete(sequenceId);
    this.participants.delete(sequenceId);
    this.chunking.delete(sequenceId);
    const own = [...this.held, ...this.waitingPrompts].filter((held) => held.sequenceId === sequenceId);
    if (own.length > 0) {
      this.held = this.held.filter((held) => held.sequenceId !== sequenceId);
      this.waitingPrompts = this.waitingPrompts.filter((held) => held.sequenceId !== sequenceId);
    }
    for (const decode of own) decode.run();
    this.releaseIfComplete();
  }

  /** Releases anything held and restores the context's own method. */
  dispose(): void {
    this.disposed = true;
    this.release();
    const prompts = this.waitingPrompts;
    this.waitingPrompts = [];
    for (const prompt of prompts) prompt.run();
    delete (this.context as unknown as { _decodeTokens?: DecodeTokens })._decodeTokens;
  }

  private decode(request: DecodeRequest, logitDataMapper: unknown): Promise<unknown> {
    const { sequenceId } = request;
    if (this.disposed || !this.generating.has(sequenceId)) return this.original(request, logitDataMapper);
    // A generation's first request (its prompt) is never held for the step, and never waits for a
    // step either: it goes once no other prompt is in progress, alone or not. It joins the
    // lockstep once that request is done, so the others keep stepping (in the same batches as the
    // prompt's chunks) instead of waiting for a long prompt.
    if (!this.prompted.has(sequenceId)) {
      this.prompted.add(sequenceId);
      return this.track(sequenceId, () => this.sendPrompt(request, logitDataMapper), 'prompt', (run) => {
        if (this.promptsInFlight.size === 0) {
          this.promptsInFlight.add(sequenceId);
          run();
        } else {
          this.waitingPrompts.push({ sequenceId, run });
        }
      });
    }
    // Alone, a generation has nobody to step with; begin() makes it a participant when another
    // begins.
    if (this.generating.size === 1) {
      this.participants.delete(sequenceId);
      return this.original(request, logitDataMapper);
    }
    this.participants.add(sequenceId);
    return this.track(sequenceId, () => this.original(request, logitDataMapper), 'step', (run) => {
      this.held.push({ sequenceId, run });
      this.releaseIfComplete();
    });
  }

  /**
   * Sends when `schedule` calls run, counting the request in flight until it settles. A prompt,
   * once done, makes its generation a participant and lets the next waiting prompts go.
   */
  private track(
    sequenceId: number,
    send: () => Promise<unknown>,
    kind: 'prompt' | 'step',
    schedule: (run: () => void) => void,
  ): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const run = (): void => {
        this.inFlight.set(sequenceId, (this.inFlight.get(sequenceId) ?? 0) + 1);
        const settle = (): void => {
          const left = (this.inFlight.get(sequenceId) ?? 1) - 1;
          if (left > 0) this.inFlight.set(sequenceId, left);
          else this.inFlight.delete(sequenceId);
          if (kind === 'prompt') {
            if (this.generating.has(sequenceId)) this.participants.add(sequenceId);
            if (this.promptsInFlight.delete(sequenceId) && this.promptsInFlight.size === 0) this.startNextPrompts();
          }
          this.releaseIfComplete();
        };
        send().then(
          (value) => { settle(); resolve(value); },
          (error: unknown) => { settle(); reject(error); },
        );
      };
      schedule(run);
    });
  }

  /**
   * A prompt, in chunks of promptChunkTokens when others are generating: the first goes at once,
   * each next one waits for the others' step and goes in the same decode. The chunks resolve
   * with their tokens' logits in order, so their results joined are the whole request's.
   */
  private async sendPrompt(request: DecodeRequest, logitDataMapper: unknown): Promise<unknown> {
    const size = this.options.promptChunkTokens;
    const { tokens, logits, firstTokenSequenceIndex } = request;
    if (
      size === undefined || this.generating.size < 2 || tokens === undefined || logits === undefined ||
      firstTokenSequenceIndex === undefined || tokens.length <= size || logits.length !== tokens.length
    ) {
      return this.original(request, logitDataMapper);
    }
    const { sequenceId } = request;
    const results: unknown[] = [];
    this.chunking.add(sequenceId);
    try {
      for (let start = 0; start < tokens.length; start += size) {
        const chunk: DecodeRequest = { ...request, tokens: tokens.slice(start, start + size), logits: logits.slice(start, start + size), firstTokenSequenceIndex: firstTokenSequenceIndex + start };
        const send = (): Promise<unknown> => this.original(chunk, logitDataMapper);
        const value = await (start === 0 || !this.chunking.has(sequenceId) ? send() : this.withStep(sequenceId, send));
        if (!Array.isArray(value)) throw new TypeError('node-llama-cpp returned decode results that are not an array');
        results.push(...(value as unknown[]));
      }
    } finally {
      this.chunking.delete(sequenceId);
      this.releaseIfComplete();
    }
    return results;
  }

  /** Holds `send` with the step being formed; it goes when the step is released. */
  private withStep(sequenceId: number, send: () => Promise<unknown>): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.held.push({ sequenceId, run: () => { send().then(resolve, reject); } });
      this.releaseIfComplete();
    });
  }

  /**
   * Releases when every participant is held. Otherwise the timer runs only while a participant is
   * between decodes; participants whose decode is in progress are waited for without limit.
   */
  private releaseIfComplete(): void {
    if (this.held.length === 0) return;
    const waiting = new Set(this.held.map((held) => held.sequenceId));
    let between = false;
    let complete = true;
    for (const awaited of [this.participants, this.chunking]) {
      for (const sequenceId of awaited) {
        if (waiting.has(sequenceId)) continue;
        complete = false;
        if (!this.inFlight.has(sequenceId)) between = true;
      }
    }
    if (complete) {
      this.release();
    } else if (!between) {
      this.clearTimer();
    } else if (this.timer === undefined) {
      this.timer = setTimeout(() => this.release(), this.options.maxWaitMs);
    }
  }

  /** Starts the oldest waiting prompts, up to promptsPerDecode, in one synchronous pass. */
  private startNextPrompts(): void {
    const next = this.waitingPrompts.splice(0, Math.max(1, this.options.promptsPerDecode ?? 1));
    for (const prompt of next) this.promptsInFlight.add(prompt.sequenceId);
    for (const prompt of next) prompt.run();
  }

  /** Queues every held request in one synchronous pass, lowest sequence id first. */
  private release(): void {
    this.clearTimer();
    const held = this.held.sort((a, b) => a.sequenceId - b.sequenceId);
    this.held = [];
    for (const decode of held) decode.run();
  }

  private clearTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
