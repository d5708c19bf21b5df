/**
 * Batching investigation: N fresh generations at once on one context of N sequences, in process,
 * and how llama.cpp's work is batched underneath.
 *
 *   npx tsx bench/batching.ts [--sequences 1,2,4,8] [--tokens 128] [--threads 2] [--repeat 2]
 *     [--mode engine,engine-nolockstep,sequence,decode,server] [--llama-build prebuilt|native]
 *     [--build-native] [--model file.gguf] [--context 4096] [--json]
 *
 * Modes:
 * - `engine`: Parley's LlamaEngine.generate() on N slots, exactly as the server drives it.
 * - `engine-nolockstep`: the same without its DecodeBarrier: node-llama-cpp schedules decodes on
 *   its own, as the engine did before.
 * - `sequence`: node-llama-cpp's own `LlamaContextSequence.evaluate()` on N sequences, the
 *   library as commonly used (the "node-llama-cpp in-process" column of issue 6).
 * - `decode`: llama_decode alone, one token per sequence per call, no sampling and no JS between
 *   calls: what a decode of a given composition costs in the binary (`--orders` adds descending
 *   orders and orders with a gap; `--series` shows the trend along the run).
 * - `server`: llama.cpp's llama-server at `--server-url`, for a same-session comparison.
 *
 * For each run it reports aggregate tok/s (all generated tokens over the wall time, prompt
 * evaluation included, as llama-server's figure is), TTFT p50/p95, and what each llama_decode
 * carried: a histogram of tokens per decode, with the graph computations llama.cpp splits it into
 * and the time per decode, and where the wall time went (inside llama_decode, inside sampling,
 * neither). It counts by wrapping the native context's initBatch/addToBatch/decodeBatch/
 * sampleToken/setThreads, which every decode and sample of node-llama-cpp 3.21.1 goes through
 * (dist/evaluator/LlamaContext/LlamaContext.js).
 *
 * Default model: the generated 0.5B-shape bench model (ensureModel('bench'), 831 MB, built on
 * first use in about 20 s). Never part of `npm test`. Needs a quiet machine: it prints the load
 * average before each run, and figures taken under load are not comparable. In-process modes run
 * in one process one after another, so with a small model the first mode runs with colder JIT.
 */
import { loadavg } from 'node:os';
import { integerBetween } from './parseArguments.js';
import { Command, InvalidArgumentError } from 'commander';
import type { Llama, LlamaContext, LlamaModel } from 'node-llama-cpp';
import { ensureModel } from '../models/ensureModel.js';
import type { DecodeBarrier } from '../server/engine/DecodeBarrier.js';
import { buildNativeLlama } from '../server/engine/buildNativeLlama.js';
import { LlamaBuild } from '../server/engine/LlamaBuild.js';
import { LlamaEngine } from '../server/engine/LlamaEngine.js';
import { loadLlamaModel } from '../server/engine/loadLlamaModel.js';
import { PROMPTS } from './prompts.js';
import { streamChatCompletion } from './streamChatCompletion.js';

const Mode = { engine: 'engine', engineNoLockstep: 'engine-nolockstep', sequence: 'sequence', decode: 'decode', server: 'server' } as const;
type Mode = (typeof Mode)[keyof typeof Mode];

interface Options {
  sequences: number[];
  tokens: number;
  threads: number;
  context: number;
  repeat: number;
  modes: Mode[];
  model: string | undefined;
  json: boolean;
  flashAttention: boolean;
  build: LlamaBuild;
  buildNative: boolean;
  orders: boolean;
  series: boolean;
  serverUrl: string;
}

/** The benchmark suite's short chat messages; each run starts fresh conversations, so nothing is reused. */
const promptFor = (index: number): string => PROMPTS[index % PROMPTS.length]!;

interface DecodeRecord {
  readonly tokens: number;
  readonly sequences: number;
  /** Graph computations llama.cpp makes of it (see graphComputations). */
  readonly computations: number;
  readonly start: number;
  readonly ms: number;
}

/** The parts of node-llama-cpp's native context (`LlamaContext._ctx`) this probe wraps. */
interface NativeContext {
  initBatch(size: number): void;
  addToBatch(sequenceId: number, firstTokenIndex: number, tokens: Uint32Array, logitIndexes: Uint32Array): Uint32Array;
  decodeBatch(): Promise<void>;
  sampleToken(...args: unknown[]): Promise<unknown>;
  setThreads(threads: number): void;
}

/** Counts what goes into every llama_decode and times decodes and samples. */
class DecodeProbe {
  decodes: DecodeRecord[] = [];
  sampleMs = 0;
  samples = 0;
  /** Thread counts node-llama-cpp set before decodes, with how often. */
  threads = new Map<number, number>();
  private pendingTokens = 0;
  private pendingSequences = 0;
  private pendingOrder: number[] = [];

  constructor(context: LlamaContext) {
    const native = (context as unknown as { _ctx: NativeContext })._ctx;
    const initBatch = native.initBatch.bind(native);
    const addToBatch = native.addToBatch.bind(native);
    const decodeBatch = native.decodeBatch.bind(native);
    const sampleToken = native.sampleToken.bind(native);
    const setThreads = native.setThreads.bind(native);
    // The addon's methods are read-only prototype properties; own properties shadow them.
    const wrap = <K extends keyof NativeContext>(name: K, replacement: NativeContext[K]): void => {
      Object.defineProperty(native, name, { value: replacement, configurable: true, writable: true });
    };
    wrap('initBatch', (size) => {
      this.pendingTokens = 0;
      this.pendingSequences = 0;
      this.pendingOrder = [];
      initBatch(size);
    });
    wrap('addToBatch', (sequenceId, firstTokenIndex, tokens, logitIndexes) => {
      this.pendingTokens += tokens.length;
      this.pendingSequences++;
      this.pendingOrder.push(sequenceId);
      return addToBatch(sequenceId, firstTokenIndex, tokens, logitIndexes);
    });
    wrap('decodeBatch', async () => {
      const tokens = this.pendingTokens;
      const sequences = this.pendingSequences;
      const computations = graphComputations(this.pendingOrder);
      const start = performance.now();
      await decodeBatch();
      this.decodes.push({ tokens, sequences, computations, start, ms: performance.now() - start });
    });
    wrap('setThreads', (threads) => {
      this.threads.set(threads, (this.threads.get(threads) ?? 0) + 1);
      setThreads(threads);
    });
    wrap('sampleToken', async (...args) => {
      const start = performance.now();
      try {
        return await sampleToken(...args);
      } finally {
        this.sampleMs += performance.now() - start;
        this.samples++;
      }
    });
  }

  reset(): void {
    this.decodes = [];
    this.sampleMs = 0;
    this.samples = 0;
    this.threads = new Map();
  }
}

/**
 * How many graph computations (micro-batches) llama.cpp 0.5.0 makes of a batch whose sequences
 * come in `order`, one token each, when the KV cache has a stream per sequence (node-llama-cpp's
 * kv_unified = false): llama_batch_allocr::split_equal(sequential = true) scans the batch once
 * per micro-batch and takes a sequence only if its id is one above the last one taken.
 */
function graphComputations(order: readonly number[]): number {
  const used = new Array<boolean>(order.length).fill(false);
  let computations = 0;
  for (let left = order.length; left > 0; computations++) {
    let last: number | undefined;
    order.forEach((sequence, index) => {
      if (used[index] || (last !== undefined && sequence !== last + 1)) return;
      used[index] = true;
      last = sequence;
      left--;
    });
  }
  return computations;
}

interface Generation {
  readonly ttftMs: number;
  readonly tokens: number;
}

interface RunResult {
  readonly mode: Mode;
  readonly sequences: number;
  readonly wallMs: number;
  readonly tokens: number;
  readonly aggregate: number;
  readonly ttftP50: number;
  readonly ttftP95: number;
  readonly decodeMs: number;
  readonly sampleMs: number;
  readonly samples: number;
  readonly decodes: readonly DecodeRecord[];
  readonly threads: Readonly<Record<number, number>>;
  readonly load: number;
}

/** One run: N generations started together, each of exactly `tokens` tokens (the bench model never ends on its own). */
type Runner = (sequences: number, tokens: number) => Promise<Generation[]>;

interface RunnerHandle {
  readonly run: Runner;
  /** Absent for llama-server, whose decodes happen in another process. */
  readonly probe?: DecodeProbe;
  /** Which llama.cpp binary actually runs (node-llama-cpp's buildType, and its CPU features). */
  readonly binary: string;
  dispose(): Promise<void>;
}

function describeBinary(llama: Llama): string {
  return `${llama.buildType} llama.cpp binary; ${llama.systemInfo.trim()}`;
}

async function engineRunner(modelPath: string, slots: number, options: Options, lockstep: boolean): Promise<RunnerHandle> {
  const { threads, build } = options;
  const engine = await LlamaEngine.load({ modelPath, demo: false, threads, slots, contextSize: options.context, temperature: 0.8, build, log: logLlama });
  // Without its barrier the engine decodes as node-llama-cpp schedules on its own: the engine before lockstep.
  if (!lockstep) (engine as unknown as { barrier?: DecodeBarrier }).barrier?.dispose();
  // The probe reaches the engine's private context: an investigation tool, not an API.
  const probe = new DecodeProbe((engine as unknown as { context: LlamaContext }).context);
  let round = 0;
  const run: Runner = async (sequences, tokens) => {
    round++;
    return Promise.all(Array.from({ length: sequences }, async (_, slot) => {
      const start = performance.now();
      let first: number | undefined;
      const result = await engine.generate({
        slot,
        conversationId: `bench-${round}-${slot}`,
        history: [],
        text: promptFor(slot + round),
        maxTokens: tokens,
        signal: new AbortController().signal,
        onText: () => { first ??= performance.now(); },
      });
      return { ttftMs: (first ?? performance.now()) - start, tokens: result.completionTokens };
    }));
  };
  return { run, probe, binary: describeBinary((engine as unknown as { llama: Llama }).llama), dispose: () => engine.dispose() };
}

async function sequenceRunner(modelPath: string, slots: number, options: Options): Promise<RunnerHandle> {
  const { threads, build } = options;
  const { llama, model } = await loadLlamaModel({ modelPath, threads, build, logger: logLlama });
  const context = await model.createContext({ sequences: slots, contextSize: options.context, threads });
  const probe = new DecodeProbe(context);
  const sequences = Array.from({ length: slots }, () => context.getSequence());
  let round = 0;
  const run: Runner = async (count, tokens) => {
    round++;
    return Promise.all(sequences.slice(0, count).map(async (sequence, index) => {
      await sequence.clearHistory();
      const start = performance.now();
      let first: number | undefined;
      let generated = 0;
      const prompt = chatMlPrompt(model, promptFor(index + round));
      for await (const token of sequence.evaluate(prompt, { temperature: 0.8 })) {
        void token;
        first ??= performance.now();
        if (++generated >= tokens) break;
      }
      return { ttftMs: (first ?? performance.now()) - start, tokens: generated };
    }));
  };
  return { run, probe, binary: describeBinary(llama), dispose: () => model.dispose() };
}

/**
 * llama.cpp's own server, for a same-session comparison: fresh streaming chat requests (prompt
 * cache off) to /v1/chat/completions. Start it with the same model, threads and slots, e.g.
 * `llama-server -m model.gguf -t 2 -tb 2 -np 8 -c 32768 --port 8080`.
 */
function serverRunner(options: Options): RunnerHandle {
  let round = 0;
  const run: Runner = async (sequences, tokens) => {
    round++;
    return Promise.all(Array.from({ length: sequences }, async (_, slot) => {
      const trace = await streamChatCompletion(options.serverUrl, { text: promptFor(slot + round), maxTokens: tokens, temperature: 0.8 });
      return { ttftMs: (trace.firstAt ?? trace.endedAt) - trace.sentAt, tokens: trace.tokens };
    }));
  };
  return { run, binary: `llama-server at ${options.serverUrl}`, dispose: async () => undefined };
}

function logLlama(level: string, message: string): void {
  if (level === 'warn' || level === 'error' || level === 'fatal') console.error(`[llama.cpp ${level}] ${message}`);
}

function chatMlPrompt(model: LlamaModel, text: string): ReturnType<LlamaModel['tokenize']> {
  return model.tokenize(`<|im_start|>user\n${text}<|im_end|>\n<|im_start|>assistant\n`, true);
}

async function measure(mode: Mode, modelPath: string, options: Options): Promise<RunResult[]> {
  const slots = Math.max(...options.sequences);
  const runner = mode === Mode.sequence
    ? await sequenceRunner(modelPath, slots, options)
    : mode === Mode.server
      ? serverRunner(options)
      : await engineRunner(modelPath, slots, options, mode === Mode.engine);
  const results: RunResult[] = [];
  if (!options.json) console.log(`\n${mode}: ${runner.binary}`);
  try {
    // Warm up: page the weights in and let the first decode's allocations happen outside the figures.
    await runner.run(1, 8);
    for (const sequences of options.sequences) {
      for (let attempt = 0; attempt < options.repeat; attempt++) {
        const load = loadavg()[0] ?? 0;
        runner.probe?.reset();
        const start = performance.now();
        const generations = await runner.run(sequences, options.tokens);
        const wallMs = performance.now() - start;
        const tokens = generations.reduce((sum, generation) => sum + generation.tokens, 0);
        const ttfts = generations.map((generation) => generation.ttftMs);
        const result: RunResult = {
          mode, sequences, wallMs, tokens,
          aggregate: tokens / (wallMs / 1000),
          ttftP50: percentile(ttfts, 0.5),
          ttftP95: percentile(ttfts, 0.95),
          decodeMs: runner.probe?.decodes.reduce((sum, decode) => sum + decode.ms, 0) ?? 0,
          sampleMs: runner.probe?.sampleMs ?? 0,
          samples: runner.probe?.samples ?? 0,
          decodes: runner.probe?.decodes ?? [],
          threads: Object.fromEntries(runner.probe?.threads ?? []),
          load,
        };
        results.push(result);
        if (!options.json) printRun(result);
      }
    }
  } finally {
    await runner.dispose();
  }
  return results;
}

/**
 * llama_decode alone, no sampling and no JS scheduling: `tokens` calls of one token for each listed
 * sequence, in the listed order, after a fresh prefill of every sequence with the first prompt.
 * Shows what a decode of a given composition costs in this binary, at the same KV lengths as a run.
 */
async function measureDecodes(modelPath: string, options: Options): Promise<void> {
  const slots = Math.max(4, ...options.sequences);
  const { llama, model } = await loadLlamaModel({ modelPath, threads: options.threads, build: options.build, logger: logLlama });
  const context = await model.createContext({ sequences: slots, contextSize: options.context, threads: options.threads, flashAttention: options.flashAttention });
  const native = (context as unknown as { _ctx: NativeContext & { disposeSequence(sequenceId: number): void } })._ctx;
  native.setThreads(options.threads);
  const positions = new Array<number>(slots).fill(0);
  const prompt = Uint32Array.from(chatMlPrompt(model, promptFor(0)));
  const decode = async (order: readonly number[], tokensEach: number): Promise<number> => {
    native.initBatch(order.length * tokensEach);
    for (const sequence of order) {
      const tokens = tokensEach === prompt.length ? prompt : Uint32Array.from({ length: tokensEach }, (_, index) => prompt[(positions[sequence]! + index) % prompt.length]!);
      native.addToBatch(sequence, positions[sequence]!, tokens, Uint32Array.of(tokensEach - 1));
      positions[sequence]! += tokensEach;
    }
    const start = performance.now();
    await native.decodeBatch();
    return performance.now() - start;
  };
  // Every order starts from the same state: each sequence holds just the prompt.
  const prefill = async (): Promise<void> => {
    for (let sequence = 0; sequence < slots; sequence++) {
      native.disposeSequence(sequence);
      positions[sequence] = 0;
      await decode([sequence], prompt.length);
    }
  };
  try {
    const orders: Array<[string, number[]]> = [];
    for (const count of options.sequences) {
      const ascending = Array.from({ length: count }, (_, index) => index);
      orders.push([`${count} ascending`, ascending]);
      if (options.orders && count > 1) orders.push([`${count} descending`, [...ascending].reverse()]);
      if (options.orders && count > 1 && count < slots) orders.push([`${count} ascending, with a gap`, ascending.map((sequence, index) => (index === count - 1 ? sequence + 1 : sequence))]);
    }
    console.log(`\nllama_decode alone, ${options.threads} threads, flash attention ${options.flashAttention ? 'on' : 'off'}, load ${(loadavg()[0] ?? 0).toFixed(2)}; ${describeBinary(llama)}`);
    console.log(`| sequences in the batch (order) | graph computations | ms per decode, median of ${options.tokens} | mean | ms per token (median) |`);
    console.log('| --- | --- | --- | --- | --- |');
    for (const [label, order] of orders) {
      await prefill();
      const times: number[] = [];
      for (let round = 0; round < options.tokens; round++) times.push(await decode(order, 1));
      const median = percentile(times, 0.5);
      const mean = times.reduce((sum, time) => sum + time, 0) / times.length;
      console.log(`| ${label}: [${order.join(', ')}] | ${graphComputations(order)} | ${median.toFixed(1)} | ${mean.toFixed(1)} | ${(median / order.length).toFixed(1)} |`);
      if (options.series) console.log(`  by eighths of the run (median ms): ${eighths(times).map((time) => time.toFixed(1)).join(', ')}`);
    }
  } finally {
    await model.dispose();
  }
}

function printRun(result: RunResult): void {
  const generation = result.decodes.filter((decode) => decode.tokens === decode.sequences);
  const prompt = result.decodes.filter((decode) => decode.tokens !== decode.sequences);
  const generationTokens = generation.reduce((sum, decode) => sum + decode.tokens, 0);
  console.log(
    `\n${result.mode} × ${result.sequences}: ${result.aggregate.toFixed(1)} tok/s aggregate (${result.tokens} tokens in ${(result.wallMs / 1000).toFixed(2)} s), ` +
    `TTFT p50 ${result.ttftP50.toFixed(0)} ms p95 ${result.ttftP95.toFixed(0)} ms, load ${result.load.toFixed(2)}`,
  );
  console.log(
    `  ${result.decodes.length} decodes (${prompt.length} with prompt tokens), ${generation.length} generation decodes carrying ` +
    `${(generationTokens / Math.max(1, generation.length)).toFixed(2)} tokens each on average`,
  );
  const idleMs = result.wallMs - result.decodeMs;
  console.log(
    `  wall ${result.wallMs.toFixed(0)} ms = llama_decode ${result.decodeMs.toFixed(0)} ms (${pct(result.decodeMs, result.wallMs)}) + outside decode ${idleMs.toFixed(0)} ms (${pct(idleMs, result.wallMs)}); ` +
    `${result.samples} samples took ${result.sampleMs.toFixed(0)} ms in total (${(result.sampleMs / Math.max(1, result.samples)).toFixed(2)} ms each, overlapping); ` +
    `threads set before decodes: ${JSON.stringify(result.threads)}`,
  );
  console.log('  tokens/decode   graph computations   decodes   mean ms   median ms   ms/token');
  const buckets = new Map<string, DecodeRecord[]>();
  for (const decode of generation) {
    const key = `${decode.tokens}/${decode.computations}`;
    buckets.set(key, [...(buckets.get(key) ?? []), decode]);
  }
  const sorted = [...buckets.values()].sort((a, b) => a[0]!.tokens - b[0]!.tokens || a[0]!.computations - b[0]!.computations);
  for (const decodes of sorted) {
    const { tokens, computations } = decodes[0]!;
    const mean = decodes.reduce((sum, decode) => sum + decode.ms, 0) / decodes.length;
    const median = percentile(decodes.map((decode) => decode.ms), 0.5);
    console.log(`  ${String(tokens).padStart(13)}   ${String(computations).padStart(18)}   ${String(decodes.length).padStart(7)}   ${mean.toFixed(1).padStart(7)}   ${median.toFixed(1).padStart(9)}   ${(mean / tokens).toFixed(1).padStart(8)}`);
  }
  if (prompt.length > 0) {
    const mean = prompt.reduce((sum, decode) => sum + decode.ms, 0) / prompt.length;
    const tokens = prompt.reduce((sum, decode) => sum + decode.tokens, 0) / prompt.length;
    console.log(`  prompt decodes: ${prompt.length}, ${tokens.toFixed(1)} tokens and ${mean.toFixed(1)} ms each on average`);
  }
}

function printSummary(results: readonly RunResult[]): void {
  console.log('\n| mode | concurrent | aggregate tok/s | TTFT p50 ms | TTFT p95 ms | tokens/generation decode | load |');
  console.log('| --- | --- | --- | --- | --- | --- | --- |');
  for (const result of results) {
    const generation = result.decodes.filter((decode) => decode.tokens === decode.sequences);
    const perDecode = generation.reduce((sum, decode) => sum + decode.tokens, 0) / Math.max(1, generation.length);
    console.log(`| ${result.mode} | ${result.sequences} | ${result.aggregate.toFixed(1)} | ${result.ttftP50.toFixed(0)} | ${result.ttftP95.toFixed(0)} | ${perDecode.toFixed(2)} | ${result.load.toFixed(2)} |`);
  }
}

function percentile(values: readonly number[], fraction: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(fraction * sorted.length) - 1))] ?? Number.NaN;
}

/** Medians of the eighths of a series: how a figure moves as the KV cache fills. */
function eighths(values: readonly number[]): number[] {
  const size = Math.max(1, Math.floor(values.length / 8));
  return Array.from({ length: Math.ceil(values.length / size) }, (_, index) => percentile(values.slice(index * size, (index + 1) * size), 0.5));
}

function pct(part: number, whole: number): string {
  return `${((100 * part) / whole).toFixed(0)}%`;
}

const positiveInt = integerBetween(1, Number.MAX_SAFE_INTEGER);

function parseOptions(argv: readonly string[]): Options {
  const program = new Command()
    .option('--sequences <list>', 'concurrent generations, comma-separated', '1,2,4,8')
    .option('--tokens <n>', 'tokens per generation', positiveInt, 128)
    .option('--threads <n>', 'llama.cpp threads', positiveInt, 2)
    .option('--context <n>', 'context size per sequence', positiveInt, 4096)
    .option('--repeat <n>', 'runs per concurrency', positiveInt, 2)
    .option('--mode <list>', 'engine and/or sequence, comma-separated', 'engine')
    .option('--model <path>', 'a GGUF file instead of the generated bench model')
    .option('--json', 'print the results as JSON instead of tables', false)
    .option('--flash-attention', 'decode mode: create the context with flash attention', false)
    .option('--llama-build <build>', 'prebuilt, or native (compiled on this machine; see --build-native)', LlamaBuild.prebuilt)
    .option('--server-url <url>', 'server mode: the llama-server to measure', 'http://127.0.0.1:8080')
    .option('--series', 'decode mode: print how decode time moves along the run', false)
    .option('--orders', 'decode mode: also time descending orders and orders with a gap', false)
    .option('--build-native', 'first compile llama.cpp for this CPU (minutes; needs cmake and a C++ compiler)', false)
    .parse(argv);
  const raw = program.opts<{ sequences: string; tokens: number; threads: number; context: number; repeat: number; mode: string; model?: string; json: boolean; flashAttention: boolean; llamaBuild: string; buildNative: boolean; orders: boolean; series: boolean; serverUrl: string }>();
  if (raw.llamaBuild !== LlamaBuild.prebuilt && raw.llamaBuild !== LlamaBuild.native) throw new InvalidArgumentError(`unknown build ${raw.llamaBuild}`);
  const modes = raw.mode.split(',').map((mode) => {
    const known: readonly string[] = Object.values(Mode);
    if (!known.includes(mode)) throw new InvalidArgumentError(`unknown mode ${mode}`);
    return mode as Mode;
  });
  return {
    sequences: raw.sequences.split(',').map(positiveInt),
    tokens: raw.tokens,
    threads: raw.threads,
    context: raw.context,
    repeat: raw.repeat,
    modes,
    model: raw.model,
    json: raw.json,
    flashAttention: raw.flashAttention,
    build: raw.llamaBuild,
    buildNative: raw.buildNative,
    orders: raw.orders,
    series: raw.series,
    serverUrl: raw.serverUrl,
  };
}

const options = parseOptions(process.argv);
if (options.buildNative) {
  const { seconds, systemInfo } = await buildNativeLlama();
  console.error(`native llama.cpp built in ${seconds.toFixed(0)} s: ${systemInfo}`);
}
const modelPath = options.model ?? (options.modes.every((mode) => mode === Mode.server) ? '' : (await ensureModel('bench', { logger: (message) => console.error(message) })).path);
const results: RunResult[] = [];
for (const mode of options.modes) {
  if (mode === Mode.decode) await measureDecodes(modelPath, options);
  else results.push(...(await measure(mode, modelPath, options)));
}
if (options.json) console.log(JSON.stringify(results, null, 2));
else printSummary(results);
