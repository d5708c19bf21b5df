import { LlamaBuild } from './LlamaBuild.js';

/** Models below this size decode too fast to split across threads on the prebuilt binary. */
export const SMALL_MODEL_BYTES = 256 * 1024 * 1024;

export interface ThreadChoice {
  readonly threads: number;
  /** Why, for the startup log. */
  readonly reason: string;
}

/**
 * The thread count for `--threads auto`.
 *
 * - The native build keeps one ggml thread pool per context alive (withThreadpoolPatch): every
 *   math core helps, whatever the model. Measured on 2 vCPUs: the 0.5B-shape F16 model decodes
 *   one token in 40 ms on 2 threads against 62 on 1, and the tiny model streams as fast on 2
 *   threads as on 1.
 * - The prebuilt binary starts its worker threads inside every decode. A model of a few hundred
 *   megabytes or more still gains from them (the 0.5B shape: 17.5 tok/s on 2 threads, 12.7 on 1),
 *   but a small one loses: the tiny model streamed 75-92 tok/s on 2 threads against 1,100-1,300 on
 *   1, so small models get one thread.
 *
 * These measurements are of the CPU backend, so the rules above apply only when no layer is
 * offloaded. With layers on a GPU (`gpuLayers` > 0), threads only run what stays on the CPU (the
 * layers left over, sampling's logits copy) and the count is node-llama-cpp's own default for a GPU
 * instance: with no thread limit, a context computes with `cpuMathCores` threads. A fully
 * offloaded model hardly uses them; a partly offloaded one needs every core for its CPU layers.
 *
 * `mathCores` is llama.cpp's count of cores useful for math (node-llama-cpp's
 * `llama.cpuMathCores`: physical cores, without SMT siblings or efficiency cores), which is also
 * llama.cpp's own default.
 */
export function chooseThreads(options: {
  readonly build: LlamaBuild;
  readonly mathCores: number;
  readonly modelBytes: number;
  /** Layers offloaded to a GPU; 0 or absent when the model runs on the CPU. */
  readonly gpuLayers?: number;
}): ThreadChoice {
  const cores = Math.max(1, Math.floor(options.mathCores));
  if ((options.gpuLayers ?? 0) > 0) {
    return { threads: cores, reason: `node-llama-cpp's default with a GPU: ${cores} math core${cores === 1 ? '' : 's'}, for the work left on the CPU` };
  }
  if (options.build === LlamaBuild.prebuilt && options.modelBytes < SMALL_MODEL_BYTES) {
    return { threads: 1, reason: 'small model on the prebuilt binary, which starts its threads on every decode' };
  }
  return { threads: cores, reason: `${cores} math core${cores === 1 ? '' : 's'}` };
}
