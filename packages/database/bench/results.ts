import { readFileSync } from 'node:fs';
import type { Figure } from './stats.js';

/** Bumped when a field changes meaning; bench:compare refuses files of another version. */
export const BENCH_RESULTS_VERSION = 1;

/** What `pnpm bench --json FILE` writes. */
export interface BenchResults {
  version: number;
  meta: {
    date: string;
    /** The commit measured, "+changes" when the work tree differed; null outside git. */
    commit: string | null;
    node: string;
    postgres: string;
    provider: string;
    cores: number;
    cpu: string;
    memoryGiB: number;
    /** Whether the server and the client ran on cores of their own, and which. */
    pinned: boolean;
    serverCores: number[];
    clientCores: number[];
    pinning: string;
    /** 1, 5 and 15-minute load averages when the run started and ended: other work on the machine. */
    loadAverage: { start: number[]; end: number[] };
    rows: number;
    rounds: number;
    opsPerCaller: number;
    iterations: number;
    sections: string[];
    durationS: number;
  };
  figures: Figure[];
}

/** Reads a results file, saying which file and what is wrong when it is not one. */
export function readResults(file: string): BenchResults {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new Error(`${file}: not a readable JSON file (${(error as Error).message})`);
  }
  const results = parsed as Partial<BenchResults>;
  if (results.version !== BENCH_RESULTS_VERSION || !Array.isArray(results.figures) || !results.meta)
    throw new Error(
      `${file}: not a results file of this bench (version ${BENCH_RESULTS_VERSION}); write one with pnpm bench --json ${file}`,
    );
  return results as BenchResults;
}

/** How a figure moved from run A to run B, against the noise both runs measured. */
export type Verdict = 'better' | 'worse' | 'within noise' | 'no spread' | 'only in A' | 'only in B';

export interface Comparison {
  name: string;
  unit: string;
  a?: Figure;
  b?: Figure;
  /** B's value / A's value. */
  change?: number;
  value: Verdict;
  /** The package/baseline ratio's move, judged against the ratio's own round-by-round spread. */
  ratio: Verdict;
}

/** ops/s, rows/s: higher is better; ms: lower is better. */
export const higherIsBetter = (unit: string) => unit.endsWith('/s');

/**
 * Better or worse only when the two runs' ranges over their rounds do not overlap: a move
 * inside what either run saw between its own rounds is noise. A figure measured once (no
 * spread) moving by more than `threshold` is reported as 'no spread': look, but it proves
 * nothing.
 */
function judge(
  a: number,
  b: number,
  aSpread: Figure['spread'],
  bSpread: Figure['spread'],
  higher: boolean,
  threshold: number,
): Verdict {
  const up = b > a;
  const verdict = (moved: boolean): Verdict =>
    moved ? (up === higher ? 'better' : 'worse') : 'within noise';
  if (aSpread && bSpread) return verdict(bSpread.min > aSpread.max || bSpread.max < aSpread.min);
  return Math.abs(b / a - 1) > threshold ? 'no spread' : 'within noise';
}

export function compareResults(a: BenchResults, b: BenchResults, threshold = 0.1): Comparison[] {
  const names = [...new Set([...a.figures, ...b.figures].map((f) => f.name))];
  return names.map((name) => {
    const fa = a.figures.find((f) => f.name === name);
    const fb = b.figures.find((f) => f.name === name);
    if (!fa || !fb) {
      const only = (fa ?? fb) as Figure;
      const verdict: Verdict = fa ? 'only in A' : 'only in B';
      return { name, unit: only.unit, a: fa, b: fb, value: verdict, ratio: verdict };
    }
    const higher = higherIsBetter(fa.unit);
    return {
      name,
      unit: fa.unit,
      a: fa,
      b: fb,
      change: fb.value / fa.value,
      value: judge(fa.value, fb.value, fa.spread, fb.spread, higher, threshold),
      // package / baseline: for throughput a higher ratio is better, for latency a lower one.
      ratio: judge(fa.ratio, fb.ratio, fa.ratioSpread, fb.ratioSpread, higher, threshold),
    };
  });
}
