import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Kinds that `npm run models` builds (buildModels iterates this object), so tests can rely on them. */
export const GeneratedModelKind = { tiny: 'tiny', demo: 'demo' } as const;
export type GeneratedModelKind = (typeof GeneratedModelKind)[keyof typeof GeneratedModelKind];

/** Kinds built only when a caller asks ensureModel for them: the bench model is 831 MB. */
export const OnDemandModelKind = { bench: 'bench' } as const;
export type OnDemandModelKind = (typeof OnDemandModelKind)[keyof typeof OnDemandModelKind];

/** Every kind ensureModel can produce. */
export type ModelKind = GeneratedModelKind | OnDemandModelKind;

/** The metadata key holding the hash of the generator sources that produced a file. */
export const GENERATOR_HASH_KEY = 'parley.generator_hash';
/** Present in every file Parley generates; its value is the model kind. */
export const GENERATOR_KIND_KEY = 'parley.generator';

/** How to produce one of Parley's own GGUF files. */
export interface GeneratedModel {
  readonly kind: ModelKind;
  readonly fileName: string;
  /**
   * Every file whose content determines the output bytes. ensureModel hashes them, and a file
   * whose stored hash differs is rebuilt.
   */
  readonly sources: readonly string[];
  /** Writes the model to `path` atomically and validated; `generatorHash` is stored under GENERATOR_HASH_KEY. */
  build(path: string, generatorHash: string): Promise<{ path: string; size: number }>;
}

/**
 * The path of a module next to `moduleUrl`, with the same extension as that module, so the list of
 * sources holds whether the generators run from `.ts` (tsx) or from compiled `.js`.
 */
export function siblingSource(moduleUrl: string, relativeWithoutExtension: string): string {
  const self = fileURLToPath(moduleUrl);
  return fileURLToPath(new URL(relativeWithoutExtension + extname(self), moduleUrl));
}

/** Sources shared by every generator: the GGUF writer and reader, and the vocabulary builder. */
export function commonGeneratorSources(): string[] {
  const here = import.meta.url;
  return [
    'GeneratedModel', 'SpmVocab', 'mulberry32', 'addPassThroughBlocks',
    'gguf/GgufWriter', 'gguf/readGguf', 'gguf/GgufFile', 'gguf/validateLlamaGguf', 'gguf/ggufFormat', 'gguf/GgufValidationError',
  ].map((name) => siblingSource(here, `./${name}`));
}
