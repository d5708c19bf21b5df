import { cpus } from 'node:os';
import { performance } from 'node:perf_hooks';
import { Scheduler } from '../server/chat/Scheduler.js';
import { EngineStopReason, type Engine } from '../server/engine/Engine.js';
import { streamChatCompletion } from './streamChatCompletion.js';
import { BenchClient } from './BenchClient.js';
import type { Benchmark, BenchContext } from './Benchmark.js';
import { chatServerSpec } from './chatServerSpec.js';
import { LlamaServerProcess } from './LlamaServerProcess.js';
import { PROMPTS } from './prompts.js';
import { cell, type Table } from './renderTable.js';
import type { BenchModel } from './resolveModel.js';
import { REPLY_TIME_CAP_MS, type BenchTransport } from './ServerProcess.js';
import { summarize } from './summarize.js';

export const CLIENT_COUNTS = [1, 2, 4, 8] as const;

/** One request of one client. Times are `performance.now()`. */
interface Sample {
  readonly client: number;
  readonly sentAt: number;
  readonly firstAt: number;
  readonly endedAt: number;
  readonly tokens: number;
  /** It waited in the queue: every slot was busy when it arrived. */
  readonly queued: boolean;
  /** Stopped by REPLY_TIME_CAP_MS before its full length. */
  readonly cut: boolean;
}

interface Level {
  readonly clients: number;
  /** One list of samples per round, in round order. */
  readonly rounds: Sample[][];
}

interface Column {
  readonly path: string;
  readonly running?: string;
  /** The llama.cpp binary and the device that computed this column, as the table shows them. */
  readonly ranOn?: string;
  readonly levels: Level[];
  readonly unavailable?: string;
}

/** One column while the benchmark runs: opened once, then asked for one level at a time. */
interface Runner {
  readonly column: Column;
  /** `clients` concurrent clients, each sending the workload's requests one after another. */
  level(clients: number): Promise<Sample[]>;
  close(): Promise<void>;
}

export const concurrency: Benchmark = {
  name: 'concurrency',
  summary: 'N clients (different users) each sending fresh requests: aggregate and per-client tok/s, TTFT p50/p95, slots vs queue',
  async run(context) {
    const tables: Table[] = [];
    const data: Record<string, unknown> = {};
    for (const model of context.models) {
      const columns = await runInterleaved(context, model);
      tables.push(table(context, model, columns));
      data[model.kind] = columns.map((column) => ({
        path: column.path,
        running: column.running,
        ranOn: column.ranOn,
        unavailable: column.unavailable,
        levels: column.levels.map((level) => ({ clients: level.clients, ...figures(level), rounds: level.rounds.map((samples) => roundFigures(level.clients, samples)) })),
      }));
    }
    return { tables, data };
  },
};

/**
 * Opens every column (in process, each transport, /v1, llama-server), then runs each client count
 * in rounds: in every round each column runs the level once, the columns taking turns in an order
 * that rotates from round to round. The machine's speed drifts over minutes (a shared vCPU), and
 * running the columns one after another put that drift into their ratios; interleaved, each
 * round compares columns measured within seconds of each other. Only one column runs at a time.
 */
async function runInterleaved(context: BenchContext, model: BenchModel): Promise<Column[]> {
  const opened: Array<Runner | Column> = [];
  try {
    opened.push(await inProcess(context, model));
    for (const transport of context.transports) opened.push(await throughServer(context, model, transport));
    opened.push(await throughOpenAiApi(context, model));
    if (context.llamaServer !== undefined) opened.push(await throughLlamaServer(model, context.slots, context.llamaServer));
    const runners = opened.filter((entry): entry is Runner => 'level' in entry);
    const rounds = model.workload.concurrencyRounds;
    for (const clients of CLIENT_COUNTS) {
      const levels = runners.map((runner) => {
        const level: Level = { clients, rounds: [] };
        runner.column.levels.push(level);
        return level;
      });
      for (let round = 0; round < rounds; round++) {
        for (let turn = 0; turn < runners.length; turn++) {
          const index = (round + turn) % runners.length;
          const runner = runners[index] as Runner;
          context.progress(`concurrency: ${model.kind}, ${runner.column.path}, ${clients} client${clients === 1 ? '' : 's'}, round ${round + 1} of ${rounds}`);
          levels[index]?.rounds.push(await runner.level(clients));
        }
      }
    }
    return opened.map((entry) => ('level' in entry ? entry.column : entry));
  } finally {
    for (const entry of opened) if ('level' in entry) await entry.close();
  }
}

/**
 * The baseline: N concurrent loops driving the engine through Parley's own Scheduler (the same
 * slots and fair queue the server uses), with no sockets, frames or limiters.
 */
async function inProcess(context: BenchContext, model: BenchModel): Promise<Runner> {
  const engine = await context.engines.get(model, context.slots);
  let conversation = 0;
  await scheduled(new Scheduler({ slots: context.slots, maxQueue: 1, maxQueuedPerUser: 1 }), engine, model, 0, 'conc-warm-up', 'warm-up');
  return {
    column: { path: 'in-process', ranOn: ranOn(engine.build, engine.device), levels: [] },
    async level(clients) {
      const scheduler = new Scheduler({ slots: context.slots, maxQueue: 1024, maxQueuedPerUser: 64 });
      const loop = async (client: number): Promise<Sample[]> => {
        const samples: Sample[] = [];
        for (let request = 0; request < model.workload.requestsPerClient; request++) {
          samples.push(await scheduled(scheduler, engine, model, client, `conc-${++conversation}`, promptFor(client, request, conversation)));
        }
        return samples;
      };
      return (await Promise.all(Array.from({ length: clients }, (_, client) => loop(client)))).flat();
    },
    close: async () => undefined,
  };
}

/** Fresh text for each request: different clients and rounds ask different prompts. */
function promptFor(client: number, request: number, salt: number): string {
  return PROMPTS[(client + request + salt) % PROMPTS.length] ?? 'Hello';
}

/** `native, CPU` or `prebuilt, cuda`: which llama.cpp binary ran, and on what. */
function ranOn(build: string | undefined, device: string | false | undefined): string {
  return `${build ?? 'unknown build'}, ${device === false ? 'CPU' : (device ?? 'unknown device')}`;
}

function scheduled(scheduler: Scheduler, engine: Engine, model: BenchModel, client: number, conversationId: string, text: string): Promise<Sample> {
  return new Promise((resolve, reject) => {
    const sentAt = performance.now();
    let queued = false;
    scheduler.submit({
      userId: `user-${client}`,
      onQueuePosition: () => { queued = true; },
      run: async (slot) => {
        let firstAt: number | undefined;
        try {
          const result = await engine.generate({
            slot, conversationId, history: [], text, maxTokens: model.workload.maxTokens, signal: AbortSignal.timeout(REPLY_TIME_CAP_MS),
            onText: () => { firstAt ??= performance.now(); },
          });
          const endedAt = performance.now();
          // After the scheduler has taken the slot back (when run settles), as a client of the
          // server only hears `done` after that: the client's next request finds the slot free.
          setImmediate(() => resolve({ client, sentAt, firstAt: firstAt ?? endedAt, endedAt, tokens: result.completionTokens, queued, cut: result.stopReason === EngineStopReason.aborted }));
        } catch (error) {
          reject(error instanceof Error ? error : new Error(String(error)));
        }
      },
    });
  });
}

async function throughServer(context: BenchContext, model: BenchModel, transport: BenchTransport): Promise<Runner | Column> {
  const server = await context.servers.getOrReason(chatServerSpec(model, transport, context.slots));
  if ('unavailable' in server) return { path: transport, levels: [], unavailable: server.unavailable };
  // One reply before the clock starts, as in process and in llama-server (which warms up at
  // start): a fresh server's first request pays for JIT compilation of the whole request path.
  const warmUp = await BenchClient.connect(server.wsUrl, server.origin, await server.token('concurrent-warm-up'));
  try {
    await warmUp.send('warm-up').ended;
  } finally {
    warmUp.close();
  }
  const column: { path: string; running?: string; ranOn: string; levels: Level[] } = { path: transport, ranOn: ranOn(server.llamaBuild, server.device), levels: [] };
  let salt = 0;
  return {
    column,
    async level(clients) {
      // Connected before the clock starts: this measures generation, not sign-in and upgrade.
      const sockets = await Promise.all(
        Array.from({ length: clients }, async (_, client) => BenchClient.connect(server.wsUrl, server.origin, await server.token(`concurrent-${client}`))),
      );
      column.running = sockets[0]?.transport;
      salt++;
      try {
        const loop = async (socket: BenchClient, client: number): Promise<Sample[]> => {
          const samples: Sample[] = [];
          for (let request = 0; request < model.workload.requestsPerClient; request++) {
            const trace = await socket.send(promptFor(client, request, salt)).ended;
            if (trace.terminal !== 'done' || trace.endedAt === undefined) throw new Error(`a request ended in ${trace.terminal} ${trace.errorCode ?? ''}`);
            samples.push({ client, sentAt: trace.sentAt, firstAt: trace.firstDeltaAt ?? trace.endedAt, endedAt: trace.endedAt, tokens: trace.completionTokens, queued: trace.queued, cut: trace.stopReason === 'time_limit' });
          }
          return samples;
        };
        return (await Promise.all(sockets.map((socket, client) => loop(socket, client)))).flat();
      } finally {
        for (const socket of sockets) socket.close();
      }
    },
    close: async () => undefined,
  };
}

/**
 * The same requests through Parley's OpenAI-compatible API (`/v1/chat/completions`, streamed), on
 * the first chosen transport, one API key per client: the same client code as the llama-server
 * column, against the same protocol.
 */
async function throughOpenAiApi(context: BenchContext, model: BenchModel): Promise<Runner | Column> {
  const transport = context.transports[0] ?? 'uws';
  const server = await context.servers.getOrReason(chatServerSpec(model, transport, context.slots));
  const path = `/v1 (${transport})`;
  if ('unavailable' in server) return { path, levels: [], unavailable: server.unavailable };
  const keys = await Promise.all(Array.from({ length: Math.max(...CLIENT_COUNTS) }, async (_, client) => apiKeyOf(server.origin, await server.token(`v1-${client}`))));
  const modelId = await modelIdOf(server.origin, keys[0] as string);
  const ask = (client: number, text: string) => streamChatCompletion(server.origin, { text, maxTokens: model.workload.maxTokens, temperature: 0, apiKey: keys[client], model: modelId, signal: AbortSignal.timeout(REPLY_TIME_CAP_MS) });
  await ask(0, 'warm-up');
  let salt = 0;
  return {
    column: { path, running: transport, ranOn: ranOn(server.llamaBuild, server.device), levels: [] },
    async level(clients) {
      salt++;
      const loop = async (client: number): Promise<Sample[]> => {
        const samples: Sample[] = [];
        for (let request = 0; request < model.workload.requestsPerClient; request++) {
          const trace = await ask(client, promptFor(client, request, salt));
          samples.push({ client, sentAt: trace.sentAt, firstAt: trace.firstAt ?? trace.endedAt, endedAt: trace.endedAt, tokens: trace.tokens, queued: false, cut: false });
        }
        return samples;
      };
      return (await Promise.all(Array.from({ length: clients }, (_, client) => loop(client)))).flat();
    },
    close: async () => undefined,
  };
}

/** A new API key of the user behind `accessToken` (POST /api/keys, as the page does). */
async function apiKeyOf(origin: string, accessToken: string): Promise<string> {
  const response = await fetch(`${origin}/api/keys`, { method: 'POST', headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json', origin }, body: JSON.stringify({ name: 'bench' }) });
  if (response.status !== 201) throw new Error(`POST /api/keys answered ${response.status}`);
  return ((await response.json()) as { key: string }).key;
}

async function modelIdOf(origin: string, apiKey: string): Promise<string> {
  const response = await fetch(`${origin}/v1/models`, { headers: { authorization: `Bearer ${apiKey}` } });
  return ((await response.json()) as { data: Array<{ id: string }> }).data[0]?.id ?? '';
}

/**
 * llama.cpp's llama-server with the same model, threads and slots: the usual way to serve
 * several users, and the reference Parley's aggregate is compared with.
 */
async function throughLlamaServer(model: BenchModel, slots: number, binary: string): Promise<Runner | Column> {
  let server: LlamaServerProcess;
  try {
    server = await LlamaServerProcess.start(binary, model, slots);
  } catch (error) {
    return { path: LLAMA_SERVER, levels: [], unavailable: error instanceof Error ? error.message : String(error) };
  }
  let salt = 0;
  return {
    column: { path: LLAMA_SERVER, ranOn: "llama.cpp's own build", levels: [] },
    async level(clients) {
      salt++;
      const loop = async (client: number): Promise<Sample[]> => {
        const samples: Sample[] = [];
        for (let request = 0; request < model.workload.requestsPerClient; request++) {
          const trace = await server.complete(promptFor(client, request, salt), model.workload.maxTokens, AbortSignal.timeout(REPLY_TIME_CAP_MS)).catch((error: unknown) => {
            throw new Error(`llama-server: ${String(error)} (${String((error as { cause?: unknown }).cause)}); its log ends: ${server.stderrTail.trim().slice(-800)}`);
          });
          samples.push({ client, sentAt: trace.sentAt, firstAt: trace.firstAt ?? trace.endedAt, endedAt: trace.endedAt, tokens: trace.tokens, queued: false, cut: false });
        }
        return samples;
      };
      return (await Promise.all(Array.from({ length: clients }, (_, client) => loop(client)))).flat();
    },
    close: () => server.stop(),
  };
}

const LLAMA_SERVER = 'llama-server';

/**
 * One round of a level. Aggregate: every token over the round's wall time (first send to last
 * end). Per client: each client's tokens over its own busy time, averaged.
 */
function roundFigures(clients: number, samples: readonly Sample[]) {
  const start = Math.min(...samples.map((sample) => sample.sentAt));
  const end = Math.max(...samples.map((sample) => sample.endedAt));
  const tokens = samples.reduce((total, sample) => total + sample.tokens, 0);
  const perClient = Array.from({ length: clients }, (_, client) => {
    const mine = samples.filter((sample) => sample.client === client);
    const busyMs = Math.max(...mine.map((sample) => sample.endedAt)) - Math.min(...mine.map((sample) => sample.sentAt));
    return mine.length === 0 ? Number.NaN : (mine.reduce((total, sample) => total + sample.tokens, 0) * 1000) / busyMs;
  });
  return {
    tokens,
    wallMs: samples.length === 0 ? undefined : end - start,
    aggregateTokensPerSecond: samples.length === 0 ? undefined : (tokens * 1000) / (end - start),
    perClientTokensPerSecond: summarize(perClient).mean,
  };
}

/**
 * A level over its rounds: the median round's aggregate and per-client figures, TTFT over every
 * request of every round (it includes any wait in the queue), and request counts summed.
 */
function figures(level: Level) {
  const rounds = level.rounds.map((samples) => roundFigures(level.clients, samples));
  const samples = level.rounds.flat();
  const ttft = summarize(samples.map((sample) => sample.firstAt - sample.sentAt));
  return {
    requests: samples.length,
    tokens: samples.reduce((total, sample) => total + sample.tokens, 0),
    aggregateTokensPerSecond: median(rounds.map((round) => round.aggregateTokensPerSecond)),
    perClientTokensPerSecond: median(rounds.map((round) => round.perClientTokensPerSecond)),
    ttftP50Ms: ttft.p50,
    ttftP95Ms: ttft.p95,
    servedBySlot: samples.filter((sample) => !sample.queued).length,
    queued: samples.filter((sample) => sample.queued).length,
    cutByTimeCap: samples.filter((sample) => sample.cut).length,
  };
}

/**
 * A column's aggregate against the reference's: the median over rounds of the ratio within each
 * round, so each ratio compares runs made a few seconds apart.
 */
function ratioTo(level: Level, reference: Level): number | undefined {
  const ratios = level.rounds.map((samples, round) => {
    const mine = roundFigures(level.clients, samples).aggregateTokensPerSecond;
    const theirs = reference.rounds[round] === undefined ? undefined : roundFigures(reference.clients, reference.rounds[round]).aggregateTokensPerSecond;
    return mine === undefined || theirs === undefined ? undefined : mine / theirs;
  });
  return median(ratios);
}

/** The middle value (the lower of the two middle ones for an even count); undefined when none. */
function median(values: ReadonlyArray<number | undefined>): number | undefined {
  return summarize(values.filter((value): value is number => value !== undefined)).p50;
}

function table(context: BenchContext, model: BenchModel, columns: readonly Column[]): Table {
  const rows: string[][] = [
    ['clients', 'figure', ...columns.map((column) => column.path)],
    ['', 'llama.cpp, device', ...columns.map((column) => column.ranOn ?? '–')],
  ];
  for (const clients of CLIENT_COUNTS) {
    const at = columns.map((column) => {
      const level = column.levels.find((candidate) => candidate.clients === clients);
      return level === undefined ? undefined : figures(level);
    });
    const row = (label: string, show: (entry: ReturnType<typeof figures>) => string) =>
      [String(clients), label, ...at.map((entry, index) => (columns[index]?.unavailable ? 'unavailable' : entry === undefined ? '–' : show(entry)))];
    rows.push(
      row('aggregate tok/s', (entry) => cell(entry.aggregateTokensPerSecond, 0)),
      row('per-client tok/s', (entry) => cell(entry.perClientTokensPerSecond, 0)),
      row('TTFT p50 / p95 ms', (entry) => `${cell(entry.ttftP50Ms, 0)} / ${cell(entry.ttftP95Ms, 0)}`),
      row('slot / queued', (entry) => `${entry.servedBySlot} / ${entry.queued}`),
    );
    const reference = columns.find((column) => column.path === LLAMA_SERVER && column.unavailable === undefined)?.levels.find((level) => level.clients === clients);
    if (reference !== undefined) {
      rows.push([String(clients), 'aggregate vs llama-server', ...columns.map((column) => {
        const level = column.levels.find((candidate) => candidate.clients === clients);
        const ratio = level === undefined ? undefined : ratioTo(level, reference);
        return column.unavailable ? 'unavailable' : ratio === undefined ? '–' : `${ratio.toFixed(2)}×`;
      })]);
    }
  }
  const cut = columns.flatMap((column) => column.levels.map((level) => ({ path: column.path, clients: level.clients, cut: figures(level).cutByTimeCap }))).filter((entry) => entry.cut > 0);
  return {
    title: `Concurrency: ${model.kind} model, ${context.slots} slots, ${model.threads} thread${model.threads === 1 ? '' : 's'}, ${cpus()[0]?.model.trim() ?? 'unknown CPU'}`,
    rows,
    notes: [
      `Each client is a different user sending ${model.workload.requestsPerClient} fresh request${model.workload.requestsPerClient === 1 ? '' : 's'} of ${model.workload.maxTokens} tokens, one at a time. ` +
        `Every column ran each client count ${model.workload.concurrencyRounds} time${model.workload.concurrencyRounds === 1 ? '' : 's'}, the columns taking turns; ` +
        'tok/s are the median round\'s, "vs llama-server" is the median of the ratios within a round, TTFT is over every request. ' +
        '"slot / queued": requests that started at once / that waited for a slot (a `queued` frame). TTFT includes the wait.',
      ...(columns.some((column) => column.path === LLAMA_SERVER)
        ? [`llama-server: ${context.llamaServer ?? ''}, same model, threads and slots (-np), fresh greedy streamed chat completions with the prompt cache off; it has no queue frame, so its slot / queued shows every request as placed.`]
        : []),
      '"llama.cpp, device": the binary each column ran (native: built for this CPU by `npm install` or `npm run build:llama`; prebuilt: node-llama-cpp\'s) and where it computed, as the server logged them.',
      'In process the clients stay in step (each round starts together); through a server they drift apart, so later requests ' +
        'join a batch that is already decoding: compare the TTFT p95 columns with that in mind.',
      ...cut.map((entry) => `${entry.path}, ${entry.clients} clients: ${entry.cut} replies cut short by the ${REPLY_TIME_CAP_MS / 1000} s reply cap (the machine is too slow or too busy)`),
      ...columns.filter((column) => column.unavailable).map((column) => `${column.path}: ${column.unavailable}`),
    ],
  };
}
