import { UpstreamFailedError } from '../ParleyError.js';

/** One OpenAI-compatible server behind a model name, as the pool sees it. */
export interface UpstreamTarget {
  /** Base URL, without a trailing slash (`/v1/...` is appended). */
  readonly url: string;
  /** The model id to send it: the first one its /v1/models lists, once known; the pool's name until then. */
  model: string | undefined;
  /** Tokens per sequence, from its /v1/models, when it says. */
  contextLength: number | undefined;
  healthy: boolean;
  /** Requests sent to it and not yet ended. */
  inFlight: number;
  /** How its POST /tokenize takes text (llama-server: `content`; vLLM: `prompt`), `none` when it has none; undefined until tried. */
  tokenizer?: TokenizerShape;
}

/** The /tokenize dialects Parley speaks: llama-server's `{content}` → `{tokens}`, vLLM's `{model, prompt}` → `{count}`. */
type TokenizerShape = 'llama' | 'vllm' | 'none';

/** What the pool shows about one upstream (tests, logs): never its key. */
export interface UpstreamStatus {
  readonly url: string;
  readonly healthy: boolean;
  readonly inFlight: number;
}

export interface UpstreamPoolOptions {
  /** The model name the pool serves (for messages). */
  readonly name: string;
  readonly urls: readonly string[];
  /** Sent as `Authorization: Bearer` to every upstream of the name; never logged. */
  readonly key?: string;
  /** Requests in flight per upstream, at most. */
  readonly maxInFlight: number;
  /** How often each upstream is health-checked (0: never, tests). */
  readonly healthIntervalMs: number;
  /** Told when an upstream is taken out of rotation or put back. */
  readonly onHealth?: (url: string, healthy: boolean, why: string) => void;
}

/** How long one health check or model probe may take. */
const PROBE_TIMEOUT_MS = 3000;

interface Waiter {
  readonly exclude: ReadonlySet<UpstreamTarget>;
  readonly resolve: (target: UpstreamTarget) => void;
  readonly reject: (error: unknown) => void;
}

/**
 * The upstreams behind one model name (`--upstream NAME=URL`, repeated).
 *
 * Invariants:
 * - A request goes to the healthy upstream with the fewest requests in flight (ties: the first
 *   given), and never to one at its `maxInFlight`; when every healthy one is full it waits for room.
 * - With no healthy upstream left to try, `acquire` fails at once with `upstream_failed`: a request
 *   never waits for an upstream to come back.
 * - An upstream is taken out when its health check fails or a request it refused (`markDown`), and
 *   put back by the next health check that passes: GET `/health`, else GET `/v1/models`, 2xx. A
 *   request it left unanswered once only triggers a check (`checkNow`): the engine decides which.
 */
export class UpstreamPool {
  readonly targets: readonly UpstreamTarget[];
  private readonly waiters: Waiter[] = [];
  private timer: NodeJS.Timeout | undefined;
  private checking = false;
  private disposed = false;

  constructor(private readonly options: UpstreamPoolOptions) {
    this.targets = options.urls.map((url) => ({ url: url.replace(/\/+$/, ''), model: undefined, contextLength: undefined, healthy: false, inFlight: 0 }));
  }

  /** Probes every upstream once (health and models), then keeps checking them on the interval. */
  async start(): Promise<void> {
    await this.checkAll();
    if (this.options.healthIntervalMs > 0 && !this.disposed) {
      this.timer = setInterval(() => void this.checkAll(), this.options.healthIntervalMs);
      this.timer.unref();
    }
  }

  status(): UpstreamStatus[] {
    return this.targets.map(({ url, healthy, inFlight }) => ({ url, healthy, inFlight }));
  }

  /** Requests waiting for room on a healthy upstream. */
  get waiting(): number {
    return this.waiters.length;
  }

  headers(): Record<string, string> {
    return this.options.key === undefined ? {} : { authorization: `Bearer ${this.options.key}` };
  }

  /**
   * The least busy healthy upstream not in `exclude`, its in-flight count taken; waits while all
   * of them are full. Rejects with the signal's reason on abort, and with UpstreamFailedError when
   * no healthy upstream is left to try.
   */
  acquire(signal: AbortSignal, exclude: ReadonlySet<UpstreamTarget>, lastError?: unknown): Promise<UpstreamTarget> {
    if (signal.aborted) return Promise.reject(signal.reason);
    const choice = this.choose(exclude);
    if (choice === 'none') return Promise.reject(this.noneLeft(exclude, lastError));
    if (choice !== 'full') {
      choice.inFlight++;
      return Promise.resolve(choice);
    }
    return new Promise<UpstreamTarget>((resolve, reject) => {
      const onAbort = () => {
        this.removeWaiter(waiter);
        reject(signal.reason);
      };
      const waiter: Waiter = {
        exclude,
        resolve: (target) => {
          signal.removeEventListener('abort', onAbort);
          resolve(target);
        },
        reject: (error) => {
          signal.removeEventListener('abort', onAbort);
          reject(error);
        },
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  release(target: UpstreamTarget): void {
    target.inFlight = Math.max(0, target.inFlight - 1);
    this.pump();
  }

  /** A request found this upstream refusing or unreachable: out of rotation until a health check passes. */
  /**
   * Token counts of `texts` from a healthy upstream's POST /tokenize (llama-server's and vLLM's
   * dialects), or undefined when none of them has one, it fails, or it is slower than the probe
   * timeout: the caller then estimates. Never throws; never marks an upstream down.
   */
  async countTokens(texts: readonly string[], signal?: AbortSignal): Promise<number[] | undefined> {
    const target = this.targets.find((candidate) => candidate.healthy && candidate.tokenizer !== 'none');
    if (target === undefined || texts.length === 0) return undefined;
    const timeout = AbortSignal.timeout(PROBE_TIMEOUT_MS);
    const combined = signal === undefined ? timeout : AbortSignal.any([signal, timeout]);
    try {
      if (target.tokenizer === undefined) {
        const first = await this.tokenizeProbing(target, texts[0] as string, combined);
        if (first === undefined) return undefined;
        const rest = await Promise.all(texts.slice(1).map((text) => this.tokenize(target, text, combined)));
        return rest.every((count) => count !== undefined) ? [first, ...(rest as number[])] : undefined;
      }
      const counts = await Promise.all(texts.map((text) => this.tokenize(target, text, combined)));
      return counts.every((count) => count !== undefined) ? (counts as number[]) : undefined;
    } catch {
      return undefined;
    }
  }

  /** The first /tokenize call to an upstream: finds its dialect (llama-server's, then vLLM's), or learns it has none. */
  private async tokenizeProbing(target: UpstreamTarget, text: string, signal: AbortSignal): Promise<number | undefined> {
    for (const shape of ['llama', 'vllm'] as const) {
      target.tokenizer = shape;
      const count = await this.tokenize(target, text, signal);
      if (count !== undefined) return count;
    }
    target.tokenizer = 'none';
    return undefined;
  }

  private async tokenize(target: UpstreamTarget, text: string, signal: AbortSignal): Promise<number | undefined> {
    const body = target.tokenizer === 'vllm' ? { model: target.model ?? this.options.name, prompt: text, add_special_tokens: false } : { content: text, add_special: false };
    const response = await fetch(`${target.url}/tokenize`, { method: 'POST', headers: { ...this.headers(), 'content-type': 'application/json' }, body: JSON.stringify(body), signal });
    if (!response.ok) {
      await response.body?.cancel();
      return undefined;
    }
    const answer = (await response.json()) as { tokens?: unknown; count?: unknown };
    if (typeof answer.count === 'number' && Number.isInteger(answer.count) && answer.count >= 0) return answer.count;
    if (Array.isArray(answer.tokens)) return answer.tokens.length;
    return undefined;
  }

  /** Health-checks one upstream now, in the background (a request got no answer from it). */
  checkNow(target: UpstreamTarget): void {
    void this.check(target);
  }

  markDown(target: UpstreamTarget, why: string): void {
    this.setHealth(target, false, why);
  }

  dispose(): void {
    this.disposed = true;
    clearInterval(this.timer);
    for (const waiter of this.waiters.splice(0)) waiter.reject(new UpstreamFailedError(`The model '${this.options.name}' is shutting down.`));
  }

  private choose(exclude: ReadonlySet<UpstreamTarget>): UpstreamTarget | 'full' | 'none' {
    const candidates = this.targets.filter((target) => target.healthy && !exclude.has(target));
    if (candidates.length === 0) return 'none';
    let best: UpstreamTarget | undefined;
    for (const target of candidates) {
      if (target.inFlight >= this.options.maxInFlight) continue;
      if (best === undefined || target.inFlight < best.inFlight) best = target;
    }
    return best ?? 'full';
  }

  private noneLeft(exclude: ReadonlySet<UpstreamTarget>, cause: unknown): UpstreamFailedError {
    const message =
      exclude.size === 0
        ? `No upstream of the model '${this.options.name}' is reachable now; try again later.`
        : `Every upstream of the model '${this.options.name}' refused this request; try again later.`;
    return new UpstreamFailedError(message, cause);
  }

  /** Hands room that opened (a release, an upstream back) to the waiters, in order; fails those with nothing left to try. */
  private pump(): void {
    for (const waiter of [...this.waiters]) {
      const choice = this.choose(waiter.exclude);
      if (choice === 'full') continue;
      this.removeWaiter(waiter);
      if (choice === 'none') {
        waiter.reject(this.noneLeft(waiter.exclude, undefined));
      } else {
        choice.inFlight++;
        waiter.resolve(choice);
      }
    }
  }

  private removeWaiter(waiter: Waiter): void {
    const index = this.waiters.indexOf(waiter);
    if (index >= 0) this.waiters.splice(index, 1);
  }

  private setHealth(target: UpstreamTarget, healthy: boolean, why: string): void {
    if (target.healthy === healthy) return;
    target.healthy = healthy;
    this.options.onHealth?.(target.url, healthy, why);
    this.pump();
  }

  private async checkAll(): Promise<void> {
    // One round at a time: a slow upstream does not pile up checks.
    if (this.checking || this.disposed) return;
    this.checking = true;
    try {
      await Promise.all(this.targets.map((target) => this.check(target)));
    } finally {
      this.checking = false;
    }
  }

  private async check(target: UpstreamTarget): Promise<void> {
    let why = '';
    let healthy = false;
    try {
      const health = await this.get(target, '/health');
      await health.body?.cancel();
      healthy = health.ok;
      why = `GET /health: ${health.status}`;
    } catch (error) {
      why = `GET /health: ${describe(error)}`;
    }
    // The models probe also tells the model id and context length, learnt once.
    if (!healthy || target.model === undefined) {
      try {
        const models = await this.get(target, '/v1/models');
        if (models.ok) {
          learnModel(target, await models.json());
          healthy = true;
        } else {
          await models.body?.cancel();
          if (!healthy) why += `; GET /v1/models: ${models.status}`;
        }
      } catch (error) {
        if (!healthy) why += `; GET /v1/models: ${describe(error)}`;
      }
    }
    if (this.disposed) return;
    this.setHealth(target, healthy, healthy ? 'health check passed' : why);
  }

  private get(target: UpstreamTarget, path: string): Promise<Response> {
    return fetch(`${target.url}${path}`, { headers: this.headers(), signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
  }
}

/**
 * The first model an upstream's /v1/models lists, and its context length where the server says:
 * `context_length` (OpenRouter and others), `max_model_len` (vLLM), `meta.n_ctx_train`
 * (llama-server) or `parley.context_size` (Parley).
 */
function learnModel(target: UpstreamTarget, body: unknown): void {
  const first = (body as { data?: unknown[] } | undefined)?.data?.[0] as Record<string, unknown> | undefined;
  if (first === undefined || typeof first.id !== 'string') return;
  target.model = first.id;
  const meta = first.meta as Record<string, unknown> | undefined;
  const parley = first.parley as Record<string, unknown> | undefined;
  const length = [first.context_length, first.max_model_len, meta?.n_ctx_train, parley?.context_size].find((value) => typeof value === 'number' && Number.isInteger(value) && value > 0);
  if (typeof length === 'number') target.contextLength = length;
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    const cause = error.cause instanceof Error ? `: ${error.cause.message}` : '';
    return `${error.name}${cause}`;
  }
  return String(error);
}
