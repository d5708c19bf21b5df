/** Order statistics of one set of samples; every figure is undefined when there are none. */
export interface Summary {
  readonly n: number;
  readonly mean: number | undefined;
  readonly min: number | undefined;
  readonly p50: number | undefined;
  readonly p95: number | undefined;
  readonly p99: number | undefined;
  readonly max: number | undefined;
}

/**
 * Nearest-rank percentiles (the smallest sample with at least p % of the samples at or below
 * it), so every reported figure is a value that was actually measured, never an interpolation.
 * With few samples p99 is simply the maximum: the run's sample count is reported beside it.
 */
export function summarize(values: readonly number[]): Summary {
  const sorted = values.filter(Number.isFinite).sort((a, b) => a - b);
  const n = sorted.length;
  const rank = (p: number) => (n === 0 ? undefined : sorted[Math.min(n - 1, Math.max(0, Math.ceil((p / 100) * n) - 1))]);
  return {
    n,
    mean: n === 0 ? undefined : sorted.reduce((sum, value) => sum + value, 0) / n,
    min: sorted[0],
    p50: rank(50),
    p95: rank(95),
    p99: rank(99),
    max: sorted[n - 1],
  };
}
