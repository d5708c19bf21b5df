import { performance } from 'node:perf_hooks';
import type { Engine } from '../server/engine/Engine.js';
import { BenchClient } from './BenchClient.js';
import type { Benchmark, BenchContext } from './Benchmark.js';
import { chatServerSpec } from './chatServerSpec.js';
import { compareColumns } from './compareColumns.js';
import { PROMPTS } from './prompts.js';
import { cell, type Table } from './renderTable.js';
import type { BenchModel } from './resolveModel.js';
import type { BenchTransport } from './ServerProcess.js';
import { summarize } from './summarize.js';

/** One reply, timed from the request to its first text and to its end. */
interface Run {
  readonly ttftMs: number;
  /** From the first text to the end: the decode phase. */
  readonly decodeMs: number;
  readonly totalMs: number;
  readonly tokens: number;
}

interface Column {
  readonly path: string;
  /** The transport the server reported in `ready`; absent in process. */
  readonly running?: string;
  readonly runs: readonly Run[];
  readonly unavailable?: string;
}

const IN_PROCESS = 'in-process';

export const streamingOverhead: Benchmark = {
  name: 'streaming',
  summary: "one reply at a time: node-llama-cpp in process vs the same model delivered to a WebSocket client by Parley, per transport",
  run: (context) => compareColumns<Column>(context, {
    inProcess,
    throughServer,
    table: (_context, model, columns) => table(model, columns),
    data: (column) => ({ ...column, summary: figures(column.runs) }),
  }),
};

async function inProcess(context: BenchContext, model: BenchModel): Promise<Column> {
  const engine = await context.engines.get(model, context.slots);
  context.progress(`streaming: ${model.kind}, in-process`);
  await generate(engine, model, 'warm-up', 0);
  const runs: Run[] = [];
  for (let index = 0; index < model.workload.streamRuns; index++) runs.push(await generate(engine, model, PROMPTS[index % PROMPTS.length] ?? 'Hello', index + 1));
  return { path: IN_PROCESS, runs };
}

/** A fresh conversation each time, as a `send` without conversationId gets on the server. */
async function generate(engine: Engine, model: BenchModel, text: string, index: number): Promise<Run> {
  const started = performance.now();
  let first: number | undefined;
  const result = await engine.generate({
    slot: 0,
    conversationId: `stream-${index}`,
    history: [],
    text,
    maxTokens: model.workload.maxTokens,
    signal: new AbortController().signal,
    onText: () => { first ??= performance.now(); },
  });
  const ended = performance.now();
  const firstAt = first ?? ended;
  return { ttftMs: firstAt - started, decodeMs: ended - firstAt, totalMs: ended - started, tokens: result.completionTokens };
}

async function throughServer(context: BenchContext, model: BenchModel, transport: BenchTransport): Promise<Column> {
  const server = await context.servers.getOrReason(chatServerSpec(model, transport, context.slots));
  if ('unavailable' in server) return { path: transport, runs: [], unavailable: server.unavailable };
  context.progress(`streaming: ${model.kind}, ${transport} (pid ${server.pid})`);
  const client = await BenchClient.connect(server.wsUrl, server.origin, await server.token('streaming'));
  try {
    const ask = async (text: string): Promise<Run> => {
      const trace = await client.send(text).ended;
      if (trace.terminal !== 'done' || trace.endedAt === undefined) throw new Error(`a streaming request ended in ${trace.terminal} ${trace.errorCode ?? ''}`);
      const firstAt = trace.firstDeltaAt ?? trace.endedAt;
      return { ttftMs: firstAt - trace.sentAt, decodeMs: trace.endedAt - firstAt, totalMs: trace.endedAt - trace.sentAt, tokens: trace.completionTokens };
    };
    await ask('warm-up');
    const runs: Run[] = [];
    for (let index = 0; index < model.workload.streamRuns; index++) runs.push(await ask(PROMPTS[index % PROMPTS.length] ?? 'Hello'));
    return { path: transport, running: client.transport, runs };
  } finally {
    client.close();
  }
}

/**
 * Decode speed counts the tokens after the first over the time after the first text, summed over
 * replies (a time-weighted mean); end to end counts every token over the whole request.
 */
function figures(runs: readonly Run[]) {
  const sum = (pick: (run: Run) => number) => runs.reduce((total, run) => total + pick(run), 0);
  const decodeMs = sum((run) => run.decodeMs);
  const ttft = summarize(runs.map((run) => run.ttftMs));
  return {
    replies: runs.length,
    tokensPerReply: runs.length === 0 ? undefined : sum((run) => run.tokens) / runs.length,
    decodeTokensPerSecond: decodeMs > 0 ? (sum((run) => Math.max(0, run.tokens - 1)) * 1000) / decodeMs : undefined,
    endToEndTokensPerSecond: runs.length === 0 ? undefined : (sum((run) => run.tokens) * 1000) / sum((run) => run.totalMs),
    ttftP50Ms: ttft.p50,
    ttftMaxMs: ttft.max,
  };
}

function table(model: BenchModel, columns: readonly Column[]): Table {
  const all = columns.map((column) => ({ column, figures: figures(column.runs) }));
  const base = all[0]?.figures;
  const ratio = (value: number | undefined, reference: number | undefined) =>
    value === undefined || reference === undefined || reference === 0 ? undefined : value / reference;
  const row = (label: string, pick: (entry: (typeof all)[number]) => string) => [label, ...all.map((entry) => (entry.column.unavailable ? 'unavailable' : pick(entry)))];
  return {
    title: `Streaming overhead: ${model.kind} model, ${model.threads} thread${model.threads === 1 ? '' : 's'}, ${model.workload.maxTokens}-token replies`,
    rows: [
      ['', ...all.map((entry) => entry.column.path)],
      row('decode tok/s', (entry) => cell(entry.figures.decodeTokensPerSecond, 0)),
      row('decode, ratio to in-process', (entry) => cell(ratio(entry.figures.decodeTokensPerSecond, base?.decodeTokensPerSecond), 3)),
      row('end-to-end tok/s', (entry) => cell(entry.figures.endToEndTokensPerSecond, 0)),
      row('end-to-end, ratio to in-process', (entry) => cell(ratio(entry.figures.endToEndTokensPerSecond, base?.endToEndTokensPerSecond), 3)),
      row('TTFT p50 ms', (entry) => cell(entry.figures.ttftP50Ms, 1)),
      row('TTFT added to in-process, ms', (entry) => cell(entry.figures.ttftP50Ms === undefined || base?.ttftP50Ms === undefined ? undefined : entry.figures.ttftP50Ms - base.ttftP50Ms, 1)),
      row('tokens per reply', (entry) => cell(entry.figures.tokensPerReply, 0)),
      row('replies', (entry) => String(entry.figures.replies)),
      row('transport in ready', (entry) => entry.column.running ?? '–'),
    ],
    notes: [
      `Greedy decoding, a fresh conversation per reply, one warm-up reply first; ${model.workload.streamRuns} replies per path. ` +
        'Parley columns are timed by a WebSocket client in the bench process: send → first delta → done.',
      ...columns.filter((column) => column.unavailable).map((column) => `${column.path}: ${column.unavailable}`),
    ],
  };
}
