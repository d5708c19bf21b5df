import { EngineStopReason, type GenerateRequest, type GenerateResult } from '../../server/engine/Engine.js';

/**
 * A gate between a real generation and the server, controlled by the test, so that a test which
 * needs a reply to be still running at some moment arranges it itself, whatever the machine's
 * speed.
 *
 * The real engine generates as fast as it can; its pieces of text wait at the gate and pass one
 * at a time. A generation ends, from the server's point of view, only when its last piece has
 * passed: while the gate is held, the reply is running, however fast the model was. Aborting the
 * request's signal ends it at once with `aborted`, keeping back what had not passed.
 *
 * The gate counts pieces across every generation it serves, taking turns between them:
 * - `open()` (the initial state) lets everything through;
 * - `hold(n)` lets n more pieces through, then holds;
 * - `allow(n)` lets n more pieces through a held gate;
 * - `pace(ms)` lets one piece through every ms.
 */
export class Gate {
  private credit = Number.POSITIVE_INFINITY;
  private pacer: ReturnType<typeof setInterval> | undefined;
  /** One wake-up per generation in progress, called in this order whenever the gate changes. */
  private readonly sleepers = new Set<() => void>();
  private readonly stallWaiters = new Set<{ readonly count: number; readonly resolve: () => void }>();
  /** Generations with a piece ready that the gate holds back. */
  private stalledCount = 0;

  /** Lets every held and every future piece through. */
  open(): void {
    this.stopPacing();
    this.credit = Number.POSITIVE_INFINITY;
    this.wakeAll();
  }

  /** Lets `pieces` more pieces through, then holds every generation until `allow`, `pace` or `open`. */
  hold(pieces = 0): void {
    this.stopPacing();
    this.credit = pieces;
    this.wakeAll();
  }

  /** Lets `pieces` more pieces through a held gate. */
  allow(pieces: number): void {
    this.credit += pieces;
    this.wakeAll();
  }

  /** Lets one piece through every `intervalMs`, across all generations, until `hold` or `open`. */
  pace(intervalMs: number): void {
    this.hold(0);
    // A tick with nothing waiting is lost, so pieces never pass in a burst.
    this.pacer = setInterval(() => {
      this.credit = 1;
      this.wakeAll();
    }, intervalMs);
  }

  /**
   * Resolves once the gate has let through every piece it was told to and `count` generations
   * each have a piece ready that it holds back.
   */
  stalled(count = 1): Promise<void> {
    if (this.credit <= 0 && this.stalledCount >= count) return Promise.resolve();
    return new Promise((resolve) => this.stallWaiters.add({ count, resolve }));
  }

  /**
   * Runs `generate` (the real engine) for `request`, passing its text through the gate. Resolves
   * as the real engine would have, had it produced the pieces at the gate's pace.
   */
  async run(request: GenerateRequest, generate: (request: GenerateRequest) => Promise<GenerateResult>): Promise<GenerateResult> {
    const pending: string[] = [];
    const passed: string[] = [];
    let wake: (() => void) | undefined;
    const notify = (): void => {
      const resolve = wake;
      wake = undefined;
      resolve?.();
    };
    let outcome: { ok: true; result: GenerateResult } | { ok: false; error: unknown } | undefined;
    const real = generate({
      ...request,
      onText: (text) => {
        pending.push(text);
        notify();
      },
    }).then(
      (result) => {
        outcome = { ok: true, result };
        notify();
      },
      (error: unknown) => {
        outcome = { ok: false, error };
        notify();
      },
    );

    this.sleepers.add(notify);
    request.signal.addEventListener('abort', notify);
    let stalled = false;
    const setStalled = (value: boolean): void => {
      if (value === stalled) return;
      stalled = value;
      this.stalledCount += value ? 1 : -1;
      if (!value) return;
      for (const waiter of this.stallWaiters) {
        if (this.stalledCount < waiter.count) continue;
        this.stallWaiters.delete(waiter);
        waiter.resolve();
      }
    };
    try {
      while (!request.signal.aborted) {
        if (pending.length > 0 && this.credit > 0) {
          setStalled(false);
          this.credit -= 1;
          // To the back of the line: the next piece goes to another generation if one waits.
          this.sleepers.delete(notify);
          this.sleepers.add(notify);
          const text = pending.shift() as string;
          passed.push(text);
          request.onText(text);
          // Give the other generations woken with this one their turn before the next piece.
          await undefined;
          continue;
        }
        if (pending.length === 0 && outcome !== undefined) break;
        setStalled(pending.length > 0);
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
      }
    } finally {
      setStalled(false);
      this.sleepers.delete(notify);
      request.signal.removeEventListener('abort', notify);
    }
    // The real generation got the same signal, so it settles promptly once aborted.
    await real;
    const settled = outcome as NonNullable<typeof outcome>;
    if (request.signal.aborted) {
      return {
        text: passed.join(''),
        stopReason: EngineStopReason.aborted,
        promptTokens: settled.ok ? settled.result.promptTokens : 0,
        completionTokens: passed.length,
      };
    }
    if (!settled.ok) throw settled.error;
    return settled.result;
  }

  private stopPacing(): void {
    if (this.pacer !== undefined) clearInterval(this.pacer);
    this.pacer = undefined;
  }

  private wakeAll(): void {
    for (const wake of this.sleepers) wake();
  }
}
