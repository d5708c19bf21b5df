import { performance } from 'node:perf_hooks';
import { BenchClient } from './BenchClient.js';
import type { Benchmark, BenchContext } from './Benchmark.js';
import { chatServerSpec } from './chatServerSpec.js';
import { cell, type Table } from './renderTable.js';
import type { BenchTransport } from './ServerProcess.js';
import { summarize } from './summarize.js';

/**
 * `list_conversations` is the smallest frame the server fully handles: rate-limited, JSON-parsed,
 * validated against the shared schema, answered (`conversations`, empty for this user).
 */
const FRAME = JSON.stringify({ type: 'list_conversations' });
const ANSWER = 'conversations';
/** Frames in flight in the pipelined run: enough to keep the server busy, far below backpressure. */
const WINDOW = 128;
const BUDGET = {
  quick: { roundTripMs: 2000, pipelinedFrames: 20_000, pipelinedMs: 4000 },
  full: { roundTripMs: 5000, pipelinedFrames: 100_000, pipelinedMs: 15_000 },
} as const;

interface Column {
  readonly path: string;
  readonly running?: string;
  readonly roundTrip?: { readonly frames: number; readonly seconds: number; readonly latencyUs: readonly number[] };
  readonly pipelined?: { readonly frames: number; readonly seconds: number };
  /** Answers that were not `conversations` (should be 0: nothing refused). */
  readonly otherAnswers?: number;
  readonly unavailable?: string;
}

export const frameThroughput: Benchmark = {
  name: 'frames',
  summary: 'small validated frames (list_conversations) per second per transport: round trip and pipelined',
  async run(context) {
    const columns: Column[] = [];
    for (const transport of context.transports) columns.push(await measure(context, transport));
    return {
      tables: [table(columns, context)],
      data: columns.map((column) => ({
        path: column.path,
        running: column.running,
        unavailable: column.unavailable,
        roundTrip: column.roundTrip && { frames: column.roundTrip.frames, seconds: column.roundTrip.seconds, latencyUs: summarize(column.roundTrip.latencyUs) },
        pipelined: column.pipelined,
        otherAnswers: column.otherAnswers,
        window: WINDOW,
      })),
    };
  },
};

async function measure(context: BenchContext, transport: BenchTransport): Promise<Column> {
  const server = await context.servers.getOrReason(chatServerSpec(context.lightModel, transport, context.slots));
  if ('unavailable' in server) return { path: transport, unavailable: server.unavailable };
  const budget = context.quick ? BUDGET.quick : BUDGET.full;
  context.progress(`frames: ${transport} (pid ${server.pid})`);
  const client = await BenchClient.connect(server.wsUrl, server.origin, await server.token('frames'));
  try {
    // Each answer calls the current waiter; the server answers frames of one socket in order.
    // Any other answer (an `error`, e.g. rate_limited) still ends its frame's wait, and is counted.
    let answered = 0;
    let other = 0;
    let onAnswer: ((at: number) => void) | undefined;
    client.onOtherFrame = (frame, at) => {
      if (frame.type !== ANSWER) other++;
      answered++;
      onAnswer?.(at);
    };

    // Warm-up, so both runs measure steady state.
    await pipelined(client, 2000, 10_000, () => answered, (callback) => { onAnswer = callback; });

    const warmupOther = other;
    const latencyUs: number[] = [];
    const roundTripStart = performance.now();
    while (performance.now() - roundTripStart < budget.roundTripMs) {
      const sentAt = performance.now();
      const at = await new Promise<number>((resolve) => {
        onAnswer = resolve;
        client.sendRaw(FRAME);
      });
      latencyUs.push((at - sentAt) * 1000);
    }
    const roundTrip = { frames: latencyUs.length, seconds: (performance.now() - roundTripStart) / 1000, latencyUs };

    const pipelinedRun = await pipelined(client, budget.pipelinedFrames, budget.pipelinedMs, () => answered, (callback) => { onAnswer = callback; });
    return { path: transport, running: client.transport, roundTrip, pipelined: pipelinedRun, otherAnswers: other - warmupOther };
  } finally {
    client.close();
  }
}

/** Keeps WINDOW frames in flight until `total` are answered or `maxMs` passes. */
function pipelined(
  client: BenchClient,
  total: number,
  maxMs: number,
  answeredSoFar: () => number,
  listen: (callback: (at: number) => void) => void,
): Promise<{ frames: number; seconds: number }> {
  const first = answeredSoFar();
  const started = performance.now();
  let sent = 0;
  return new Promise((resolve) => {
    const done = () => {
      const frames = answeredSoFar() - first;
      return frames >= sent && (frames >= total || performance.now() - started >= maxMs);
    };
    listen(() => {
      if (done()) {
        listen(() => undefined);
        resolve({ frames: answeredSoFar() - first, seconds: (performance.now() - started) / 1000 });
        return;
      }
      if (sent < total && performance.now() - started < maxMs) {
        client.sendRaw(FRAME);
        sent++;
      }
    });
    for (; sent < Math.min(WINDOW, total); sent++) client.sendRaw(FRAME);
  });
}

function table(columns: readonly Column[], context: BenchContext): Table {
  const value = (column: Column, show: (column: Column) => string) => (column.unavailable ? 'unavailable' : show(column));
  const latency = (column: Column) => summarize(column.roundTrip?.latencyUs ?? []);
  return {
    title: 'Frame throughput: list_conversations, validated and answered, one connection',
    rows: [
      ['', ...columns.map((column) => column.path)],
      ['round trip (1 in flight): frames/s', ...columns.map((column) => value(column, (c) => cell(c.roundTrip && c.roundTrip.frames / c.roundTrip.seconds, 0)))],
      ['round trip latency p50 / p99 µs', ...columns.map((column) => value(column, (c) => `${cell(latency(c).p50, 0)} / ${cell(latency(c).p99, 0)}`))],
      [`one way, pipelined (${WINDOW} in flight): frames/s`, ...columns.map((column) => value(column, (c) => cell(c.pipelined && c.pipelined.frames / c.pipelined.seconds, 0)))],
      ['frames answered (round trip + pipelined)', ...columns.map((column) => value(column, (c) => `${cell(c.roundTrip?.frames)} + ${cell(c.pipelined?.frames)}`))],
      ['answers other than `conversations`', ...columns.map((column) => value(column, (c) => cell(c.otherAnswers)))],
      ['transport in ready', ...columns.map((column) => column.running ?? '–')],
    ],
    notes: [
      `The frame rate limit is raised (the limiter still counts every frame); ${context.quick ? 'quick' : 'full'} budgets: ` +
        `${(context.quick ? BUDGET.quick : BUDGET.full).roundTripMs / 1000} s round trip, up to ${cell((context.quick ? BUDGET.quick : BUDGET.full).pipelinedFrames)} pipelined frames. ` +
        'One-way throughput is measured as answered frames per second with the pipe kept full; the client shares the cores.',
      ...columns.filter((column) => column.unavailable).map((column) => `${column.path}: ${column.unavailable}`),
    ],
  };
}
