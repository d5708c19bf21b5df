import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { GENERATOR_KIND_KEY } from '../../models/GeneratedModel.js';
import { readGguf } from '../../models/gguf/readGguf.js';
import { modelIdOf } from '../http/modelIdOf.js';

/**
 * A GGUF file Parley can serve, as read from its header (never its tensors): enough to name it,
 * list it and estimate its memory before loading it.
 */
export interface ModelFile {
  /** The stable name users and the API select it by: the file name without `.gguf`, as modelIdOf spells ids. */
  readonly id: string;
  /** Shown to people: the GGUF's `general.name`, else the id. */
  readonly displayName: string;
  readonly path: string;
  /** True for Parley's generated demo model. */
  readonly demo: boolean;
  readonly fileBytes: number;
  /** The context the model was trained with (`<arch>.context_length`); 0 when the file does not say. */
  readonly trainContextSize: number;
  /** KV cache bytes per token of context (F16 keys and values over every layer); 0 when the file does not say. */
  readonly kvBytesPerToken: number;
}

/** Reads a GGUF header (structure checks only: llama.cpp checks the rest when it loads). `demo` defaults to what the file says. */
export async function readModelFile(path: string, options: { demo?: boolean } = {}): Promise<ModelFile> {
  const file = await readGguf(path, { checks: 'structure' });
  const { size } = await stat(path);
  const arch = file.string('general.architecture') ?? 'llama';
  const number = (key: string) => {
    try {
      return file.integer(`${arch}.${key}`);
    } catch {
      return undefined;
    }
  };
  const layers = number('block_count') ?? 0;
  const embedding = number('embedding_length') ?? 0;
  const heads = number('attention.head_count') ?? 0;
  const kvHeads = number('attention.head_count_kv') ?? heads;
  const keyLength = number('attention.key_length') ?? (heads > 0 ? Math.floor(embedding / heads) : 0);
  const valueLength = number('attention.value_length') ?? keyLength;
  const id = modelIdOf(basename(path).replace(/\.gguf$/i, ''));
  const text = (key: string) => {
    try {
      return file.string(key);
    } catch {
      return undefined;
    }
  };
  const displayName = text('general.name');
  return {
    id,
    displayName: displayName !== undefined && displayName.trim() !== '' ? displayName.trim().slice(0, 128) : id,
    path,
    // Parley's generated demo model is the demo whichever way it is given (the fallback, or --model).
    demo: options.demo ?? text(GENERATOR_KIND_KEY) === 'demo',
    fileBytes: size,
    trainContextSize: number('context_length') ?? 0,
    kvBytesPerToken: layers * kvHeads * (keyLength + valueLength) * F16_BYTES,
  };
}

const F16_BYTES = 2;
