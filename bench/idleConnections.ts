import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { BenchClient } from './BenchClient.js';
import type { Benchmark, BenchContext } from './Benchmark.js';
import { chatServerSpec } from './chatServerSpec.js';
import { openFilesLimit } from './machineInfo.js';
import { cell, type Table } from './renderTable.js';
import type { BenchTransport } from './ServerProcess.js';

const LEVELS = { quick: [500, 2000], full: [1000, 5000, 10_000] } as const;
/**
 * Sockets per user. Each sign-in makes a new user (and writes the session file), so users are
 * few and each holds many sockets; the server's per-user cap is raised to match. Every upgrade
 * still verifies its JWT.
 */
const SOCKETS_PER_USER = 50;
/** Upgrades in flight at once from the bench process. */
const IN_FLIGHT = 64;
/** File descriptors kept free in each process (stdio, pipes, the model file, libuv, DNS). */
const RESERVED_FDS = 512;
/** Time for the server to settle after a batch of upgrades before its RSS is read. */
const SETTLE_MS = 1500;

interface Step {
  readonly connections: number;
  readonly opened: number;
  readonly failed: number;
  readonly upgradesPerSecond: number;
  readonly serverRssBytes: number;
  readonly rssPerConnectionBytes: number;
  /** The server's V8 heap in use (from /metrics), per connection: JS objects that RSS can hide in already-committed pages. */
  readonly heapPerConnectionBytes: number;
  /** This (client) process's RSS growth per socket, for scale: ws client sockets are not free either. */
  readonly clientRssPerConnectionBytes: number;
}

interface Column {
  readonly path: string;
  readonly running?: string;
  readonly baselineRssBytes?: number;
  readonly baselineHeapBytes?: number;
  readonly steps: readonly Step[];
  readonly unavailable?: string;
  readonly error?: string;
}

export const idleConnections: Benchmark = {
  name: 'connections',
  summary: 'N authenticated idle sockets per transport: server RSS per connection and upgrades/s (JWT verification included)',
  async run(context) {
    const limit = openFilesLimit();
    const wanted = context.quick ? LEVELS.quick : LEVELS.full;
    const ceiling = limit === undefined || !Number.isFinite(limit) ? Number.POSITIVE_INFINITY : limit - RESERVED_FDS;
    const levels = [...new Set(wanted.map((level) => Math.min(level, ceiling)))].filter((level) => level > 0);
    const capped = wanted.some((level) => level > ceiling);
    if (capped) context.progress(`connections: capped at ${ceiling} sockets by the open-files limit (ulimit -n ${limit}); raise it for larger runs`);
    const columns: Column[] = [];
    for (const transport of context.transports) columns.push(await measure(context, transport, levels));
    return {
      tables: [table(levels, columns, limit, capped)],
      data: { openFilesLimit: limit, levels, capped, socketsPerUser: SOCKETS_PER_USER, inFlight: IN_FLIGHT, columns },
    };
  },
};

async function measure(context: BenchContext, transport: BenchTransport, levels: readonly number[]): Promise<Column> {
  const model = context.lightModel;
  // A server of its own: its RSS must not carry other benchmarks' conversations or sockets.
  let server;
  try {
    server = await context.servers.fresh({ ...chatServerSpec(model, transport, context.slots) });
  } catch (error) {
    return { path: transport, steps: [], unavailable: error instanceof Error ? error.message : String(error) };
  }
  const sockets: BenchClient[] = [];
  const steps: Step[] = [];
  try {
    const largest = Math.max(...levels);
    const users = Math.ceil(largest / SOCKETS_PER_USER);
    context.progress(`connections: ${transport} (pid ${server.pid}), signing in ${users} users`);
    const tokens: string[] = [];
    for (let user = 0; user < users; user += 8) {
      tokens.push(...(await Promise.all(Array.from({ length: Math.min(8, users - user) }, (_, offset) => server.token(`idle-${user + offset}`)))));
    }
    // Warm-up: the first upgrades load code paths and grow pools that later ones reuse.
    const warm = await Promise.all(Array.from({ length: 20 }, (_, index) => BenchClient.connect(server.wsUrl, server.origin, tokens[index % tokens.length] ?? '')));
    for (const socket of warm) socket.close();
    await sleep(SETTLE_MS);
    const baselineRssBytes = await server.rssBytes();
    const baselineHeapBytes = await server.metric('nodejs_heap_size_used_bytes');
    const clientBaseline = process.memoryUsage().rss;

    let failed = 0;
    for (const level of levels) {
      context.progress(`connections: ${transport}, opening up to ${level}`);
      const started = performance.now();
      const before = sockets.length;
      let next = sockets.length;
      const worker = async () => {
        while (next < level) {
          const index = next++;
          try {
            sockets.push(await BenchClient.connect(server.wsUrl, server.origin, tokens[Math.floor(index / SOCKETS_PER_USER)] ?? ''));
          } catch (error) {
            failed++;
            if (failed <= 3) context.progress(`connections: ${transport}: a connect failed: ${error instanceof Error ? error.message : String(error)}`);
          }
        }
      };
      await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
      const seconds = (performance.now() - started) / 1000;
      const opened = sockets.length - before;
      await sleep(SETTLE_MS);
      const serverRssBytes = await server.rssBytes();
      const heapBytes = await server.metric('nodejs_heap_size_used_bytes');
      steps.push({
        connections: level,
        opened: sockets.length,
        failed,
        upgradesPerSecond: opened / seconds,
        serverRssBytes,
        rssPerConnectionBytes: (serverRssBytes - baselineRssBytes) / Math.max(1, sockets.length),
        heapPerConnectionBytes: (heapBytes - baselineHeapBytes) / Math.max(1, sockets.length),
        clientRssPerConnectionBytes: (process.memoryUsage().rss - clientBaseline) / Math.max(1, sockets.length),
      });
    }
    return { path: transport, running: sockets[0]?.transport ?? warm[0]?.transport, baselineRssBytes, baselineHeapBytes, steps };
  } catch (error) {
    return { path: transport, steps, error: error instanceof Error ? error.message : String(error) };
  } finally {
    for (const socket of sockets) socket.terminate();
    await context.servers.release(server);
  }
}

function table(levels: readonly number[], columns: readonly Column[], limit: number | undefined, capped: boolean): Table {
  const mib = (bytes: number | undefined) => cell(bytes === undefined ? undefined : bytes / 2 ** 20, 1);
  const kib = (bytes: number | undefined) => cell(bytes === undefined ? undefined : bytes / 1024, 1);
  const value = (column: Column, show: (column: Column) => string) => (column.unavailable ? 'unavailable' : show(column));
  const rows: string[][] = [
    ['', ...columns.map((column) => column.path)],
    ['server RSS before, MiB', ...columns.map((column) => value(column, (c) => mib(c.baselineRssBytes)))],
  ];
  for (const level of levels) {
    const step = (column: Column) => column.steps.find((candidate) => candidate.connections === level);
    const label = level.toLocaleString('en-US');
    rows.push(
      [`${label} open: server RSS MiB`, ...columns.map((column) => value(column, (c) => mib(step(c)?.serverRssBytes)))],
      [`${label} open: RSS KiB per connection`, ...columns.map((column) => value(column, (c) => kib(step(c)?.rssPerConnectionBytes)))],
      [`${label} open: JS heap KiB per connection`, ...columns.map((column) => value(column, (c) => kib(step(c)?.heapPerConnectionBytes)))],
      [`${label} open: upgrades/s`, ...columns.map((column) => value(column, (c) => cell(step(c)?.upgradesPerSecond, 0)))],
      [`${label} open: failed upgrades`, ...columns.map((column) => value(column, (c) => cell(step(c)?.failed)))],
    );
  }
  rows.push(['transport in ready', ...columns.map((column) => column.running ?? '–')]);
  return {
    title: 'Idle connections: authenticated sockets held open',
    rows,
    notes: [
      `Levels are cumulative; ${IN_FLIGHT} upgrades in flight, ${SOCKETS_PER_USER} sockets per user, each upgrade verifying its JWT. ` +
        'upgrades/s counts TCP connect + HTTP upgrade + JWT check + `ready` frame, with the ws clients sharing the same cores.',
      `Server RSS is VmRSS of the server process (a child of the bench); per connection = (RSS − RSS before) / sockets open. ` +
        'New JS objects first fill heap pages the process already holds, so RSS can understate them: the JS heap in use (/metrics, no forced GC) is shown beside it.',
      `Open-files limit: ${limit ?? 'unknown'}${capped ? ' (levels capped by it)' : ''}; the bench process holds the client end of every socket (its RSS growth is in the JSON).`,
      ...columns.filter((column) => column.unavailable || column.error).map((column) => `${column.path}: ${column.unavailable ?? column.error}`),
    ],
  };
}
