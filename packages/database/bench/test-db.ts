/**
 * `pnpm bench:test-db`: the test harness as a suite uses it, against a bare
 * CREATE DATABASE … TEMPLATE on the same server in the same run. Prints figures, never
 * fails on them. The last line is machine-readable.
 */
import { startTestPostgres } from '@bragdoc/test-postgres';
import postgres from 'postgres';
import { defaultMigrationsFolder, migrate } from '../src/migrate/index.js';
import { alternate, median, round as roundTo, timed } from './stats.js';

const CLONES = Number(process.env.BENCH_CLONES ?? 40);

const round = (n: number) => roundTo(n, 1);

const started = performance.now();
const pg = await startTestPostgres({
  migrate: (url) => migrate(url),
  migrationsFolder: defaultMigrationsFolder,
  prefix: 'bragdoc_bench',
  log: () => {},
});
const first = await pg.createDatabase();
const coldStartMs = performance.now() - started;
await first.close();

const raw = postgres(pg.context.serverUrl, { max: 1, onnotice: () => {} });
const clone: number[] = [];
const rawClone: number[] = [];
const drop: number[] = [];
const rawDrop: number[] = [];
// The harness's own choice of strategy, bare, to show what the harness adds on top of it.
const rawSameStrategy: number[] = [];
const strategy = pg.context.cloneStrategy;
try {
  const harness = async () => {
    let db: Awaited<ReturnType<typeof pg.createDatabase>> | undefined;
    clone.push(
      await timed(async () => {
        db = await pg.createDatabase();
      }),
    );
    drop.push(await timed(async () => db?.close()));
  };
  const bare = async (i: number) => {
    const name = `${pg.context.runPrefix}raw${i}`;
    rawClone.push(
      await timed(() => raw.unsafe(`create database "${name}" template "${pg.context.template}"`)),
    );
    rawDrop.push(await timed(() => raw.unsafe(`drop database "${name}" with (force)`)));
    if (strategy) {
      rawSameStrategy.push(
        await timed(() =>
          raw.unsafe(
            `create database "${name}s" template "${pg.context.template}" strategy ${strategy}`,
          ),
        ),
      );
      await raw.unsafe(`drop database "${name}s" with (force)`);
    }
  };
  await alternate(CLONES, harness, bare);
} finally {
  await raw.end();
  await pg.teardown();
}

const figures = {
  provider: pg.server.provider,
  cold_start_ms: Math.round(coldStartMs),
  template_ms: Math.round(pg.timings.templateMs),
  clone_median_ms: round(median(clone)),
  raw_clone_median_ms: round(median(rawClone)),
  drop_median_ms: round(median(drop)),
};
console.log(
  `PostgreSQL ${pg.server.version} (${pg.server.provider}), ${CLONES} clones each, interleaved; ` +
    `cold start ${figures.cold_start_ms} ms, template ${figures.template_ms} ms`,
);
console.table({
  'harness clone (createDatabase)': {
    median_ms: figures.clone_median_ms,
    min_ms: round(Math.min(...clone)),
    max_ms: round(Math.max(...clone)),
  },
  'bare CREATE DATABASE … TEMPLATE': {
    median_ms: figures.raw_clone_median_ms,
    min_ms: round(Math.min(...rawClone)),
    max_ms: round(Math.max(...rawClone)),
  },
  ...(strategy
    ? {
        [`bare … TEMPLATE … STRATEGY ${strategy}`]: {
          median_ms: round(median(rawSameStrategy)),
          min_ms: round(Math.min(...rawSameStrategy)),
          max_ms: round(Math.max(...rawSameStrategy)),
        },
      }
    : {}),
  'harness drop (close)': {
    median_ms: figures.drop_median_ms,
    min_ms: round(Math.min(...drop)),
    max_ms: round(Math.max(...drop)),
  },
  'bare DROP DATABASE … WITH (FORCE)': {
    median_ms: round(median(rawDrop)),
    min_ms: round(Math.min(...rawDrop)),
    max_ms: round(Math.max(...rawDrop)),
  },
});
console.log(
  `harness clone strategy: ${strategy ?? 'server default'}; ratio harness / bare default: ` +
    `${(median(clone) / median(rawClone)).toFixed(2)}` +
    (strategy
      ? `; harness / bare ${strategy}: ${(median(clone) / median(rawSameStrategy)).toFixed(2)}`
      : ''),
);
console.log(
  `test-db: provider=${figures.provider} cold_start_ms=${figures.cold_start_ms} template_ms=${figures.template_ms} ` +
    `clone_median_ms=${figures.clone_median_ms} raw_clone_median_ms=${figures.raw_clone_median_ms} drop_median_ms=${figures.drop_median_ms}`,
);
