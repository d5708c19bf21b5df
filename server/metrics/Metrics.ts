import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

/** Live state read at scrape time, so gauges can never drift from the truth. */
export interface MetricsSources {
  /** Open WebSocket connections, by transport name. */
  connections(): ReadonlyMap<string, number>;
  /** Generations holding a slot. */
  activeGenerations(): number;
  /** Generations waiting for a slot. */
  queuedGenerations(): number;
  /** Replies whose connection dropped, still running or kept within their resume grace period. */
  detachedReplies(): number;
}

const noSources: MetricsSources = {
  connections: () => new Map(),
  activeGenerations: () => 0,
  queuedGenerations: () => 0,
  detachedReplies: () => 0,
};

/**
 * Parley's Prometheus metrics, in a registry of their own (several servers can share one
 * process, as the tests do). Labels are bounded sets (transports, error codes, abort reasons,
 * limiter names): never user ids, request ids or text.
 */
export class Metrics {
  readonly registry = new Registry();
  private sources: MetricsSources = noSources;
  private readonly tokens: Counter;
  private readonly generations: Counter<'outcome'>;
  private readonly cancels: Counter<'reason'>;
  private readonly rateLimited: Counter<'limiter'>;
  private readonly errors: Counter<'code'>;
  private readonly resumes: Counter<'outcome'>;
  private readonly filterMatches: Counter<'rule' | 'action' | 'direction'>;
  private readonly firstToken: Histogram;
  private readonly speed: Histogram;

  constructor(options: { processMetrics?: boolean } = {}) {
    const registers = [this.registry];
    if (options.processMetrics) collectDefaultMetrics({ register: this.registry });
    const self = (): MetricsSources => this.sources;
    new Gauge({
      name: 'parley_connections',
      help: 'Open WebSocket connections, by transport.',
      labelNames: ['transport'],
      registers,
      collect() {
        this.reset();
        for (const [transport, count] of self().connections()) this.set({ transport }, count);
      },
    });
    new Gauge({
      name: 'parley_generations_active',
      help: 'Generations holding a model slot.',
      registers,
      collect() {
        this.set(self().activeGenerations());
      },
    });
    new Gauge({
      name: 'parley_generations_queued',
      help: 'Generations waiting for a model slot.',
      registers,
      collect() {
        this.set(self().queuedGenerations());
      },
    });
    new Gauge({
      name: 'parley_replies_detached',
      help: 'Replies whose connection dropped, kept for their owner to resume.',
      registers,
      collect() {
        this.set(self().detachedReplies());
      },
    });
    this.tokens = new Counter({ name: 'parley_tokens_generated_total', help: 'Completion tokens generated.', registers });
    this.generations = new Counter({
      name: 'parley_generations_total',
      help: 'Accepted requests by how they ended: done, cancelled or error.',
      labelNames: ['outcome'],
      registers,
    });
    this.cancels = new Counter({
      name: 'parley_cancels_total',
      help: 'Generations stopped early, by reason (cancel, disconnect, time_limit, shutdown, ...).',
      labelNames: ['reason'],
      registers,
    });
    this.rateLimited = new Counter({
      name: 'parley_rate_limited_total',
      help: 'Requests refused by a rate or size limit, by limiter.',
      labelNames: ['limiter'],
      registers,
    });
    this.errors = new Counter({ name: 'parley_errors_total', help: 'Error frames sent, by error code.', labelNames: ['code'], registers });
    this.resumes = new Counter({ name: 'parley_resumes_total', help: 'Resume requests, by outcome (resumed, unavailable).', labelNames: ['outcome'], registers });
    // Rule labels come from the operator's rules file, a bounded set checked at start.
    this.filterMatches = new Counter({
      name: 'parley_content_filter_matches_total',
      help: 'Content filter matches, by rule label, action (refuse, redact, flag) and direction (input, output).',
      labelNames: ['rule', 'action', 'direction'],
      registers,
    });
    this.firstToken = new Histogram({
      name: 'parley_time_to_first_token_seconds',
      help: 'From leaving the queue to the first token.',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.speed = new Histogram({
      name: 'parley_tokens_per_second',
      help: 'Decode speed of each finished generation, after its first token.',
      buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000],
      registers,
    });
  }

  /** Connects the gauges to the server's live state. */
  bind(sources: MetricsSources): void {
    this.sources = sources;
  }

  generationFinished(outcome: 'done' | 'cancelled' | 'error', stats: { completionTokens: number; firstTokenMs?: number; tokensPerSecond?: number }): void {
    this.generations.inc({ outcome });
    if (stats.completionTokens > 0) this.tokens.inc(stats.completionTokens);
    if (stats.firstTokenMs !== undefined) this.firstToken.observe(stats.firstTokenMs / 1000);
    if (stats.tokensPerSecond !== undefined && stats.tokensPerSecond > 0) this.speed.observe(stats.tokensPerSecond);
  }

  cancelled(reason: string): void {
    this.cancels.inc({ reason });
  }

  limited(limiter: string): void {
    this.rateLimited.inc({ limiter });
  }

  error(code: string): void {
    this.errors.inc({ code });
  }

  resume(outcome: 'resumed' | 'unavailable'): void {
    this.resumes.inc({ outcome });
  }

  filterMatched(rule: string, action: string, direction: string): void {
    this.filterMatches.inc({ rule, action, direction });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  render(): Promise<string> {
    return this.registry.metrics();
  }
}
