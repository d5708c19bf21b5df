/**
 * One stream, paired: a Parley server (the default path: uws, `--llama-build auto`) and
 * llama.cpp's llama-server take turns answering one fresh 128-token request at a time, the
 * order rotating each round, and the tool prints each round's tok/s and the median of the
 * within-round ratios. It sizes the one case the concurrency table measures least steadily
 * (one fast stream, where a round takes about 1.5 s) with more rounds than the table can afford.
 *
 *   npx tsx bench/pairedStream.ts [--model bench|bench-q4] [--rounds 12] [--llama-server <binary>]
 *
 * tok/s per request: generated tokens over the time from sending to the last token, as the
 * concurrency table's aggregate for one client. Needs a quiet machine and `npm run
 * build:llama-tools` (or --llama-server). Never part of `npm test`.
 */
import { Command, Option } from 'commander';
import { BenchClient } from './BenchClient.js';
import { chatServerSpec } from './chatServerSpec.js';
import { findLlamaTool, LlamaTool } from './llamaTools.js';
import { LlamaServerProcess } from './LlamaServerProcess.js';
import { integerBetween } from './parseArguments.js';
import { BenchModelKind, resolveModel } from './resolveModel.js';
import { ServerProcess } from './ServerProcess.js';
import { summarize } from './summarize.js';

const program = new Command()
  .addOption(new Option('--model <kind>', 'bench (0.5B shape, F16) or bench-q4').choices([BenchModelKind.bench, BenchModelKind.benchQ4]).default(BenchModelKind.benchQ4))
  .option('--rounds <n>', 'rounds, each one request to each server', integerBetween(1, 200), 12)
  .option('--llama-server <binary>', 'llama-server to compare with (default: the one npm run build:llama-tools built)')
  .parse();
const options = program.opts<{ model: BenchModelKind; rounds: number; llamaServer?: string }>();

const binary = options.llamaServer ?? (await findLlamaTool(LlamaTool.server));
if (binary === undefined) throw new Error('no llama-server: run `npm run build:llama-tools` or pass --llama-server');
const model = await resolveModel(options.model, { quick: false, llamaBuild: 'auto', log: (line) => process.stderr.write(`${line}\n`) });
const parley = await ServerProcess.start(chatServerSpec(model, 'uws', 8));
const reference = await LlamaServerProcess.start(binary, model, 8);
const client = await BenchClient.connect(parley.wsUrl, parley.origin, await parley.token('paired'));
try {
  await client.send('warm-up').ended;
  await reference.complete('warm-up', model.workload.maxTokens, AbortSignal.timeout(120_000));
  const ratios: number[] = [];
  process.stdout.write(`${model.kind}, ${model.threads} threads, Parley ${parley.transport} (llama.cpp ${parley.llamaBuild ?? 'unknown'}) against ${binary}\nround\tParley tok/s\tllama-server tok/s\tratio\n`);
  for (let round = 0; round < options.rounds; round++) {
    const text = `Tell me about thing number ${round}`;
    const measure = {
      parley: async () => {
        const trace = await client.send(text).ended;
        return (trace.completionTokens * 1000) / ((trace.endedAt ?? trace.sentAt) - trace.sentAt);
      },
      reference: async () => {
        const trace = await reference.complete(text, model.workload.maxTokens, AbortSignal.timeout(120_000));
        return (trace.tokens * 1000) / (trace.endedAt - trace.sentAt);
      },
    };
    const first = round % 2 === 0 ? 'parley' : 'reference';
    const rates = { parley: 0, reference: 0 };
    rates[first] = await measure[first]();
    const second = first === 'parley' ? 'reference' : 'parley';
    rates[second] = await measure[second]();
    ratios.push(rates.parley / rates.reference);
    process.stdout.write(`${round + 1}\t${rates.parley.toFixed(1)}\t${rates.reference.toFixed(1)}\t${(rates.parley / rates.reference).toFixed(2)}\n`);
  }
  const summary = summarize(ratios);
  process.stdout.write(`median ratio ${summary.p50?.toFixed(3)} (min ${summary.min?.toFixed(2)}, max ${summary.max?.toFixed(2)}, ${summary.n} rounds)\n`);
} finally {
  client.close();
  await parley.stop();
  await reference.stop();
}
