import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { prepareEngineKey } from '../scripts/cluster/prepareEngineKey.js';
import type { Benchmark, BenchContext } from './Benchmark.js';
import { chatServerSpec } from './chatServerSpec.js';
import { LlamaServerProcess } from './LlamaServerProcess.js';
import { PROMPTS } from './prompts.js';
import { cell, type Table } from './renderTable.js';
import type { BenchModel } from './resolveModel.js';
import { REPLY_TIME_CAP_MS, type ServerProcess, type ServerSpec } from './ServerProcess.js';
import { streamChatCompletion } from './streamChatCompletion.js';
import { summarize } from './summarize.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const CLIENT_COUNTS = [1, 4, 8] as const;
/** The gateways' names for the engine-node pool and for llama-server. */
const NODE_MODEL = 'node';
const LLAMA_MODEL = 'llama';

/** One streamed /v1 request. Times are `performance.now()`. */
interface Sample {
  readonly sentAt: number;
  readonly firstAt: number;
  readonly endedAt: number;
  readonly tokens: number;
  /** Why it failed (no tokens counted), if it did. */
  readonly failed?: string;
}

/** One path the requests take: a target per client (origin, key, model). */
interface Column {
  readonly path: string;
  /** Where client `i` sends its requests. */
  readonly target: (client: number) => { readonly origin: string; readonly apiKey?: string; readonly model?: string; readonly cachePrompt?: boolean };
  /** Per client count, one list of samples per round. */
  readonly levels: Map<number, Sample[][]>;
}

/** A ratio of two columns' aggregate tok/s, reported per client count. */
interface Ratio {
  readonly label: string;
  readonly numerator: string;
  readonly denominator: string;
}

const ENGINE = 'engine node';
const GATEWAY = 'gateway → node';
const GATEWAY_TWO_NODES = 'gateway → 2 nodes';
const TWO_GATEWAYS = '2 gateways → 2 nodes';
const LLAMA_SERVER = 'llama-server';
const GATEWAY_LLAMA = 'gateway → llama-server';

const RATIOS: readonly Ratio[] = [
  { label: 'gateway overhead: gateway → node / node', numerator: GATEWAY, denominator: ENGINE },
  { label: '2 gateways / 1 (both over 2 nodes)', numerator: TWO_GATEWAYS, denominator: GATEWAY_TWO_NODES },
  { label: '2 engine nodes / 1 (through 1 gateway)', numerator: GATEWAY_TWO_NODES, denominator: GATEWAY },
  { label: 'gateway → llama-server / llama-server', numerator: GATEWAY_LLAMA, denominator: LLAMA_SERVER },
];

/**
 * The scale-out layout's cost and gain, all through streamed `/v1/chat/completions` with N
 * concurrent clients (one API key each), aggregate tok/s:
 * (a) a gateway (`--upstream`) in front of one engine node (`--role engine`) against that node
 *     alone: what the extra hop costs;
 * (b) one gateway against two over the same two engine nodes (clients split between them);
 * (c) one engine node against two behind one gateway;
 * and, where llama-server is built, a gateway in front of llama-server against llama-server alone.
 * Every column runs each client count once per round, the columns taking turns in an order that
 * rotates each round; ratios are the median of the ratios within a round. Every process is a
 * child on 127.0.0.1; the engine nodes share one API key, made as an operator would
 * (scripts/cluster/prepareEngineKey.ts).
 */
export const gateway: Benchmark = {
  name: 'gateway',
  summary: 'gateways and engine nodes: a gateway in front of a node vs the node alone, 1 vs 2 gateways, 1 vs 2 nodes (streamed /v1, aggregate tok/s)',
  async run(context) {
    const tables: Table[] = [];
    const data: Record<string, unknown> = {};
    for (const model of context.models) {
      const { columns, rounds } = await measure(context, model);
      tables.push(...render(context, model, columns, rounds));
      data[model.kind] = columns.map((column) => ({
        path: column.path,
        levels: [...column.levels].map(([clients, samples]) => ({ clients, rounds: samples.map((round) => roundFigures(round)), failed: samples.flat().flatMap((sample) => (sample.failed === undefined ? [] : [sample.failed])) })),
      }));
    }
    return { tables, data };
  },
};

async function measure(context: BenchContext, model: BenchModel): Promise<{ columns: Column[]; rounds: number }> {
  const transport = context.transports[0] ?? 'uws';
  const base = chatServerSpec(model, transport, context.slots);
  const dirs = await Promise.all([1, 2, 3].map(() => mkdtemp(join(tmpdir(), 'parley-bench-gateway-'))));
  const [firstDir, secondDir, keyDir] = dirs as [string, string, string];
  const started: ServerProcess[] = [];
  let llamaServer: LlamaServerProcess | undefined;
  const fresh = async (spec: ServerSpec) => {
    const server = await context.servers.fresh(spec);
    started.push(server);
    return server;
  };
  try {
    context.progress(`gateway: ${model.kind}, making the engine nodes' API key`);
    const engineKey = await prepareEngineKey(ROOT, [firstDir, secondDir], join(keyDir, 'engine.key'));
    context.progress(`gateway: ${model.kind}, starting 2 engine nodes${context.llamaServer === undefined ? '' : ' and llama-server'}`);
    const [first, second] = await Promise.all([firstDir, secondDir].map((dataDir) => fresh({ ...base, dataDir, extraArgs: ['--role', 'engine'] })));
    if (first === undefined || second === undefined) throw new Error('unreachable: two nodes started');
    if (context.llamaServer !== undefined) llamaServer = await LlamaServerProcess.start(context.llamaServer, model, context.slots);
    const gatewaySpec = (nodes: readonly ServerProcess[], withLlama: boolean): ServerSpec => ({
      ...base,
      modelPath: undefined,
      extraArgs: [
        ...nodes.flatMap((node) => ['--upstream', `${NODE_MODEL}=${node.origin}`]),
        ...(withLlama && llamaServer !== undefined ? ['--upstream', `${LLAMA_MODEL}=${llamaServer.origin}`] : []),
      ],
      env: { PARLEY_UPSTREAM_KEYS: `${NODE_MODEL}=${engineKey}` },
    });
    context.progress(`gateway: ${model.kind}, starting 3 gateways`);
    const [oneNode, twoNodes, twoNodesToo] = await Promise.all([fresh(gatewaySpec([first], true)), fresh(gatewaySpec([first, second], false)), fresh(gatewaySpec([first, second], false))]);
    if (oneNode === undefined || twoNodes === undefined || twoNodesToo === undefined) throw new Error('unreachable: three gateways started');

    const most = Math.max(...CLIENT_COUNTS);
    const keysOf = (server: ServerProcess, count: number) => Promise.all(Array.from({ length: count }, async (_, client) => apiKeyOf(server, `gateway-bench-${client}`)));
    // Each client its own user and key, on the server it talks to (the engine node's keys for the direct column).
    const [nodeKeys, oneNodeKeys, twoNodesKeys, twoNodesTooKeys] = await Promise.all([keysOf(first, most), keysOf(oneNode, most), keysOf(twoNodes, most), keysOf(twoNodesToo, Math.ceil(most / 2))]);
    const nodeModel = await modelIdOf(first.origin, nodeKeys[0] as string);
    const key = (keys: readonly string[], client: number) => keys[client % keys.length] as string;
    const columns: Column[] = [
      { path: ENGINE, target: (client) => ({ origin: first.origin, apiKey: key(nodeKeys, client), model: nodeModel }), levels: new Map() },
      { path: GATEWAY, target: (client) => ({ origin: oneNode.origin, apiKey: key(oneNodeKeys, client), model: NODE_MODEL }), levels: new Map() },
      { path: GATEWAY_TWO_NODES, target: (client) => ({ origin: twoNodes.origin, apiKey: key(twoNodesKeys, client), model: NODE_MODEL }), levels: new Map() },
      {
        path: TWO_GATEWAYS,
        target: (client) => (client % 2 === 0
          ? { origin: twoNodes.origin, apiKey: key(twoNodesKeys, client), model: NODE_MODEL }
          : { origin: twoNodesToo.origin, apiKey: key(twoNodesTooKeys, Math.floor(client / 2)), model: NODE_MODEL }),
        levels: new Map(),
      },
    ];
    if (llamaServer !== undefined) {
      const origin = llamaServer.origin;
      columns.push(
        // With its prompt cache on, as it is for the requests a gateway sends it (they carry no cache_prompt).
        { path: LLAMA_SERVER, target: () => ({ origin, cachePrompt: true }), levels: new Map() },
        { path: GATEWAY_LLAMA, target: (client) => ({ origin: oneNode.origin, apiKey: key(oneNodeKeys, client), model: LLAMA_MODEL }), levels: new Map() },
      );
    }
    // One reply per column before the clock starts: the first request pays for JIT compilation.
    for (const column of columns) {
      const warmUp = await ask(column, 0, 'warm-up', model);
      if (warmUp.failed !== undefined) throw new Error(`${column.path}: the warm-up request failed: ${warmUp.failed}`);
    }
    const rounds = Math.max(3, model.workload.concurrencyRounds);
    let salt = 0;
    for (const clients of CLIENT_COUNTS) {
      for (const column of columns) column.levels.set(clients, []);
      for (let round = 0; round < rounds; round++) {
        for (let turn = 0; turn < columns.length; turn++) {
          const column = columns[(round + turn) % columns.length] as Column;
          context.progress(`gateway: ${model.kind}, ${column.path}, ${clients} client${clients === 1 ? '' : 's'}, round ${round + 1} of ${rounds}`);
          salt++;
          column.levels.get(clients)?.push(await level(column, clients, model, salt));
          if (llamaServer?.ended === true) throw new Error(`llama-server exited; its log ends: ${llamaServer.stderrTail.trim().slice(-800)}`);
        }
      }
    }
    return { columns, rounds };
  } finally {
    await llamaServer?.stop();
    for (const server of started.reverse()) await context.servers.release(server);
    await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
  }
}

/** `clients` concurrent clients, each sending the workload's fresh requests one after another. */
async function level(column: Column, clients: number, model: BenchModel, salt: number): Promise<Sample[]> {
  const loop = async (client: number) => {
    const samples: Sample[] = [];
    for (let request = 0; request < model.workload.requestsPerClient; request++) {
      samples.push(await ask(column, client, PROMPTS[(client + request + salt) % PROMPTS.length] ?? 'Hello', model));
    }
    return samples;
  };
  return (await Promise.all(Array.from({ length: clients }, (_, client) => loop(client)))).flat();
}

/** One request; a failed one is a sample with no tokens and the reason, counted and shown under the table. */
async function ask(column: Column, client: number, text: string, model: BenchModel): Promise<Sample> {
  const target = column.target(client);
  const sentAt = performance.now();
  try {
    const trace = await streamChatCompletion(target.origin, { text, maxTokens: model.workload.maxTokens, temperature: 0, apiKey: target.apiKey, model: target.model, cachePrompt: target.cachePrompt, signal: AbortSignal.timeout(REPLY_TIME_CAP_MS) });
    return { sentAt: trace.sentAt, firstAt: trace.firstAt ?? trace.endedAt, endedAt: trace.endedAt, tokens: trace.tokens };
  } catch (error) {
    const cause = error instanceof Error && error.cause !== undefined ? ` (${String(error.cause)})` : '';
    const endedAt = performance.now();
    return { sentAt, firstAt: endedAt, endedAt, tokens: 0, failed: `${error instanceof Error ? error.message : String(error)}${cause}` };
  }
}

/** A new API key of a new invite user `name` on `server` (POST /api/token, then POST /api/keys). */
async function apiKeyOf(server: ServerProcess, name: string): Promise<string> {
  const token = await server.token(name);
  const response = await fetch(`${server.origin}/api/keys`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', origin: server.origin }, body: JSON.stringify({ name: 'bench' }) });
  if (response.status !== 201) throw new Error(`POST /api/keys answered ${response.status}`);
  return ((await response.json()) as { key: string }).key;
}

async function modelIdOf(origin: string, apiKey: string): Promise<string> {
  const response = await fetch(`${origin}/v1/models`, { headers: { authorization: `Bearer ${apiKey}` } });
  return ((await response.json()) as { data: Array<{ id: string }> }).data[0]?.id ?? '';
}

/** Aggregate: every token over the round's wall time (first send to last end). */
function roundFigures(samples: readonly Sample[]) {
  const start = Math.min(...samples.map((sample) => sample.sentAt));
  const end = Math.max(...samples.map((sample) => sample.endedAt));
  const tokens = samples.reduce((total, sample) => total + sample.tokens, 0);
  return { requests: samples.length, tokens, aggregateTokensPerSecond: end > start ? (tokens * 1000) / (end - start) : undefined };
}

function median(values: ReadonlyArray<number | undefined>): number | undefined {
  return summarize(values.filter((value): value is number => value !== undefined)).p50;
}

function render(context: BenchContext, model: BenchModel, columns: readonly Column[], rounds: number): Table[] {
  const byPath = new Map(columns.map((column) => [column.path, column]));
  const figures = columns.map((column) => [column.path, ...CLIENT_COUNTS.flatMap((clients) => {
    const samples = column.levels.get(clients) ?? [];
    const ttft = summarize(samples.flat().map((sample) => sample.firstAt - sample.sentAt));
    return [`${cell(median(samples.map((round) => roundFigures(round).aggregateTokensPerSecond)), 0)} tok/s, ${cell(ttft.p50, 0)} ms`];
  })]);
  const ratios = RATIOS.filter((ratio) => byPath.has(ratio.numerator) && byPath.has(ratio.denominator)).map((ratio) => [ratio.label, ...CLIENT_COUNTS.map((clients) => {
    const numerator = byPath.get(ratio.numerator)?.levels.get(clients) ?? [];
    const denominator = byPath.get(ratio.denominator)?.levels.get(clients) ?? [];
    const within = numerator.map((samples, round) => {
      const mine = roundFigures(samples).aggregateTokensPerSecond;
      const theirs = denominator[round] === undefined ? undefined : roundFigures(denominator[round]).aggregateTokensPerSecond;
      return mine === undefined || theirs === undefined ? undefined : mine / theirs;
    });
    const value = median(within);
    return value === undefined ? '–' : `${value.toFixed(2)}×`;
  })]);
  const header = (first: string) => [first, ...CLIENT_COUNTS.map((clients) => `${clients} client${clients === 1 ? '' : 's'}`)];
  const setup = `${model.kind} model, ${context.slots} slots per node, ${model.threads} thread${model.threads === 1 ? '' : 's'}, ${cpus()[0]?.model.trim() ?? 'unknown CPU'}`;
  return [
    {
      title: `Gateway and engine nodes: ${setup}`,
      rows: [header('path (streamed /v1)'), ...figures],
      notes: [
        `Aggregate tok/s (the median round's) and TTFT p50 over every request. Each client is its own API key sending ${model.workload.requestsPerClient} fresh request${model.workload.requestsPerClient === 1 ? '' : 's'} of ${model.workload.maxTokens} tokens, one at a time; ` +
          `each column ran each client count ${rounds} times, the columns taking turns. Every process is on this machine (${cpus().length} cores), so two nodes share its cores with each other, the gateways and the clients.`,
        '"2 gateways": clients alternate between two gateways over the same two nodes. llama-server: same model, threads and slots, its prompt cache on (its default) in both columns.',
        ...(model.threads * 2 > cpus().length
          ? [`Two nodes of ${model.threads} threads each are more threads than this machine's ${cpus().length} cores: llama.cpp's threads wait on each other and the two-node columns collapse. Use --threads ${Math.max(1, Math.floor(cpus().length / 2))} here, or nodes on separate machines.`]
          : []),
        ...failures(columns),
      ],
    },
    {
      title: `Gateway ratios: ${model.kind} model`,
      rows: [header('aggregate tok/s, ratio'), ...ratios],
      notes: ['Median over rounds of the ratio within a round (columns measured seconds apart). The goal for the gateway overhead is ≥ 0.98×.'],
    },
  ];
}

/** A note per column with failed requests (counted with no tokens): how many, and the first reason. */
function failures(columns: readonly Column[]): string[] {
  return columns.flatMap((column) => {
    const failed = [...column.levels.values()].flat(2).filter((sample) => sample.failed !== undefined);
    return failed.length === 0 ? [] : [`${column.path}: ${failed.length} request${failed.length === 1 ? '' : 's'} failed (counted with no tokens), e.g. ${failed[0]?.failed ?? ''}`];
  });
}
