/** Nearest-rank percentile of a sample (p in 0–100). */
export function percentile(sample: number[], p: number): number {
  if (sample.length === 0) return Number.NaN;
  const sorted = [...sample].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1] as number;
}

export const median = (sample: number[]) => percentile(sample, 50);

export const round = (n: number, digits = 3) => Number(n.toFixed(digits));

export async function timed(fn: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await fn();
  return performance.now() - started;
}

/**
 * Runs the package's call and its baseline alternately, `iterations` times each, with the
 * order flipped every round so neither always runs on a warmer cache. Returns both samples.
 */
export async function interleave(
  iterations: number,
  pkg: () => Promise<unknown>,
  baseline: () => Promise<unknown>,
): Promise<{ pkg: number[]; baseline: number[] }> {
  const result = { pkg: [] as number[], baseline: [] as number[] };
  for (let i = 0; i < iterations; i++) {
    if (i % 2 === 0) {
      result.pkg.push(await timed(pkg));
      result.baseline.push(await timed(baseline));
    } else {
      result.baseline.push(await timed(baseline));
      result.pkg.push(await timed(pkg));
    }
  }
  return result;
}

export interface Figure {
  name: string;
  value: number;
  unit: string;
  baseline: number;
  /** value / baseline */
  ratio: number;
  note?: string;
}

export function figure(
  name: string,
  value: number,
  unit: string,
  baseline: number,
  note?: string,
): Figure {
  return {
    name,
    value: round(value),
    unit,
    baseline: round(baseline),
    ratio: round(value / baseline),
    ...(note ? { note } : {}),
  };
}
