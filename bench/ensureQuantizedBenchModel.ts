import { spawn } from 'node:child_process';
import { rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ensureModel, type EnsuredModel } from '../models/ensureModel.js';
import { GENERATOR_HASH_KEY } from '../models/GeneratedModel.js';
import { readGguf } from '../models/gguf/readGguf.js';
import { findLlamaTool, LlamaTool } from './llamaTools.js';

export const Q4_0_FILE_NAME = 'parley-bench-0.5b-q4_0.gguf';
/** llama.cpp's `general.file_type` of a model quantized to Q4_0 (LLAMA_FTYPE_MOSTLY_Q4_0). */
const FILE_TYPE_Q4_0 = 2;

export class QuantizeUnavailableError extends Error {
  override name = 'QuantizeUnavailableError';
  readonly code = 'quantize_unavailable' as const;
}

/**
 * The bench model in Q4_0 (about 250 MB), made from the F16 bench model by llama.cpp's own
 * `llama-quantize` (`npm run build:llama-tools`), never by a writer of Parley's: a hand-made
 * quantized file once loaded in one binary and crashed another. llama-quantize keeps the F16
 * file's metadata, `parley.generator_hash` included, so a Q4_0 file whose hash differs from the
 * current F16 file's was made from an older model and is quantized again. Cached next to the
 * F16 file in models/generated/ (git-ignored).
 */
export async function ensureQuantizedBenchModel(log: (line: string) => void): Promise<EnsuredModel> {
  const source = await ensureModel('bench', { logger: log });
  const path = join(dirname(source.path), Q4_0_FILE_NAME);
  const wanted = (await readGguf(source.path, { checks: 'llama' })).string(GENERATOR_HASH_KEY);
  const existing = await readGguf(path, { checks: 'llama' }).catch(() => undefined);
  if (existing !== undefined && existing.string(GENERATOR_HASH_KEY) === wanted && existing.integer('general.file_type') === FILE_TYPE_Q4_0) {
    return { path, kind: source.kind, name: `${existing.string('general.name') ?? 'bench'}, Q4_0`, rebuilt: false };
  }
  const quantize = await findLlamaTool(LlamaTool.quantize);
  if (quantize === undefined) {
    throw new QuantizeUnavailableError('llama.cpp\'s llama-quantize is not built: run `npm run build:llama-tools` (needs cmake and a C++ compiler)');
  }
  log(`quantizing the bench model to Q4_0 with ${quantize}`);
  const temporary = `${path}.${process.pid}.tmp`;
  try {
    await run(quantize, [source.path, temporary, 'Q4_0']);
    const made = await readGguf(temporary, { checks: 'llama' });
    if (made.integer('general.file_type') !== FILE_TYPE_Q4_0) throw new QuantizeUnavailableError(`llama-quantize wrote file type ${made.integer('general.file_type')}, not Q4_0`);
    await rename(temporary, path);
    return { path, kind: source.kind, name: `${made.string('general.name') ?? 'bench'}, Q4_0`, rebuilt: true };
  } finally {
    await rm(temporary, { force: true });
  }
}

function run(binary: string, args: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    let tail = '';
    const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (chunk: Buffer) => { tail = (tail + chunk.toString('utf8')).slice(-2000); };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new QuantizeUnavailableError(`llama-quantize exited with ${code}: ${tail.trim().slice(-500)}`))));
  });
}
