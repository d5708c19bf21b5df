import type { ModelFile } from './ModelFile.js';

/**
 * Bytes of memory a model needs with `slots` sequences of `contextSize` tokens each: its weights
 * (the file), the F16 KV cache of every sequence, and llama.cpp's compute buffers (estimated as
 * 5% of the weights plus 32 MiB; measured llama.cpp CPU buffers of small models stay below that).
 * An estimate for refusing what cannot fit, not an accounting: llama.cpp may use a little more.
 */
export function estimateModelMemory(file: ModelFile, slots: number, contextSize: number): number {
  const perSequence = file.trainContextSize > 0 ? Math.min(contextSize, file.trainContextSize) : contextSize;
  return file.fileBytes + file.kvBytesPerToken * perSequence * slots + Math.ceil(file.fileBytes * 0.05) + COMPUTE_BUFFER_BYTES;
}

const COMPUTE_BUFFER_BYTES = 32 * 1024 * 1024;

/**
 * The most slots, at most `wanted`, whose contexts fit beside the model within `limitBytes`;
 * 0 when not even one does.
 */
export function fitSlots(file: ModelFile, wanted: number, contextSize: number, limitBytes: number): number {
  for (let slots = wanted; slots >= 1; slots--) {
    if (estimateModelMemory(file, slots, contextSize) <= limitBytes) return slots;
  }
  return 0;
}
