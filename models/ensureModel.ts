import { createHash } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchModel } from './benchModel.js';
import { demoModel } from './demoModel.js';
import { GENERATOR_HASH_KEY } from './GeneratedModel.js';
import type { GeneratedModel, ModelKind } from './GeneratedModel.js';
import { readGguf } from './gguf/readGguf.js';
import type { GgufFile } from './gguf/GgufFile.js';
import { tinyModel } from './tinyModel.js';

export interface EnsureModelOptions {
  /** Where generated files live. Defaults to models/generated/ next to this module. */
  dir?: string;
  logger?: (message: string) => void;
}

export interface EnsuredModel {
  path: string;
  kind: ModelKind;
  /** `general.name` of the file. */
  name: string;
  /** True when this call wrote the file. */
  rebuilt: boolean;
}

export const DEFAULT_GENERATED_DIR = fileURLToPath(new URL('./generated/', import.meta.url));

const generators: Readonly<Record<ModelKind, GeneratedModel>> = { tiny: tinyModel, demo: demoModel, bench: benchModel };

/** Builds in progress in this process, by destination path; concurrent callers share one build. */
const inFlight = new Map<string, Promise<EnsuredModel>>();

/**
 * Returns the path of one of Parley's generated models, building it first when the cached file
 * is missing, invalid, or was made by different generator sources (its `parley.generator_hash`
 * differs from the hash of the current sources).
 *
 * Safe across processes: each build writes a private temporary file and renames it into place,
 * so concurrent builders never corrupt the file and readers never see a partial one.
 */
export async function ensureModel(kind: ModelKind, options: EnsureModelOptions = {}): Promise<EnsuredModel> {
  const generator = generators[kind];
  if (generator === undefined) throw new RangeError(`unknown generated model kind '${String(kind)}'`);
  const dir = options.dir ?? DEFAULT_GENERATED_DIR;
  const path = join(dir, generator.fileName);
  const pending = inFlight.get(path);
  if (pending !== undefined) return pending;
  const work = ensureAt(generator, dir, path, options.logger).finally(() => inFlight.delete(path));
  inFlight.set(path, work);
  return work;
}

/** The hash ensureModel stores in, and expects from, the file of `kind`. */
export async function generatorHash(kind: ModelKind): Promise<string> {
  const hash = createHash('sha256');
  for (const source of generators[kind].sources) {
    hash.update(basename(source)).update('\0').update(await readFile(source)).update('\0');
  }
  return hash.digest('hex');
}

async function ensureAt(generator: GeneratedModel, dir: string, path: string, logger: ((message: string) => void) | undefined): Promise<EnsuredModel> {
  const hash = await generatorHash(generator.kind);
  const existing = await readExisting(path, logger);
  if (existing !== undefined && existing.string(GENERATOR_HASH_KEY) === hash) {
    return { path, kind: generator.kind, name: existing.string('general.name') ?? generator.kind, rebuilt: false };
  }
  logger?.(existing === undefined
    ? `building the ${generator.kind} model at ${path}`
    : `rebuilding the ${generator.kind} model at ${path}: its generator changed`);
  await mkdir(dir, { recursive: true });
  await generator.build(path, hash);
  const built = await readGguf(path, { checks: 'llama' });
  return { path, kind: generator.kind, name: built.string('general.name') ?? generator.kind, rebuilt: true };
}

async function readExisting(path: string, logger: ((message: string) => void) | undefined): Promise<GgufFile | undefined> {
  try {
    return await readGguf(path, { checks: 'llama' });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') logger?.(`discarding ${path}: ${(error as Error).message}`);
    return undefined;
  }
}
