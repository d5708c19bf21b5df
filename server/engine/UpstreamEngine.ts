import { createHash } from 'node:crypto';
import { ContextOverflowError, UpstreamFailedError } from '../ParleyError.js';
import { EngineStopReason, type Engine, type EngineInfo, type GenerateRequest, type GenerateResult, type PromptPlan, type ResponseFormat, type Turn } from './Engine.js';
import { UpstreamPool, type UpstreamStatus, type UpstreamTarget } from './UpstreamPool.js';

export interface UpstreamEngineOptions {
  /** The model id Parley serves it as (`--upstream NAME=URL`). */
  readonly name: string;
  /** One or more OpenAI-compatible servers (llama-server, vLLM, Ollama, another Parley); several form a pool. */
  readonly urls: readonly string[];
  /** Bearer key for every URL of the name (`--upstream-key NAME=KEY`); never logged. */
  readonly key?: string;
  /** Requests in flight per upstream, at most (`--upstream-max-in-flight`). */
  readonly maxInFlight: number;
  readonly healthIntervalMs: number;
  /** Used when no upstream tells its context length (`--upstream-context-size`); else 4096. */
  readonly contextSize?: number;
  /** The server's system prompt and temperature, sent when a request brings none. */
  readonly systemPrompt?: string;
  readonly temperature?: number;
  readonly onHealth?: (url: string, healthy: boolean, why: string) => void;
}

const DEFAULT_CONTEXT = 4096;
/**
 * Tokens are estimated, not counted: one per 3 characters (English runs nearer 4, code and other
 * scripts fewer, so 3 errs towards leaving room), plus a few per turn for the chat template.
 */
const CHARS_PER_TOKEN = 3;
const TOKENS_PER_TURN = 4;
const MIN_REPLY_TOKENS = 16;
/** Room left for the estimate's error and the template's own tokens. */
const CONTEXT_MARGIN = 32;

/**
 * An attempt that ended before any text: the request may go to another upstream. `connection`:
 * no HTTP answer at all (refused, reset, or a kept-alive connection the upstream had closed);
 * `refused`: an overload or server-fault status, or a stream cut before its first text.
 */
class RefusedBeforeText extends Error {
  override name = 'RefusedBeforeText';
  constructor(
    message: string,
    readonly kind: 'connection' | 'refused',
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** How far one attempt got; shared with the caller, which decides on failover by it. */
interface Progress {
  text: string;
  chunks: number;
}

/**
 * An engine that generates through OpenAI-compatible servers: POST `{url}/v1/chat/completions`
 * with `stream: true`, deltas to `onText`, usage from the final usage chunk (else estimated).
 *
 * Invariants:
 * - The request's signal aborts the upstream fetch at once (cancel, disconnect, shutdown, time
 *   limit); the result is then `aborted` with the text received so far.
 * - A request that fails before its first piece of text goes to another healthy upstream of the
 *   name (each tried once); one that fails after it, or with none left, throws UpstreamFailedError,
 *   which the chat core turns into the request's one terminal `upstream_failed`.
 * - `slots` is every upstream's in-flight cap together; the pool keeps each upstream under its cap.
 */
export class UpstreamEngine implements Engine {
  readonly info: EngineInfo;
  readonly slots: number;
  /** Token counts from /tokenize, by the text's hash, newest last (at most MAX_COUNTS_KEPT). */
  private readonly counts = new Map<string, number>();

  private constructor(
    private readonly options: UpstreamEngineOptions,
    private readonly pool: UpstreamPool,
    contextSize: number,
  ) {
    this.info = { name: options.name, demo: false, contextSize };
    this.slots = options.maxInFlight * options.urls.length;
  }

  /**
   * Probes each upstream once (health, model id, context length) and starts the health checks.
   * Never fails for an unreachable upstream: it stays out of rotation until a check passes.
   */
  static async open(options: UpstreamEngineOptions): Promise<UpstreamEngine> {
    const pool = new UpstreamPool({
      name: options.name,
      urls: options.urls,
      ...(options.key === undefined ? {} : { key: options.key }),
      maxInFlight: options.maxInFlight,
      healthIntervalMs: options.healthIntervalMs,
      ...(options.onHealth === undefined ? {} : { onHealth: options.onHealth }),
    });
    await pool.start();
    const told = pool.targets.map((target) => target.contextLength).filter((length): length is number => length !== undefined);
    // The smallest an upstream tells, so a prompt fits whichever one serves it.
    const contextSize = told.length > 0 ? Math.min(...told) : (options.contextSize ?? DEFAULT_CONTEXT);
    return new UpstreamEngine(options, pool, contextSize);
  }

  /** Each upstream's health and load (tests, diagnostics). */
  upstreams(): UpstreamStatus[] {
    return this.pool.status();
  }

  /** Requests waiting for an upstream with room (every healthy one at its cap). */
  get waiting(): number {
    return this.pool.waiting;
  }

  planPrompt(history: readonly Turn[], text: string, maxTokens: number, system?: string): PromptPlan {
    const contextSize = this.info.contextSize;
    const alone = this.tokensOf(text) + TOKENS_PER_TURN + this.tokensOf(system ?? this.options.systemPrompt ?? '');
    if (alone + MIN_REPLY_TOKENS + CONTEXT_MARGIN > contextSize) {
      throw new ContextOverflowError(`This message is about ${alone} tokens; the model's context holds ${contextSize} tokens including the reply. Shorten it.`);
    }
    const turnTokens = history.map((turn) => turn.tokens ?? this.tokensOf(turn.text) + TOKENS_PER_TURN);
    // Like LlamaEngine: keep the newest turns (dropping the oldest exchange at a time) that leave
    // room for the full reply, or at least a quarter of the context.
    const reserve = Math.min(maxTokens, Math.floor(contextSize / 4));
    const budget = contextSize - reserve - CONTEXT_MARGIN;
    let firstTurn = 0;
    let promptTokens = alone + turnTokens.reduce((sum, tokens) => sum + tokens, 0);
    while (promptTokens > budget && firstTurn < history.length) {
      promptTokens -= (turnTokens[firstTurn] ?? 0) + (turnTokens[firstTurn + 1] ?? 0);
      firstTurn += 2;
    }
    firstTurn = Math.min(firstTurn, history.length);
    const room = Math.max(MIN_REPLY_TOKENS, contextSize - promptTokens - CONTEXT_MARGIN);
    return { firstTurn, promptTokens, maxTokens: Math.min(maxTokens, room), limitedByContext: room < maxTokens, turnTokens };
  }

  /**
   * Counts `texts` with an upstream's /tokenize (where it has one) and keeps the counts, so the
   * next planPrompt uses them instead of the chars/3 estimate. Never throws: without counts,
   * planning estimates as before.
   */
  async prepareTokenCounts(texts: readonly string[], signal?: AbortSignal): Promise<void> {
    // A token is at least one byte of UTF-8: when the bytes alone fit beside the largest reply
    // reserve (a quarter of the context), every plan keeps every turn and counting changes nothing.
    const bytes = texts.reduce((sum, text) => sum + Buffer.byteLength(text) + TOKENS_PER_TURN, 0);
    if (bytes <= this.info.contextSize - Math.floor(this.info.contextSize / 4) - CONTEXT_MARGIN) return;
    const unknown = [...new Set(texts.filter((text) => text.length > 0 && !this.counts.has(countKey(text))))];
    if (unknown.length === 0) return;
    const counts = await this.pool.countTokens(unknown, signal);
    if (counts === undefined) return;
    unknown.forEach((text, index) => {
      const key = countKey(text);
      this.counts.delete(key);
      this.counts.set(key, counts[index] as number);
    });
    for (const oldest of this.counts.keys()) {
      if (this.counts.size <= MAX_COUNTS_KEPT) break;
      this.counts.delete(oldest);
    }
  }

  /** JSON and JSON-schema output are passed on as `response_format`; an upstream that cannot honour it refuses the request (upstream_failed). */
  prepareFormat(_format: ResponseFormat): Promise<void> {
    return Promise.resolve();
  }

  async generate(request: GenerateRequest): Promise<GenerateResult> {
    const progress: Progress = { text: '', chunks: 0 };
    const tried = new Set<UpstreamTarget>();
    /** Upstreams this request already got no HTTP answer from once. */
    const unanswered = new Set<UpstreamTarget>();
    let lastError: unknown;
    for (;;) {
      let target: UpstreamTarget;
      try {
        target = await this.pool.acquire(request.signal, tried, lastError);
      } catch (error) {
        if (request.signal.aborted) return this.aborted(request, progress);
        throw error;
      }
      tried.add(target);
      try {
        return await this.attempt(target, request, progress);
      } catch (error) {
        if (request.signal.aborted) return this.aborted(request, progress);
        if (error instanceof RefusedBeforeText && progress.chunks === 0) {
          lastError = error;
          // One unanswered request is not a dead upstream (a kept-alive connection it had just
          // closed looks the same): it may take this request again, on a new connection, and a
          // health check decides now. Unanswered twice, or refused, it is out of rotation.
          if (error.kind === 'connection' && !unanswered.has(target)) {
            unanswered.add(target);
            tried.delete(target);
            this.pool.checkNow(target);
          } else {
            this.pool.markDown(target, error.message);
          }
          continue;
        }
        if (error instanceof UpstreamFailedError) throw error;
        throw new UpstreamFailedError(`The upstream engine of the model '${this.options.name}' failed during this reply.`, error);
      } finally {
        this.pool.release(target);
      }
    }
  }

  dispose(): Promise<void> {
    this.pool.dispose();
    return Promise.resolve();
  }

  private async attempt(target: UpstreamTarget, request: GenerateRequest, progress: Progress): Promise<GenerateResult> {
    let response: Response;
    try {
      response = await fetch(`${target.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'text/event-stream', ...this.pool.headers() },
        body: JSON.stringify(this.bodyFor(target, request)),
        signal: request.signal,
      });
    } catch (error) {
      throw new RefusedBeforeText(`POST /v1/chat/completions: ${error instanceof Error ? error.message : String(error)}`, 'connection', { cause: error });
    }
    if (!response.ok || response.body === null) {
      const detail = await response.text().catch(() => '');
      // Overload and server faults may pass on another upstream; anything else is this request's own.
      if (response.status >= 500 || response.status === 429 || response.status === 408) {
        throw new RefusedBeforeText(`POST /v1/chat/completions: ${response.status}`, 'refused', { cause: detail.slice(0, 500) });
      }
      throw new UpstreamFailedError(`The upstream engine of the model '${this.options.name}' refused this request (${response.status}).`, detail.slice(0, 500));
    }
    let usage: { prompt_tokens?: number; completion_tokens?: number } | undefined;
    let finish: string | undefined;
    let done = false;
    const onData = (data: string): void => {
      if (data === '[DONE]') {
        done = true;
        return;
      }
      let chunk: StreamChunk;
      try {
        chunk = JSON.parse(data) as StreamChunk;
      } catch {
        throw new Error('an SSE chunk that is not JSON');
      }
      if (chunk.error !== undefined) throw new Error(`an error chunk: ${JSON.stringify(chunk.error).slice(0, 300)}`);
      if (chunk.usage) usage = chunk.usage;
      const choice = chunk.choices?.[0];
      const text = choice?.delta?.content;
      if (typeof text === 'string' && text.length > 0) {
        progress.text += text;
        progress.chunks++;
        request.onText(text);
      }
      if (typeof choice?.finish_reason === 'string') finish = choice.finish_reason;
    };
    try {
      await readSse(response.body, onData, () => done);
    } catch (error) {
      if (progress.chunks === 0 && !request.signal.aborted) throw new RefusedBeforeText(`the stream failed before any text: ${error instanceof Error ? error.message : String(error)}`, 'refused', { cause: error });
      throw error;
    }
    // A stream that ends without [DONE] or a finish reason was cut off: the upstream died.
    if (!done && finish === undefined) {
      const cut = new Error('the stream ended before the reply did');
      if (progress.chunks === 0) throw new RefusedBeforeText(cut.message, 'refused');
      throw cut;
    }
    return {
      text: progress.text,
      stopReason: finish === 'length' ? EngineStopReason.maxTokens : EngineStopReason.endOfText,
      promptTokens: usage?.prompt_tokens ?? this.estimatePrompt(request),
      completionTokens: usage?.completion_tokens ?? progress.chunks,
    };
  }

  private bodyFor(target: UpstreamTarget, request: GenerateRequest): Record<string, unknown> {
    const options = request.options ?? {};
    const system = options.system ?? this.options.systemPrompt;
    const temperature = options.temperature ?? this.options.temperature;
    return {
      model: target.model ?? this.options.name,
      messages: [...(system === undefined ? [] : [{ role: 'system', content: system }]), ...request.history.map((turn) => ({ role: turn.role, content: turn.text })), { role: 'user', content: request.text }],
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: request.maxTokens,
      ...(temperature === undefined ? {} : { temperature }),
      ...(options.topP === undefined ? {} : { top_p: options.topP }),
      ...(options.seed === undefined ? {} : { seed: options.seed }),
      ...(options.stop === undefined || options.stop.length === 0 ? {} : { stop: options.stop }),
      ...(options.format === undefined ? {} : { response_format: responseFormatOf(options.format) }),
    };
  }

  /** The upstream's count of `text` when prepareTokenCounts got one, else the estimate. */
  private tokensOf(text: string): number {
    return this.counts.get(countKey(text)) ?? estimateTokens(text);
  }

  private estimatePrompt(request: GenerateRequest): number {
    const system = request.options?.system ?? this.options.systemPrompt ?? '';
    return [system, ...request.history.map((turn) => turn.text), request.text].reduce((sum, text) => sum + estimateTokens(text) + TOKENS_PER_TURN, 0);
  }

  private aborted(request: GenerateRequest, progress: Progress): GenerateResult {
    return { text: progress.text, stopReason: EngineStopReason.aborted, promptTokens: this.estimatePrompt(request), completionTokens: progress.chunks };
  }
}

interface StreamChunk {
  choices?: Array<{ delta?: { content?: string | null }; finish_reason?: string | null }>;
  usage?: { prompt_tokens?: number; completion_tokens?: number } | null;
  error?: unknown;
}

/** Texts whose /tokenize counts are kept (by hash: a few dozen bytes each). */
const MAX_COUNTS_KEPT = 4096;

function countKey(text: string): string {
  return createHash('sha256').update(text).digest('base64url');
}

function estimateTokens(text: string): number {
  return Math.ceil(text.length / CHARS_PER_TOKEN);
}

function responseFormatOf(format: ResponseFormat): Record<string, unknown> {
  return format.type === 'json' ? { type: 'json_object' } : { type: 'json_schema', json_schema: { name: 'reply', schema: format.schema } };
}

/** Reads `data:` lines of an SSE body, in order, until it ends or `stop()` says the stream is complete. */
async function readSse(body: ReadableStream<Uint8Array>, onData: (data: string) => void, stop: () => boolean): Promise<void> {
  const decoder = new TextDecoder();
  const reader = body.getReader();
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let newline = buffer.indexOf('\n');
      while (newline >= 0) {
        const line = buffer.slice(0, newline).replace(/\r$/, '');
        buffer = buffer.slice(newline + 1);
        if (line.startsWith('data:')) onData(line.slice(5).trimStart());
        if (stop()) return;
        newline = buffer.indexOf('\n');
      }
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
}
