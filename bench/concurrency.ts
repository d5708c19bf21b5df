import { cpus } from 'node:os';
import { performance } from 'node:perf_hooks';
import { Scheduler } from '../server/chat/Scheduler.js';
import { EngineStopReason, type Engine } from '../server/engine/Engine.js';
import { streamChatCompletion } from './streamChatCompletion.js';
import { BenchClient } from './BenchClient.js';
import type { Benchmark, BenchContext } from './Benchmark.js';
import { chatServerSpec } from './chatServerSpec.js';
import { compareColumns } from './compareColumns.js';
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
  readonly samples: readonly Sample[];
}

interface Column {
  readonly path: string;
  readonly running?: string;
  /** The llama.cpp binary and the device that computed this column, as the table shows them. */
  readonly ranOn?: string;
  readonly levels: readonly Level[];
  readonly unavailable?: string;
}

export const concurrency: Benchmark = {
  name: 'concurrency',
  summary: 'N clients (different users) each sending fresh requests: aggregate and per-client tok/s, TTFT p50/p95, slots vs queue',
  run: (context) => compareColumns<Column>(context, {
    inProcess,
    throughServer,
    extra: async (context, model) => [
      await throughOpenAiApi(context, model),
      ...(context.llamaServer === undefined ? [] : [await throughLlamaServer(context, model, context.llamaServer)]),
    ],
    table,
    data: (column) => ({
      path: column.path,
      running: column.running,
      ranOn: column.ranOn,
      unavailable: column.unavailable,
      levels: column.levels.map((level) => ({ clients: level.clients, ...figures(level) })),
    }),
  }),
};

/**
 * The baseline: N concurrent loops driving the engine through Parley's own Scheduler (the same
 * slots and fair queue the server uses), with no sockets, frames or limiters.
 */
async function inProcess(context: BenchContext, model: BenchModel): Promise<Column> {
  const engine = await context.engines.get(model, context.slots);
  const levels: Level[] = [];
  let conversation = 0;
  await scheduled(new Scheduler({ slots: context.slots, maxQueue: 1, maxQueuedPerUser: 1 }), engine, model, 0, 'conc-warm-up', 'warm-up');
  for (const clients of CLIENT_COUNTS) {
    context.progress(`concurrency: ${model.kind}, in-process, ${clients} client${clients === 1 ? '' : 's'}`);
    const scheduler = new Scheduler({ slots: context.slots, maxQueue: 1024, maxQueuedPerUser: 64 });
    const loop = async (client: number): Promise<Sample[]> => {
      const samples: Sample[] = [];
      for (let request = 0; request < model.workload.requestsPerClient; request++) {
        samples.push(await scheduled(scheduler, engine, model, client, `conc-${++conversation}`, PROMPTS[(client + request) % PROMPTS.length] ?? 'Hello'));
      }
      return samples;
    };
    levels.push({ clients, samples: (await Promise.all(Array.from({ length: clients }, (_, client) => loop(client)))).flat() });
  }
  return { path: 'in-process', ranOn: ranOn(engine.build, engine.device), levels };
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

async function throughServer(context: BenchContext, model: BenchModel, transport: BenchTransport): Promise<Column> {
  const server = await context.servers.getOrReason(chatServerSpec(model, transport, context.slots));
  if ('unavailable' in server) return { path: transport, levels: [], unavailable: server.unavailable };
  const levels: Level[] = [];
  let running: string | undefined;
  // One reply before the clock starts, as in process and in llama-server (which warms up at
  // start): a fresh server's first request pays for JIT compilation of the whole request path.
  const warmUp = await BenchClient.connect(server.wsUrl, server.origin, await server.token('concurrent-warm-up'));
  try {
    await warmUp.send('warm-up').ended;
  } finally {
    warmUp.close();
  }
  for (const clients of CLIENT_COUNTS) {
    context.progress(`concurrency: ${model.kind}, ${transport}, ${clients} client${clients === 1 ? '' : 's'}`);
    // Connected before the clock starts: this measures generation, not sign-in and upgrade.
    const sockets = await Promise.all(
      Array.from({ length: clients }, async (_, client) => BenchClient.connect(server.wsUrl, server.origin, await server.token(`concurrent-${client}`))),
    );
    running = sockets[0]?.transport;
    try {
      const loop = async (socket: BenchClient, client: number): Promise<Sample[]> => {
        const samples: Sample[] = [];
        for (let request = 0; request < model.workload.requestsPerClient; request++) {
          const trace = await socket.send(PROMPTS[(client + request) % PROMPTS.length] ?? 'Hello').ended;
          if (trace.terminal !== 'done' || trace.endedAt === undefined) throw new Error(`a request ended in ${trace.terminal} ${trace.errorCode ?? ''}`);
          samples.push({ client, sentAt: trace.sentAt, firstAt: trace.firstDeltaAt ?? trace.endedAt, endedAt: trace.endedAt, tokens: trace.completionTokens, queued: trace.queued, cut: trace.stopReason === 'time_limit' });
        }
        return samples;
      };
      levels.push({ clients, samples: (await Promise.all(sockets.map((socket, client) => loop(socket, client)))).flat() });
    } finally {
      for (const socket of sockets) socket.close();
    }
  }
  return { path: transport, running, ranOn: ranOn(server.llamaBuild, server.device), levels };
}

/**
 * The same requests through Parley's OpenAI-compatible API (`/v1/chat/completions`, streamed), on
 * the first chosen transport, one API key per client: the same client code as the llama-server
 * column, against the same protocol.
 */
async function throughOpenAiApi(context: BenchContext, model: BenchModel): Promise<Column> {
  const transport = context.transports[0] ?? 'uws';
  const server = await context.servers.getOrReason(chatServerSpec(model, transport, context.slots));
  const path = `/v1 (${transport})`;
  if ('unavailable' in server) return { path, levels: [], unavailable: server.unavailable };
  const keys = await Promise.all(Array.from({ length: Math.max(...CLIENT_COUNTS) }, async (_, client) => apiKeyOf(server.origin, await server.token(`v1-${client}`))));
  const modelId = await modelIdOf(server.origin, keys[0] as string);
  const ask = (client: number, text: string) => streamChatCompletion(server.origin, { text, maxTokens: model.workload.maxTokens, temperature: 0, apiKey: keys[client], model: modelId, signal: AbortSignal.timeout(REPLY_TIME_CAP_MS) });
  await ask(0, 'warm-up');
  const levels: Level[] = [];
  for (const clients of CLIENT_COUNTS) {
    context.progress(`concurrency: ${model.kind}, ${path}, ${clients} client${clients === 1 ? '' : 's'}`);
    const loop = async (client: number): Promise<Sample[]> => {
      const samples: Sample[] = [];
      for (let request = 0; request < model.workload.requestsPerClient; request++) {
        const trace = await ask(client, PROMPTS[(client + request) % PROMPTS.length] ?? 'Hello');
        samples.push({ client, sentAt: trace.sentAt, firstAt: trace.firstAt ?? trace.endedAt, endedAt: trace.endedAt, tokens: trace.tokens, queued: false, cut: false });
      }
      return samples;
    };
    levels.push({ clients, samples: (await Promise.all(Array.from({ length: clients }, (_, client) => loop(client)))).flat() });
  }
  return { path, running: transport, ranOn: ranOn(server.llamaBuild, server.device), levels };
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
async function throughLlamaServer(context: BenchContext, model: BenchModel, binary: string): Promise<Column> {
  let server: LlamaServerProcess;
  try {
    server = await LlamaServerProcess.start(binary, model, context.slots);
  } catch (error) {
    return { path: LLAMA_SERVER, levels: [], unavailable: error instanceof Error ? error.message : String(error) };
  }
  try {
    const levels: Level[] = [];
    let conversation = 0;
    for (const clients of CLIENT_COUNTS) {
      context.progress(`concurrency: ${model.kind}, llama-server, ${clients} client${clients === 1 ? '' : 's'}`);
      const loop = async (client: number): Promise<Sample[]> => {
        const samples: Sample[] = [];
        for (let request = 0; request < model.workload.requestsPerClient; request++) {
          const text = PROMPTS[(client + request + conversation++) % PROMPTS.length] ?? 'Hello';
          const trace = await server.complete(text, model.workload.maxTokens, AbortSignal.timeout(REPLY_TIME_CAP_MS));
          samples.push({ client, sentAt: trace.sentAt, firstAt: trace.firstAt ?? trace.endedAt, endedAt: trace.endedAt, tokens: trace.tokens, queued: false, cut: false });
        }
        return samples;
      };
      levels.push({ clients, samples: (await Promise.all(Array.from({ length: clients }, (_, client) => loop(client)))).flat() });
    }
    return { path: LLAMA_SERVER, ranOn: "llama.cpp's own build", levels };
  } finally {
    await server.stop();
  }
}

const LLAMA_SERVER = 'llama-server';

/**
 * Aggregate: every token over the level's wall time (first send to last end). Per client: each
 * client's tokens over its own busy time, averaged. TTFT runs from the request to its first
 * text, so it includes any wait in the queue.
 */
function figures(level: Level) {
  const { samples } = level;
  const start = Math.min(...samples.map((sample) => sample.sentAt));
  const end = Math.max(...samples.map((sample) => sample.endedAt));
  const tokens = samples.reduce((total, sample) => total + sample.tokens, 0);
  const perClient = Array.from({ length: level.clients }, (_, client) => {
    const mine = samples.filter((sample) => sample.client === client);
    const busyMs = Math.max(...mine.map((sample) => sample.endedAt)) - Math.min(...mine.map((sample) => sample.sentAt));
    return mine.length === 0 ? Number.NaN : (mine.reduce((total, sample) => total + sample.tokens, 0) * 1000) / busyMs;
  });
  const ttft = summarize(samples.map((sample) => sample.firstAt - sample.sentAt));
  return {
    requests: samples.length,
    tokens,
    wallMs: samples.length === 0 ? undefined : end - start,
    aggregateTokensPerSecond: samples.length === 0 ? undefined : (tokens * 1000) / (end - start),
    perClientTokensPerSecond: summarize(perClient).mean,
    ttftP50Ms: ttft.p50,
    ttftP95Ms: ttft.p95,
    servedBySlot: samples.filter((sample) => !sample.queued).length,
    queued: samples.filter((sample) => sample.queued).length,
    cutByTimeCap: samples.filter((sample) => sample.cut).length,
  };
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
    const reference = at[columns.findIndex((column) => column.path === LLAMA_SERVER)]?.aggregateTokensPerSecond;
    if (reference !== undefined) {
      rows.push(row('aggregate vs llama-server', (entry) => (entry.aggregateTokensPerSecond === undefined ? '–' : `${(entry.aggregateTokensPerSecond / reference).toFixed(2)}×`)));
    }
  }
  const cut = columns.flatMap((column) => column.levels.map((level) => ({ path: column.path, clients: level.clients, cut: figures(level).cutByTimeCap }))).filter((entry) => entry.cut > 0);
  return {
    title: `Concurrency: ${model.kind} model, ${context.slots} slots, ${model.threads} thread${model.threads === 1 ? '' : 's'}, ${cpus()[0]?.model.trim() ?? 'unknown CPU'}`,
    rows,
    notes: [
      `Each client is a different user sending ${model.workload.requestsPerClient} fresh request${model.workload.requestsPerClient === 1 ? '' : 's'} of ${model.workload.maxTokens} tokens, one at a time. ` +
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
