/**
 * `npm run bench`: Parley's speed side by side with node-llama-cpp's own, and its limits.
 *
 *   npm run bench -- [--quick] [--only streaming,cancel] [--model tiny|bench|bench-q4|both] [--transports uws,ws]
 *                    [--slots n] [--threads n] [--llama-build auto|prebuilt|native] [--llama-server path/to/llama-server|none]
 *
 * `npm run build:llama-tools` builds llama.cpp's llama-server (the concurrency benchmark's
 * reference, used by default once built) and llama-quantize (which makes the bench-q4 model).
 *
 * Every server is a child process on 127.0.0.1 (port 0), every loop is bounded in count and
 * time, and nothing here is asserted by `npm test`. Tables go to stdout (GFM, ready to paste),
 * progress to stderr, and every figure to bench/results/<timestamp>.json.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { integerBetween } from './parseArguments.js';
import { Command, InvalidArgumentError, Option } from 'commander';
import { defaults } from '../server/config.js';
import { LlamaBuildChoice } from '../server/engine/LlamaBuild.js';
import type { Benchmark, BenchContext } from './Benchmark.js';
import { cancelLatency } from './cancelLatency.js';
import { concurrency } from './concurrency.js';
import { contentFilter } from './contentFilter.js';
import { documents } from './documents.js';
import { EnginePool } from './EnginePool.js';
import { frameThroughput } from './frameThroughput.js';
import { gateway } from './gateway.js';
import { idleConnections } from './idleConnections.js';
import { machineInfo } from './machineInfo.js';
import { historyMemory } from './historyMemory.js';
import { findLlamaTool, LlamaTool } from './llamaTools.js';
import { planning } from './planning.js';
import { renderTable } from './renderTable.js';
import { BenchModelKind, ModelUnavailableError, resolveModel, type BenchModel } from './resolveModel.js';
import { BenchTransport } from './ServerProcess.js';
import { ServerPool } from './ServerPool.js';
import { streamingOverhead } from './streamingOverhead.js';

const RESULTS_DIR = fileURLToPath(new URL('./results/', import.meta.url));

/** In run order. `models: 'light'` ones measure the transport alone, so they use the tiny model only. */
const BENCHMARKS: ReadonlyArray<{ readonly benchmark: Benchmark; readonly models: 'chosen' | 'light' }> = [
  { benchmark: streamingOverhead, models: 'chosen' },
  { benchmark: concurrency, models: 'chosen' },
  { benchmark: cancelLatency, models: 'chosen' },
  { benchmark: gateway, models: 'chosen' },
  { benchmark: idleConnections, models: 'light' },
  { benchmark: frameThroughput, models: 'light' },
  { benchmark: planning, models: 'light' },
  { benchmark: historyMemory, models: 'light' },
  { benchmark: contentFilter, models: 'light' },
  { benchmark: documents, models: 'light' },
];
const NAMES = BENCHMARKS.map((entry) => entry.benchmark.name);

const ModelChoice = { tiny: 'tiny', bench: 'bench', benchQ4: 'bench-q4', both: 'both' } as const;
type ModelChoice = (typeof ModelChoice)[keyof typeof ModelChoice];

interface Options {
  quick: boolean;
  only?: string[];
  model?: ModelChoice;
  transports: BenchTransport[];
  slots: number;
  threads?: number;
  llamaBuild: LlamaBuildChoice;
  llamaServer?: string;
}

const list = <T extends string>(allowed: readonly T[], what: string) => (value: string): T[] => {
  const items = [...new Set(value.split(',').map((item) => item.trim()).filter(Boolean))];
  const wrong = items.filter((item) => !allowed.includes(item as T));
  if (items.length === 0 || wrong.length > 0) throw new InvalidArgumentError(`${what}: a comma-separated list of ${allowed.join(', ')}`);
  return items as T[];
};
const program = new Command('bench')
  .description("Parley's benchmarks: streaming overhead, concurrency, cancel, idle connections, frame throughput, prompt planning, memory against stored history, the output content filter's cost per token, gateways in front of engine nodes.")
  .option('--quick', 'small counts, tiny model only unless --model says otherwise: under 3 minutes on 2 cores', false)
  .addOption(new Option('--only <names>', `run only these: ${NAMES.join(', ')}`).argParser(list(NAMES, '--only')))
  .addOption(new Option('--model <which>', 'tiny, bench (0.5B shape, F16), bench-q4 (the same in Q4_0, quantized by llama-quantize) or both (tiny and bench; default: tiny with --quick, else both)').choices(Object.values(ModelChoice)))
  .addOption(new Option('--transports <names>', 'WebSocket transports to measure').argParser(list(Object.values(BenchTransport), '--transports')).default([BenchTransport.uws, BenchTransport.ws], 'uws,ws'))
  .addOption(new Option('--slots <n>', 'slots of the servers and in-process engines').argParser(integerBetween(1, 64)).default(defaults.slots, `the server default here, ${defaults.slots}`))
  .addOption(new Option('--threads <n>', 'model threads (default: 1 for tiny, all cores for bench)').argParser(integerBetween(1, 256)))
  .addOption(new Option('--llama-build <build>', 'llama.cpp binary, as the server\'s --llama-build').choices(Object.values(LlamaBuildChoice)).default(LlamaBuildChoice.auto))
  .addOption(new Option('--llama-server <binary>', "also run the concurrency benchmark against llama.cpp's llama-server, started with the same model, threads and slots " +
    '(default: the one `npm run build:llama-tools` built, when there is one; `none` for no llama-server column)'));

program.parse(process.argv);
const options = program.opts<Options>();

const servers = new ServerPool();
const engines = new EnginePool();
const progress = (line: string) => process.stderr.write(`bench: ${line}\n`);
const out = (text = '') => process.stdout.write(`${text}\n`);

async function run(): Promise<number> {
  const startedAt = new Date();
  const started = performance.now();
  const machine = machineInfo();
  const selected = BENCHMARKS.filter((entry) => options.only === undefined || options.only.includes(entry.benchmark.name));
  const choice = options.model ?? (options.quick ? ModelChoice.tiny : ModelChoice.both);
  const kinds = choice === ModelChoice.both ? [BenchModelKind.tiny, BenchModelKind.bench] : [choice];

  out(`# Parley benchmarks, ${startedAt.toISOString()}${options.quick ? ' (--quick)' : ''}`);
  out();
  out(`machine: ${machine.cpuModel}, ${machine.cores} cores, ${machine.ramGiB} GiB RAM, ${machine.os}`);
  out(`software: Node ${machine.node}, node-llama-cpp ${machine.nodeLlamaCpp}, uWS package ${machine.uwsPackage}, ws ${machine.ws}${machine.commit ? `, commit ${machine.commit}` : ''}`);
  const load = machine.loadAverage;
  const busy = (load[0] ?? 0) > machine.cores * 0.25;
  out(`caveat: load average ${load.join(' ')} on ${machine.cores} cores at start${busy ? ': the machine is busy, so these figures are noisy' : ''}`);

  const lightModel = await resolveModel(BenchModelKind.tiny, { quick: options.quick, threads: options.threads, llamaBuild: options.llamaBuild, log: progress });
  const models: BenchModel[] = [];
  const unavailableModels: Array<{ kind: string; reason: string }> = [];
  for (const kind of kinds) {
    if (kind === BenchModelKind.tiny) {
      models.push(lightModel);
      continue;
    }
    progress(`preparing the ${kind} model (the first run generates an ~830 MB file)`);
    try {
      models.push(await resolveModel(kind, { quick: options.quick, threads: options.threads, llamaBuild: options.llamaBuild, log: progress }));
    } catch (error) {
      if (!(error instanceof ModelUnavailableError)) throw error;
      unavailableModels.push({ kind, reason: error.message });
      out(`note: skipping the ${kind} model: ${error.message}`);
    }
  }
  if (models.length === 0 && selected.some((entry) => entry.models === 'chosen')) {
    process.stderr.write('bench: no model to run the model benchmarks with (see the note above)\n');
    return 2;
  }
  const saturating = models.filter((model) => model.threads >= machine.cores);
  if (busy && saturating.length > 0) {
    out(`caveat: the ${saturating.map((model) => model.kind).join(' and ')} model runs ${saturating[0]?.threads} threads on ${machine.cores} cores; ` +
      "with other load, llama.cpp's threads wait on each other and its figures collapse (try --threads 1 on a shared machine)");
  }
  out(`models: ${models.map((model) => `${model.kind} (${model.threads} thread${model.threads === 1 ? '' : 's'}, ${model.workload.maxTokens}-token replies)`).join(', ') || 'none'}; ` +
    `slots ${options.slots}${options.slots === defaults.slots ? ' (the server default here)' : ''}; transports ${options.transports.join(', ')}; loopback only`);
  out();

  const llamaServer = options.llamaServer === 'none' ? undefined : (options.llamaServer ?? (await findLlamaTool(LlamaTool.server)));
  if (llamaServer !== undefined && selected.some((entry) => entry.benchmark === concurrency)) out(`llama-server: ${llamaServer}`);
  const context: BenchContext = { quick: options.quick, models, lightModel, transports: options.transports, slots: options.slots, servers, engines, llamaServer, progress };
  const results: Record<string, unknown> = {};
  let failed = 0;
  for (const [index, { benchmark }] of selected.entries()) {
    const benchmarkStarted = performance.now();
    progress(`${benchmark.name}: ${benchmark.summary}`);
    try {
      const result = await benchmark.run(context);
      const durationMs = Math.round(performance.now() - benchmarkStarted);
      for (const table of result.tables) {
        out(renderTable(table));
        out();
      }
      progress(`${benchmark.name}: ${(durationMs / 1000).toFixed(1)} s`);
      results[benchmark.name] = { summary: benchmark.summary, durationMs, tables: result.tables.map(renderTable), data: result.data };
    } catch (error) {
      failed++;
      const message = error instanceof Error ? (error.stack ?? error.message) : String(error);
      process.stderr.write(`bench: ${benchmark.name} failed: ${message}\n`);
      results[benchmark.name] = { summary: benchmark.summary, durationMs: Math.round(performance.now() - benchmarkStarted), error: message };
    }
    // Free what no later benchmark needs: a 0.5B-shape server holds about a gigabyte.
    const later = selected.slice(index + 1);
    for (const model of models) {
      const needed = later.some((entry) => entry.models === 'chosen' || model === lightModel);
      if (!needed) {
        await servers.releaseModel(model.path);
        await engines.release(model);
      }
    }
  }

  const llamaBuilds = { inProcess: [...engines.llamaBuilds], servers: [...servers.llamaBuilds] };
  out(`llama.cpp builds that ran (--llama-build ${options.llamaBuild}): in-process ${llamaBuilds.inProcess.join(', ') || 'none'}; servers ${llamaBuilds.servers.join(', ') || 'none'}`);
  const serverErrors = servers.serverErrors();
  await servers.stopAll();
  await engines.disposeAll();
  const totalMs = Math.round(performance.now() - started);
  if (serverErrors.length > 0) out(`note: the servers logged ${serverErrors.reduce((sum, entry) => sum + entry.lines.length, 0)} error records (in the JSON file)`);

  await mkdir(RESULTS_DIR, { recursive: true });
  const file = join(RESULTS_DIR, `${startedAt.toISOString().replace(/[:.]/g, '-')}.json`);
  const document = {
    date: startedAt.toISOString(),
    quick: options.quick,
    options: { ...options, model: choice },
    machine,
    llamaBuilds,
    loadAverageAtEnd: loadavg().map((value) => Math.round(value * 100) / 100),
    cores: availableParallelism(),
    models,
    unavailableModels,
    benchmarks: results,
    serverErrors,
    totalMs,
  };
  await writeFile(file, `${JSON.stringify(document, null, 2)}\n`);
  out(`total ${(totalMs / 1000).toFixed(1)} s; results: ${file}`);
  return failed === 0 ? 0 : 1;
}

process.once('SIGINT', () => {
  process.stderr.write('\nbench: interrupted; stopping the servers\n');
  servers.killAll();
  process.exit(130);
});
try {
  process.exitCode = await run();
} catch (error) {
  process.stderr.write(`bench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  servers.killAll();
  process.exitCode = 2;
}
