import type { BenchContext, BenchmarkResult } from './Benchmark.js';
import type { Table } from './renderTable.js';
import type { BenchModel } from './resolveModel.js';
import type { BenchTransport } from './ServerProcess.js';

/** How one side-by-side benchmark measures a column, and what it makes of a model's columns. */
export interface ColumnBenchmark<C> {
  /** The baseline: the engine in this process. */
  inProcess(context: BenchContext, model: BenchModel): Promise<C>;
  /** The same work delivered through a Parley server on one transport. */
  throughServer(context: BenchContext, model: BenchModel, transport: BenchTransport): Promise<C>;
  /** Columns after the servers' (e.g. a reference server), if any. */
  extra?(context: BenchContext, model: BenchModel): Promise<C[]>;
  table(context: BenchContext, model: BenchModel, columns: readonly C[]): Table;
  /** What goes into the JSON file for one column. */
  data(column: C): unknown;
}

/**
 * Runs a side-by-side benchmark for every chosen model: the in-process column first, then one
 * column per transport (and any extra ones), one table per model. Columns run one after another,
 * never together, so each has the machine to itself.
 */
export async function compareColumns<C>(context: BenchContext, benchmark: ColumnBenchmark<C>): Promise<BenchmarkResult> {
  const tables: Table[] = [];
  const data: Record<string, unknown> = {};
  for (const model of context.models) {
    const columns: C[] = [await benchmark.inProcess(context, model)];
    for (const transport of context.transports) columns.push(await benchmark.throughServer(context, model, transport));
    if (benchmark.extra !== undefined) columns.push(...(await benchmark.extra(context, model)));
    tables.push(benchmark.table(context, model, columns));
    data[model.kind] = columns.map((column) => benchmark.data(column));
  }
  return { tables, data };
}
