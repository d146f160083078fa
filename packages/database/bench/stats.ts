/** Nearest-rank percentile of a sample (p in 0–100). */
export function percentile(sample: number[], p: number): number {
  if (sample.length === 0) return Number.NaN;
  const sorted = [...sample].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1] as number;
}

/** The middle of a sample; the mean of the two middle values when its size is even. */
export function median(sample: number[]): number {
  if (sample.length === 0) return Number.NaN;
  const sorted = [...sample].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

export const round = (n: number, digits = 3) => Number(n.toFixed(digits));

/** A figure's name from a description: lower case, words joined by `_`. */
export const slug = (name: string) =>
  name
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '_')
    .replace(/^_|_$/g, '');

export async function timed(fn: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await fn();
  return performance.now() - started;
}

/**
 * Runs `a` and `b` once per round, `rounds` times, the order flipped every round so
 * neither always runs on a warmer cache. `round` is the round's number.
 */
export async function alternate(
  rounds: number,
  a: (round: number) => Promise<unknown>,
  b: (round: number) => Promise<unknown>,
): Promise<void> {
  for (let round = 0; round < rounds; round++) {
    const [first, second] = round % 2 === 0 ? [a, b] : [b, a];
    await first(round);
    await second(round);
  }
}

/**
 * Runs every function once per round, `rounds` times, the order rotated by one each round:
 * with three or more contenders, none always runs first (on the coldest cache) or last.
 */
export async function rotate(
  rounds: number,
  fns: ((round: number) => Promise<unknown>)[],
): Promise<void> {
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < fns.length; i++) await fns[(round + i) % fns.length]?.(round);
  }
}

/** The package's call and its baseline, alternated and timed: both samples. */
export async function interleave(
  iterations: number,
  pkg: () => Promise<unknown>,
  baseline: () => Promise<unknown>,
): Promise<{ pkg: number[]; baseline: number[] }> {
  const result = { pkg: [] as number[], baseline: [] as number[] };
  await alternate(
    iterations,
    async () => result.pkg.push(await timed(pkg)),
    async () => result.baseline.push(await timed(baseline)),
  );
  return result;
}

/** The smallest and largest of a figure over the rounds of a run: its noise. */
export interface Spread {
  min: number;
  max: number;
}

export interface Figure {
  name: string;
  value: number;
  unit: string;
  baseline: number;
  /** value / baseline */
  ratio: number;
  note?: string;
  /** What the baseline is (e.g. "one-statement CTE"); the figure's own name says what the value is. */
  baselineName?: string;
  /** value over the rounds (min–max); absent for a figure measured once. */
  spread?: Spread;
  /** baseline over the rounds (min–max). */
  baselineSpread?: Spread;
  /** value / baseline round by round (min–max): what tells a real change from noise. */
  ratioSpread?: Spread;
}

export function spreadOf(sample: number[]): Spread {
  return { min: round(Math.min(...sample)), max: round(Math.max(...sample)) };
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

/**
 * A figure from paired rounds (round i of the package beside round i of the baseline):
 * value and baseline are `combine` of the rounds (the median round by default), with each
 * one's min–max over the rounds and the min–max of the round-by-round ratio.
 */
export function roundsFigure(
  name: string,
  pkg: number[],
  unit: string,
  baseline: number[],
  options: { baselineName?: string; value?: number; baselineValue?: number } = {},
): Figure {
  const ratios = pkg.map((v, i) => v / (baseline[i] ?? Number.NaN));
  return {
    ...figure(name, options.value ?? median(pkg), unit, options.baselineValue ?? median(baseline)),
    ...(options.baselineName ? { baselineName: options.baselineName } : {}),
    spread: spreadOf(pkg),
    baselineSpread: spreadOf(baseline),
    ratioSpread: { min: round(Math.min(...ratios)), max: round(Math.max(...ratios)) },
  };
}

/** "1,234–1,456" or "0.41–0.52": a spread for the output. */
export function formatSpread(spread: Spread | undefined): string {
  if (!spread) return '';
  const f = (n: number) =>
    Math.abs(n) >= 100 ? Math.round(n).toLocaleString('en') : String(Number(n.toPrecision(3)));
  return `${f(spread.min)}–${f(spread.max)}`;
}
