/**
 * `npm run build:llama-tools`: builds llama.cpp's llama-server and llama-quantize for the
 * benchmarks (see bench/llamaTools.ts). Needs cmake, a C++ compiler and the llama.cpp source
 * that node-llama-cpp unpacks when it builds (`npm install` with a toolchain, or `npm run build:llama`).
 */
import { buildLlamaTools } from '../bench/llamaTools.js';

try {
  const { seconds, server, quantize } = await buildLlamaTools();
  process.stdout.write(`\nBuilt llama.cpp's tools in ${Math.round(seconds)} s:\n  ${server}\n  ${quantize}\n` +
    '`npm run bench` compares against this llama-server, and `--model bench-q4` quantizes with this llama-quantize.\n');
} catch (error) {
  process.stderr.write(`build-llama-tools: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
}
