import { availableParallelism } from 'node:os';
import { ensureModel } from '../models/ensureModel.js';
import { ensureQuantizedBenchModel } from './ensureQuantizedBenchModel.js';
import type { LlamaBuildChoice } from '../server/engine/LlamaBuild.js';

/**
 * The generated models the benchmarks run: Parley's tiny test model, the 0.5B-shape F16 one, and
 * that one quantized to Q4_0 by llama.cpp's llama-quantize (ensureQuantizedBenchModel).
 */
export const BenchModelKind = { tiny: 'tiny', bench: 'bench', benchQ4: 'bench-q4' } as const;
export type BenchModelKind = (typeof BenchModelKind)[keyof typeof BenchModelKind];

/** How much work each benchmark does with one model; --quick shrinks it to fit in 3 minutes. */
export interface Workload {
  /** Reply length (the server's --max-tokens) for the streaming and concurrency runs. */
  readonly maxTokens: number;
  /** Measured replies per path in the streaming benchmark, after one warm-up. */
  readonly streamRuns: number;
  /** Sequential fresh requests each concurrent client sends. */
  readonly requestsPerClient: number;
  /**
   * Rounds of the concurrency benchmark: every column runs each client count this many times,
   * the columns taking turns, so a drift in the machine's speed falls on all of them alike.
   */
  readonly concurrencyRounds: number;
  /** Cancels measured per path. */
  readonly cancels: number;
  /** How long a reply streams before it is cancelled, so the cancel hits a running decode. */
  readonly cancelAfterMs: number;
}

export interface BenchModel {
  readonly kind: BenchModelKind;
  readonly path: string;
  readonly name: string;
  readonly threads: number;
  /** The llama.cpp binary asked for, by the in-process engine and the servers alike. */
  readonly llamaBuild: LlamaBuildChoice;
  /** Per sequence, the same for the in-process engine and the servers. */
  readonly contextSize: number;
  readonly workload: Workload;
}

/**
 * Sizes chosen from field-notes speeds on 2 vCPU: the tiny model streams ~1,000-1,500 tok/s, the
 * 0.5B-shape F16 model ~24 tok/s with one sequence (a 128-token reply is ~5 s). --quick runs
 * the bench model only when asked for explicitly, and then with replies a quarter as long.
 */
const workloads: Readonly<Record<BenchModelKind, { readonly quick: Workload; readonly full: Workload }>> = {
  tiny: {
    quick: { maxTokens: 256, streamRuns: 6, requestsPerClient: 2, concurrencyRounds: 1, cancels: 20, cancelAfterMs: 20 },
    full: { maxTokens: 512, streamRuns: 12, requestsPerClient: 4, concurrencyRounds: 3, cancels: 100, cancelAfterMs: 20 },
  },
  bench: {
    quick: { maxTokens: 32, streamRuns: 2, requestsPerClient: 1, concurrencyRounds: 1, cancels: 5, cancelAfterMs: 150 },
    full: { maxTokens: 128, streamRuns: 3, requestsPerClient: 1, concurrencyRounds: 5, cancels: 30, cancelAfterMs: 150 },
  },
  'bench-q4': {
    quick: { maxTokens: 32, streamRuns: 2, requestsPerClient: 1, concurrencyRounds: 1, cancels: 5, cancelAfterMs: 150 },
    full: { maxTokens: 128, streamRuns: 3, requestsPerClient: 1, concurrencyRounds: 5, cancels: 30, cancelAfterMs: 150 },
  },
};

const CONTEXT_SIZE = 2048;

export class ModelUnavailableError extends Error {
  override name = 'ModelUnavailableError';
  readonly code = 'model_unavailable' as const;
}

/**
 * Builds (or finds cached) one of Parley's generated models. Threads: 1 for the tiny model, whose
 * per-token cost is the JS layer's and gets slower with more; all cores for the 0.5B shape,
 * whose matrix work scales with them (as in the measurements).
 */
export async function resolveModel(kind: BenchModelKind, options: { quick: boolean; threads?: number; llamaBuild: LlamaBuildChoice; log: (line: string) => void }): Promise<BenchModel> {
  let ensured;
  try {
    ensured = kind === BenchModelKind.benchQ4 ? await ensureQuantizedBenchModel(options.log) : await ensureModel(kind, { logger: options.log });
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new ModelUnavailableError(
      kind === BenchModelKind.bench
        ? `the bench model (0.5B shape, F16) is not available: ${reason}. It comes from ensureModel('bench') in models/ensureModel.ts.`
        : kind === BenchModelKind.benchQ4
          ? `the bench model in Q4_0 is not available: ${reason}`
          : `the ${kind} model could not be built: ${reason}`,
      { cause: error },
    );
  }
  return {
    kind,
    path: ensured.path,
    name: ensured.name,
    threads: options.threads ?? (kind === BenchModelKind.tiny ? 1 : availableParallelism()),
    llamaBuild: options.llamaBuild,
    contextSize: CONTEXT_SIZE,
    workload: workloads[kind][options.quick ? 'quick' : 'full'],
  };
}
