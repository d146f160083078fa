/**
 * `pnpm bench:compare A.json B.json [--threshold 0.1] [--fail-on-worse]`: the figures of two
 * `pnpm bench --json` runs side by side, B / A for each, and whether each value and each
 * package/baseline ratio moved beyond the noise the runs measured (their ranges over the
 * rounds do not overlap). Figures measured once have no spread: a move past `--threshold` is
 * marked `?`, to look at, not to trust. `--fail-on-worse` exits 1 when a figure got worse
 * beyond the noise (a gate for a change to the trigger).
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { compareResults, readResults, type Verdict } from './results.js';
import { type Figure, formatSpread } from './stats.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    threshold: { type: 'string', default: '0.1' },
    'fail-on-worse': { type: 'boolean', default: false },
  },
});
if (positionals.length !== 2) {
  console.error('usage: pnpm bench:compare A.json B.json [--threshold 0.1] [--fail-on-worse]');
  process.exit(2);
}
const threshold = Number(values.threshold);
if (!(threshold > 0))
  throw new Error(`--threshold must be a positive number, got ${values.threshold}`);
// pnpm runs the script in the package's folder; relative paths are the caller's.
const cwd = process.env.INIT_CWD ?? process.cwd();
const [fileA, fileB] = positionals.map((file) => path.resolve(cwd, file)) as [string, string];
const a = readResults(fileA);
const b = readResults(fileB);

const describe = (label: string, file: string, r: typeof a) =>
  `${label}: ${file}\n   ${r.meta.date}, commit ${r.meta.commit ?? 'unknown'}, PostgreSQL ${r.meta.postgres} (${r.meta.provider}), ` +
  `Node ${r.meta.node}, ${r.meta.cores} cores, ${r.meta.rows.toLocaleString('en')} rows, ${r.meta.rounds} rounds, ` +
  `${r.meta.pinned ? `pinned (server ${r.meta.serverCores.join(',')}, client ${r.meta.clientCores.join(',')})` : 'not pinned'}, ` +
  `load ${r.meta.loadAverage.start[0]} → ${r.meta.loadAverage.end[0]}`;
console.log(describe('A', fileA, a));
console.log(describe('B', fileB, b));
for (const key of ['rows', 'postgres', 'provider', 'cores', 'pinned'] as const)
  if (a.meta[key] !== b.meta[key])
    console.log(
      `⚠ ${key} differs (${a.meta[key]} / ${b.meta[key]}): the values are not comparable; the ratios (package / baseline, same run) still are`,
    );

const mark: Record<Verdict, string> = {
  better: '▲ better',
  worse: '▼ WORSE',
  'within noise': '',
  'no spread': '? (no spread)',
  'only in A': 'only in A',
  'only in B': 'only in B',
};
const n = (v: number | undefined) =>
  v === undefined || Number.isNaN(v)
    ? '–'
    : Math.abs(v) >= 100
      ? Math.round(v).toLocaleString('en')
      : String(Number(v.toPrecision(3)));
const withSpread = (v: number | undefined, s: Figure | undefined) =>
  `${n(v)}${s?.spread ? ` (${formatSpread(s.spread)})` : ''}`;
const rows = compareResults(a, b, threshold).map((c) => ({
  figure: c.name,
  unit: c.unit,
  A: withSpread(c.a?.value, c.a),
  B: withSpread(c.b?.value, c.b),
  'B/A': c.change === undefined ? '–' : c.change.toFixed(2),
  value: mark[c.value],
  'ratio A': `${n(c.a?.ratio)}${c.a?.ratioSpread ? ` (${formatSpread(c.a.ratioSpread)})` : ''}`,
  'ratio B': `${n(c.b?.ratio)}${c.b?.ratioSpread ? ` (${formatSpread(c.b.ratioSpread)})` : ''}`,
  ratio: c.ratio === c.value && c.ratio.startsWith('only') ? '' : mark[c.ratio],
}));
const columns = Object.keys(rows[0] ?? {}) as (keyof (typeof rows)[number])[];
const widths = columns.map((col) => Math.max(col.length, ...rows.map((r) => r[col].length)));
const line = (cells: string[]) =>
  cells
    .map((cell, i) => cell.padEnd(widths[i] ?? 0))
    .join('  ')
    .trimEnd();
console.log();
console.log(line(columns));
console.log(line(widths.map((w) => '-'.repeat(w))));
for (const r of rows) console.log(line(columns.map((col) => r[col])));
console.log();
const comparisons = compareResults(a, b, threshold);
const count = (v: Verdict) =>
  comparisons.filter((c) => c.value === v || c.ratio === v).length.toLocaleString('en');
console.log(
  `${comparisons.length} figures: ${count('worse')} worse and ${count('better')} better beyond the noise ` +
    `(value or ratio; ranges over the rounds do not overlap), ${count('no spread')} measured once and moved more than ${threshold * 100}%. ` +
    `Values are A's and B's (min–max over the rounds); ratios are package / baseline.`,
);
if (values['fail-on-worse'] && comparisons.some((c) => c.value === 'worse' || c.ratio === 'worse'))
  process.exit(1);
