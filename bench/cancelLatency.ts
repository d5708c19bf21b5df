import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { Scheduler } from '../server/chat/Scheduler.js';
import type { Engine } from '../server/engine/Engine.js';
import { BenchClient, type RequestTrace } from './BenchClient.js';
import type { Benchmark, BenchContext } from './Benchmark.js';
import { compareColumns } from './compareColumns.js';
import { cell, type Table } from './renderTable.js';
import type { BenchModel } from './resolveModel.js';
import type { BenchTransport, ServerSpec } from './ServerProcess.js';
import { summarize } from './summarize.js';

const TEXT = 'Tell me a long story about the harbor.';
/** Uncontended replies whose time to first token is the reference for "slot free". */
const REFERENCE_RUNS = 5;

interface Column {
  readonly path: string;
  readonly running?: string;
  /** Cancel sent → `cancelled` received (in process: abort() → generate() returned). */
  readonly cancelMs: readonly number[];
  /** Cancel sent → first delta of the request queued behind the cancelled one. */
  readonly nextFirstMs: readonly number[];
  /** Time to first token with the slot free: what the next request pays anyway. */
  readonly referenceTtftMs: readonly number[];
  /** Replies that ended on their own before the cancel went out (not measured). */
  readonly finishedFirst: number;
  readonly unavailable?: string;
}

/**
 * One slot, two users: A streams, B queues behind it, A cancels after `cancelAfterMs` of
 * streaming; then B streams with A's next request queued behind it, and so on. Each cancel gives
 * two figures: until its own `cancelled`, and until the queued request's first delta, which
 * shows when the slot really became free (minus that request's own time to first token).
 */
export const cancelLatency: Benchmark = {
  name: 'cancel',
  summary: 'cancel → cancelled, and cancel → the next queued request streaming (the slot is free), p50/p99',
  run: (context) => compareColumns<Column>(context, {
    inProcess,
    throughServer,
    extra: async (context, model) => [await throughOpenAiApi(context, model)],
    table: (_context, model, columns) => table(model, columns),
    data: (column) => ({ ...column, summary: figures(column) }),
  }),
};

/** Long enough that no reply ends on its own before its cancel, short enough to fit the context. */
function cancelMaxTokens(model: BenchModel): number {
  return Math.min(model.contextSize - 256, model.workload.maxTokens * 8);
}

interface InProcessJob {
  readonly controller: AbortController;
  readonly firstText: Promise<number | undefined>;
  readonly ended: Promise<number>;
  endedAt: number | undefined;
}

async function inProcess(context: BenchContext, model: BenchModel): Promise<Column> {
  const engine = await context.engines.get(model, 1);
  context.progress(`cancel: ${model.kind}, in-process`);
  const scheduler = new Scheduler({ slots: 1, maxQueue: 8, maxQueuedPerUser: 8 });
  let conversation = 0;
  const start = (user: string): InProcessJob => startJob(scheduler, engine, user, `cancel-${++conversation}`, cancelMaxTokens(model));

  const referenceTtftMs: number[] = [];
  for (let run = 0; run < REFERENCE_RUNS; run++) {
    const sentAt = performance.now();
    const job = start('a');
    const first = await job.firstText;
    if (first !== undefined) referenceTtftMs.push(first - sentAt);
    job.controller.abort();
    await job.ended;
  }

  const cancelMs: number[] = [];
  const nextFirstMs: number[] = [];
  let finishedFirst = 0;
  let current = start('a');
  let user = 'a';
  await current.firstText;
  for (let index = 0; index < model.workload.cancels; index++) {
    user = user === 'a' ? 'b' : 'a';
    const next = start(user);
    await sleep(model.workload.cancelAfterMs);
    if (current.endedAt !== undefined) {
      finishedFirst++;
    } else {
      const cancelledAt = performance.now();
      current.controller.abort();
      cancelMs.push((await current.ended) - cancelledAt);
      const first = await next.firstText;
      if (first !== undefined) nextFirstMs.push(first - cancelledAt);
    }
    await next.firstText;
    current = next;
  }
  current.controller.abort();
  await current.ended;
  return { path: 'in-process', cancelMs, nextFirstMs, referenceTtftMs, finishedFirst };
}

function startJob(scheduler: Scheduler, engine: Engine, userId: string, conversationId: string, maxTokens: number): InProcessJob {
  const controller = new AbortController();
  let onFirst!: (at: number | undefined) => void;
  let onEnded!: (at: number) => void;
  const job: InProcessJob = {
    controller,
    firstText: new Promise((resolve) => { onFirst = resolve; }),
    ended: new Promise((resolve) => { onEnded = resolve; }),
    endedAt: undefined,
  };
  scheduler.submit({
    userId,
    onQueuePosition: () => undefined,
    run: async (slot) => {
      let first: number | undefined;
      try {
        await engine.generate({
          slot, conversationId, history: [], text: TEXT, maxTokens, signal: controller.signal,
          onText: () => {
            if (first !== undefined) return;
            first = performance.now();
            onFirst(first);
          },
        });
      } finally {
        const endedAt = performance.now();
        job.endedAt = endedAt;
        onFirst(first);
        // Resolved once the scheduler has the slot back, as the server's `cancelled` is heard later.
        setImmediate(() => onEnded(endedAt));
      }
    },
  });
  return job;
}

async function throughServer(context: BenchContext, model: BenchModel, transport: BenchTransport): Promise<Column> {
  const spec: ServerSpec = { transport, modelPath: model.path, threads: model.threads, llamaBuild: model.llamaBuild, slots: 1, contextSize: model.contextSize, maxTokens: cancelMaxTokens(model) };
  const server = await context.servers.getOrReason(spec);
  const empty = { cancelMs: [], nextFirstMs: [], referenceTtftMs: [], finishedFirst: 0 };
  if ('unavailable' in server) return { path: transport, ...empty, unavailable: server.unavailable };
  context.progress(`cancel: ${model.kind}, ${transport} (pid ${server.pid})`);
  const a = await BenchClient.connect(server.wsUrl, server.origin, await server.token('cancel-a'));
  const b = await BenchClient.connect(server.wsUrl, server.origin, await server.token('cancel-b'));
  try {
    const referenceTtftMs: number[] = [];
    for (let run = 0; run < REFERENCE_RUNS; run++) {
      const trace = a.send(TEXT);
      const first = await trace.firstDelta;
      if (first !== undefined) referenceTtftMs.push(first - trace.sentAt);
      a.cancel(trace.id);
      await trace.ended;
    }

    const cancelMs: number[] = [];
    const nextFirstMs: number[] = [];
    let finishedFirst = 0;
    let current: { client: BenchClient; trace: RequestTrace } = { client: a, trace: a.send(TEXT) };
    await current.trace.firstDelta;
    for (let index = 0; index < model.workload.cancels; index++) {
      const other = current.client === a ? b : a;
      const next = other.send(TEXT);
      if (!(await next.placed)) throw new Error('the next request was not queued behind the running one: is the server using one slot?');
      await sleep(model.workload.cancelAfterMs);
      if (current.trace.terminal !== undefined) {
        finishedFirst++;
      } else {
        const cancelledAt = current.client.cancel(current.trace.id);
        const ended = await current.trace.ended;
        if (ended.terminal === 'cancelled' && ended.endedAt !== undefined) cancelMs.push(ended.endedAt - cancelledAt);
        else finishedFirst++;
        const first = await next.firstDelta;
        if (first !== undefined && ended.terminal === 'cancelled') nextFirstMs.push(first - cancelledAt);
      }
      await next.firstDelta;
      current = { client: other, trace: next };
    }
    current.client.cancel(current.trace.id);
    await current.trace.ended;
    return { path: transport, running: a.transport, cancelMs, nextFirstMs, referenceTtftMs, finishedFirst };
  } finally {
    a.close();
    b.close();
  }
}

/**
 * A client of the OpenAI-compatible API that disconnects: A streams through `/v1/chat/completions`
 * and drops the connection after `cancelAfterMs`; B's request over a socket waits behind it. A
 * client that leaves gets no answer, so only "disconnect → the next request streaming" is
 * measured (minus B's own time to first token, it is when the slot became free).
 */
async function throughOpenAiApi(context: BenchContext, model: BenchModel): Promise<Column> {
  const transport = context.transports[0] ?? 'uws';
  const path = `/v1 (${transport})`;
  const spec: ServerSpec = { transport, modelPath: model.path, threads: model.threads, llamaBuild: model.llamaBuild, slots: 1, contextSize: model.contextSize, maxTokens: cancelMaxTokens(model) };
  const server = await context.servers.getOrReason(spec);
  const empty = { cancelMs: [], nextFirstMs: [], referenceTtftMs: [], finishedFirst: 0 };
  if ('unavailable' in server) return { path, ...empty, unavailable: server.unavailable };
  context.progress(`cancel: ${model.kind}, ${path} (pid ${server.pid})`);
  const keyResponse = await fetch(`${server.origin}/api/keys`, {
    method: 'POST',
    headers: { authorization: `Bearer ${await server.token('cancel-v1-a')}`, 'content-type': 'application/json', origin: server.origin },
    body: JSON.stringify({ name: 'bench' }),
  });
  const { key } = (await keyResponse.json()) as { key: string };
  const modelId = ((await (await fetch(`${server.origin}/v1/models`, { headers: { authorization: `Bearer ${key}` } })).json()) as { data: Array<{ id: string }> }).data[0]?.id;
  const b = await BenchClient.connect(server.wsUrl, server.origin, await server.token('cancel-v1-b'));
  try {
    const referenceTtftMs: number[] = [];
    for (let run = 0; run < REFERENCE_RUNS; run++) {
      const trace = b.send(TEXT);
      const first = await trace.firstDelta;
      if (first !== undefined) referenceTtftMs.push(first - trace.sentAt);
      b.cancel(trace.id);
      await trace.ended;
    }
    const nextFirstMs: number[] = [];
    let finishedFirst = 0;
    for (let index = 0; index < model.workload.cancels; index++) {
      const controller = new AbortController();
      const response = await fetch(`${server.origin}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: modelId, messages: [{ role: 'user', content: TEXT }], stream: true, max_tokens: cancelMaxTokens(model) }),
        signal: controller.signal,
      });
      const reader = (response.body as ReadableStream<Uint8Array>).getReader();
      const decoder = new TextDecoder();
      let seen = '';
      // Until the first chunk with text (the role chunk's content is empty).
      while (!/"content":"[^"]/.test(seen)) {
        const read = await reader.read();
        if (read.done) break;
        seen += decoder.decode(read.value, { stream: true });
      }
      const next = b.send(TEXT);
      if (!(await next.placed)) throw new Error('the next request was not queued behind the running one: is the server using one slot?');
      await sleep(model.workload.cancelAfterMs);
      if (seen.includes('[DONE]')) {
        finishedFirst++;
      } else {
        const abortedAt = performance.now();
        controller.abort();
        const first = await next.firstDelta;
        if (first !== undefined) nextFirstMs.push(first - abortedAt);
      }
      await reader.cancel().catch(() => undefined);
      await next.firstDelta;
      b.cancel(next.id);
      await next.ended;
    }
    return { path, running: transport, cancelMs: [], nextFirstMs, referenceTtftMs, finishedFirst };
  } finally {
    b.close();
  }
}

function figures(column: Column) {
  const cancel = summarize(column.cancelMs);
  const next = summarize(column.nextFirstMs);
  const reference = summarize(column.referenceTtftMs);
  return {
    cancels: Math.max(cancel.n, next.n),
    finishedFirst: column.finishedFirst,
    cancelP50Ms: cancel.p50,
    cancelP99Ms: cancel.p99,
    nextFirstP50Ms: next.p50,
    nextFirstP99Ms: next.p99,
    referenceTtftP50Ms: reference.p50,
    /** The slot's turnaround net of the next request's own prompt evaluation (an estimate). */
    slotFreeP50Ms: next.p50 === undefined || reference.p50 === undefined ? undefined : Math.max(0, next.p50 - reference.p50),
  };
}

function table(model: BenchModel, columns: readonly Column[]): Table {
  const all = columns.map((column) => ({ column, figures: figures(column) }));
  const row = (label: string, pick: (entry: (typeof all)[number]['figures']) => string) =>
    [label, ...all.map((entry) => (entry.column.unavailable ? 'unavailable' : pick(entry.figures)))];
  return {
    title: `Cancel: ${model.kind} model, 1 slot, cancel after ${model.workload.cancelAfterMs} ms of streaming`,
    rows: [
      ['', ...columns.map((column) => column.path)],
      row('cancel → cancelled p50 / p99 ms', (entry) => `${cell(entry.cancelP50Ms, 1)} / ${cell(entry.cancelP99Ms, 1)}`),
      row('cancel → next request streams p50 / p99 ms', (entry) => `${cell(entry.nextFirstP50Ms, 1)} / ${cell(entry.nextFirstP99Ms, 1)}`),
      row('uncontended TTFT p50 ms', (entry) => cell(entry.referenceTtftP50Ms, 1)),
      row('slot free after ≈ p50 ms', (entry) => cell(entry.slotFreeP50Ms, 1)),
      row('cancels measured (ended first)', (entry) => `${entry.cancels} (${entry.finishedFirst})`),
      ['transport in ready', ...columns.map((column) => column.running ?? '–')],
    ],
    notes: [
      'In process, "cancel → cancelled" is abort() → generate() returned, through the same Scheduler. ' +
        '"Slot free after" is (cancel → next request streams) minus the uncontended TTFT: an estimate of when the next request got the slot.',
      ...columns.filter((column) => column.unavailable).map((column) => `${column.path}: ${column.unavailable}`),
    ],
  };
}
