import type { EnginePool } from './EnginePool.js';
import type { Table } from './renderTable.js';
import type { BenchModel } from './resolveModel.js';
import type { BenchTransport } from './ServerProcess.js';
import type { ServerPool } from './ServerPool.js';

/** What every benchmark gets: the run's choices and the shared servers and engines. */
export interface BenchContext {
  readonly quick: boolean;
  /** The models chosen with --model, in order. */
  readonly models: readonly BenchModel[];
  /** The tiny model, for the benchmarks whose figures do not depend on the model (connections, frames). */
  readonly lightModel: BenchModel;
  readonly transports: readonly BenchTransport[];
  /** Slots of the servers and in-process engines (sequences of one context). */
  readonly slots: number;
  readonly servers: ServerPool;
  /** A llama-server binary to compare with (--llama-server), if given. */
  readonly llamaServer: string | undefined;
  readonly engines: EnginePool;
  /** A progress line on stderr, so stdout holds only the tables. */
  readonly progress: (line: string) => void;
}

export interface BenchmarkResult {
  readonly tables: readonly Table[];
  /** Everything measured, for the JSON file. */
  readonly data: unknown;
}

/** One benchmark of `npm run bench`, selected by name with --only. */
export interface Benchmark {
  readonly name: string;
  /** One line: what it measures. */
  readonly summary: string;
  run(context: BenchContext): Promise<BenchmarkResult>;
}
