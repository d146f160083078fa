/**
 * `pnpm bench [--rows N] [--holds] [--drivers] [--json FILE] [--no-pin]`: the package beside
 * its baselines (hand-written SQL through postgres.js: the same query, one data-modifying
 * statement, a transaction; drizzle's own migrate(), the package's own deduction for holds, a
 * direct connection for a pooler, postgres.js for node-postgres), in one run, on the same
 * data, interleaved. `--holds` and `--drivers` run those sections alone (both: both). The
 * server and the client are pinned to different cores where the machine allows it
 * (bench/pinning.ts). `--json FILE` writes every figure with its spread over the rounds, for
 * `pnpm bench:compare A.json B.json`. A benchmark, not a test: it prints figures and never
 * fails on them.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { startTestPostgres } from '@bragdoc/test-postgres';
import { SingleBar } from 'cli-progress';
import postgres from 'postgres';
import { createDatabase } from '../src/client.js';
import { rangeQuery, userHistoryQuery } from '../src/credits/history.js';
import { verifyLedger } from '../src/credits/verify.js';
import { defaultMigrationsFolder, migrate } from '../src/migrate/index.js';
import { measureHistoryDrivers, measurePooledDeductions } from './drivers.js';
import { createUsers, measureExpiry, measureHeldBalance, measureHoldWrites } from './holds.js';
import { indexBuildFigures } from './index-build.js';
import { measureMigration } from './migration.js';
import { pinServerAndClient } from './pinning.js';
import { planSummary } from './plans.js';
import { measureReads, readTargets } from './reads.js';
import { BENCH_RESULTS_VERSION, type BenchResults } from './results.js';
import { seedTrail } from './seed.js';
import { type Figure, figure, formatSpread, timed } from './stats.js';
import { measureAgainstBase } from './write-base.js';
import { measureWriteProfile } from './write-profile.js';
import { createBaselineTables, measureWrites } from './writes.js';

const { values } = parseArgs({
  options: {
    rows: { type: 'string', default: '1000000' },
    iterations: { type: 'string', default: '2000' },
    rounds: { type: 'string', default: '5' },
    ops: { type: 'string', default: '250' },
    'migration-runs': { type: 'string', default: '10' },
    holds: { type: 'boolean', default: false },
    drivers: { type: 'boolean', default: false },
    // Where a ledger write's time goes (bench/write-profile.ts).
    'profile-writes': { type: 'boolean', default: false },
    // With --profile-writes: also each kind of write on the ledger as of this migration (a
    // tag's prefix, e.g. 0005) beside the ledger as migrated, in alternating rounds.
    'base-migration': { type: 'string' },
    // Rows of the drivers section's own seeded trail (its heavy users get 2% each).
    'driver-rows': { type: 'string', default: '200000' },
    'open-holds': { type: 'string', default: '1000' },
    'expired-holds': { type: 'string', default: '100000' },
    'holds-per-user': { type: 'string', default: '10' },
    'expire-batch': { type: 'string', default: '10000' },
    // Runs only the seeding and the index-build benchmark.
    only: { type: 'string' },
    // Writes the run's figures and what it ran on to this file (for bench:compare).
    json: { type: 'string' },
    // Leaves the server and the client on whatever cores the OS gives them.
    'no-pin': { type: 'boolean', default: false },
  },
});
if (values.only !== undefined && values.only !== 'index-build') {
  throw new Error(`--only takes index-build, got ${values.only}`);
}
const onlyIndexBuild = values.only === 'index-build';
const int = (
  name: Exclude<
    keyof typeof values,
    'holds' | 'drivers' | 'profile-writes' | 'base-migration' | 'only' | 'json' | 'no-pin'
  >,
) => {
  const n = Number(String(values[name]).replaceAll('_', ''));
  if (!Number.isSafeInteger(n) || n <= 0)
    throw new Error(`--${name} must be a positive integer, got ${values[name]}`);
  return n;
};
const rows = int('rows');
// --holds, --drivers and --profile-writes pick sections; without any, every section runs.
const picked =
  values.holds === true || values.drivers === true || values['profile-writes'] === true;
const runHolds = !onlyIndexBuild && (!picked || values.holds === true);
const runDrivers = !onlyIndexBuild && (!picked || values.drivers === true);
const runWriteProfile = !onlyIndexBuild && (!picked || values['profile-writes'] === true);
const log = (line: string) => console.log(line);
const started = performance.now();
// pnpm runs the script in the package's folder; a relative --json path is the caller's.
const jsonPath =
  values.json === undefined
    ? undefined
    : path.resolve(process.env.INIT_CWD ?? process.cwd(), values.json);
const loadAtStart = loadavg();
const commit = gitCommit();

const env: NodeJS.ProcessEnv = process.env.BENCH_DATABASE_URL
  ? { TEST_DATABASE_URL: process.env.BENCH_DATABASE_URL, TEST_POSTGRES_PROVIDER: 'url' }
  : { ...process.env, TEST_DATABASE_URL: undefined };
const prefix = process.env.BENCH_DATABASE_PREFIX ?? 'bragdoc_bench';
const pg = await startTestPostgres({
  migrate: (url) => migrate(url),
  migrationsFolder: defaultMigrationsFolder,
  // BENCH_DATABASE_PREFIX names this run's databases on a shared server.
  prefix,
  env,
  log,
});
// Kept open for the whole run: pinning finds the server through it, and on a shared server
// lists this run's backends with it.
const serverSql = postgres(pg.server.url, { max: 1, onnotice: () => {} });
const pinning = await pinServerAndClient({
  sql: serverSql,
  ownServer: pg.server.provider === 'embedded',
  databasePrefix: prefix,
  enabled: !values['no-pin'],
});
log(
  `bench: PostgreSQL ${pg.server.version} (${pg.server.provider}), Node ${process.version}, ` +
    `${cpus().length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB; ` +
    (picked
      ? [
          runHolds && 'credit holds',
          runDrivers && 'drivers and poolers',
          runWriteProfile && 'the write profile',
        ]
          .filter(Boolean)
          .join(' and ')
      : `${rows.toLocaleString('en')} rows`),
);
log(pinning.summary);

const figures: Figure[] = [];
if (!picked) await measureTrail();
if (runHolds) await measureHolds();
if (runDrivers) await measureDrivers();
if (runWriteProfile) {
  log("where a ledger write's time goes:");
  const profile = await pg.createDatabase();
  try {
    figures.push(
      ...(await measureWriteProfile(profile.url, { rounds: int('rounds'), perRound: 1000 }, log)),
    );
  } finally {
    await profile.close();
  }
  const baseMigration = values['base-migration'];
  if (baseMigration !== undefined) {
    const base = await pg.createDatabase({ empty: true });
    const current = await pg.createDatabase();
    try {
      figures.push(
        ...(await measureAgainstBase(
          base,
          current,
          { baseMigration, rounds: 4 * int('rounds'), perRound: 250 },
          log,
        )),
      );
    } finally {
      await base.close();
      await current.close();
    }
  }
}
if (!picked && !onlyIndexBuild)
  figures.push(
    await measureMigration(() => pg.createDatabase({ empty: true }), int('migration-runs')),
  );
await serverSql.end();
await pg.teardown();

/** The audit trail at `rows` rows: plans, reads, credits:verify, then deductions. */
async function measureTrail(): Promise<void> {
  const data = await pg.createDatabase();
  const sql = postgres(data.url, { max: 1, onnotice: () => {} });
  const handle = createDatabase(data.url, { max: 1 });
  try {
    const bar = new SingleBar({
      format: 'seeding [{bar}] {percentage}% {value}/{total} rows, {eta}s left',
      hideCursor: true,
      noTTYOutput: true,
      notTTYSchedule: 5000,
    });
    bar.start(rows, 0);
    const seed = await seedTrail(sql, { rows, onProgress: (done) => bar.update(done) });
    bar.stop();
    log(
      `seeded ${seed.rows.toLocaleString('en')} rows over ${seed.users.toLocaleString('en')} users ` +
        `(${seed.heavyUsers} heavy users hold 20%) in ${((seed.insertMs + seed.indexMs) / 1000).toFixed(1)} s ` +
        `(insert ${(seed.insertMs / 1000).toFixed(1)} s, indexes ${(seed.indexMs / 1000).toFixed(1)} s): ` +
        `${Math.round(seed.rowsPerSecond).toLocaleString('en')} rows/s`,
    );
    const mib = (bytes: number) => `${Math.round(bytes / 2 ** 20).toLocaleString('en')} MiB`;
    log(
      `"CreditTransaction": table ${mib(seed.tableBytes)}, indexes ${mib(seed.indexBytes)}, ` +
        `${Math.round((seed.tableBytes + seed.indexBytes) / rows)} bytes per row`,
    );

    figures.push(...(await indexBuildFigures(data.url, rows, log)));
    if (onlyIndexBuild) return;

    // Halfway through a heavy user's history (each holds 2% of the rows), at most page 200.
    const targets = await readTargets(
      sql,
      Math.max(1, Math.min(200, Math.floor((rows * 0.02) / 50 / 2))),
    );
    const history = (cursor: boolean) =>
      userHistoryQuery(handle.db, { operation: false, featureType: false, cursor });
    const base = { userId: targets.heavyUser, limit: 51 };
    log(`plans at ${rows.toLocaleString('en')} rows:`);
    log(`  history of a heavy user, first page: ${await planSummary(sql, history(false), base)}`);
    log(
      `  history of a heavy user dormant for the newer half, first page: ${await planSummary(sql, history(false), { ...base, userId: targets.dormantUser })}`,
    );
    log(
      `  history of a typical user, first page: ${await planSummary(sql, history(false), { ...base, userId: targets.typicalUser })}`,
    );
    log(
      `  history of a heavy user, page ${targets.deepPage}: ${await planSummary(sql, history(true), { ...base, seq: targets.deep.seq })}`,
    );
    log(
      `  history of a heavy user, last page: ${await planSummary(sql, history(true), { ...base, seq: targets.lastPage.seq })}`,
    );
    log(
      `  history of a heavy user, operation 'grant' (only its opening rows): ${await planSummary(sql, userHistoryQuery(handle.db, { operation: true, featureType: false, cursor: false }), { ...base, operation: 'grant' })}`,
    );
    log(
      `  history of a heavy user, feature 'document_generation' (only its opening row): ${await planSummary(sql, userHistoryQuery(handle.db, { operation: false, featureType: true, cursor: false }), { ...base, featureType: 'document_generation' })}`,
    );
    const iso = (d: Date) => d.toISOString();
    const rangeBounds = (w: { from: Date; to: Date }) => ({ from: iso(w.from), to: iso(w.to) });
    log(
      `  range, one hour: ${await planSummary(sql, rangeQuery(handle.db, { cursor: false }), { ...rangeBounds(targets.window), limit: 51 })}`,
    );
    log(
      `  range, the hour of ${targets.tiedWindow.rows.toLocaleString('en')} rows sharing one created_at: ${await planSummary(sql, rangeQuery(handle.db, { cursor: false }), { ...rangeBounds(targets.tiedWindow), limit: 51 })}`,
    );
    log(
      `  range, the same hour from a cursor in the middle of them: ${await planSummary(sql, rangeQuery(handle.db, { cursor: true }), { ...rangeBounds(targets.tiedWindow), at: iso(targets.tiedMiddle.createdAt), id: targets.tiedMiddle.id, limit: 51 })}`,
    );

    log('reads (package / the same SQL by hand):');
    figures.push(
      ...(await measureReads(handle.db, sql, targets, {
        iterations: int('iterations'),
        rounds: int('rounds'),
        log,
        beforeRounds: pinning.pin,
      })),
    );

    // credits:verify over the whole trail, beside the cheapest query that reads every row
    // once (a per-user sum), on the same connection.
    const baselineMs = await timed(
      () => sql`select user_id, count(*), sum(amount) from "CreditTransaction" group by user_id`,
    );
    let verification: Awaited<ReturnType<typeof verifyLedger>> | undefined;
    const verifyMs = await timed(async () => {
      verification = await verifyLedger(handle.db);
    });
    log(
      `credits:verify: ${verification?.ok ? 'OK' : `${verification?.violationCount} violations`}, ` +
        `${verification?.rows.toLocaleString('en')} rows of ${verification?.users.toLocaleString('en')} users ` +
        `in ${(verifyMs / 1000).toFixed(1)} s (${Math.round((verification?.rows ?? 0) / (verifyMs / 1000)).toLocaleString('en')} rows/s)`,
    );
    for (const v of verification?.violations.slice(0, 10) ?? [])
      log(
        `  ✗ ${v.kind} ${v.userId ?? 'ledger'}${v.seq === null ? '' : ` seq ${v.seq}`}: ${v.detail}`,
      );
    figures.push(figure('verify_whole_ledger', verifyMs, 'ms', baselineMs));
  } finally {
    await handle.close();
    await sql.end();
    await data.close();
  }

  const writes = await pg.createDatabase();
  const writer = createDatabase(writes.url, { max: 16 });
  try {
    const admin = postgres(writes.url, { max: 1, onnotice: () => {} });
    const users = (
      await admin<{ id: string }[]>`
        insert into "User" (email, free_credits, free_chat_messages)
        select 'writer-' || n || '@example.com', 1000000000, 0 from generate_series(1, 16) n returning id`
    ).map((r) => r.id);
    await createBaselineTables(admin, users);
    await admin.end();
    log('writes (package / one-statement CTE, and / a transaction of one statement per step):');
    figures.push(
      ...(await measureWrites(writer.db, writes.url, users, int('rounds'), int('ops'), {
        log,
        beforeRounds: pinning.pin,
      })),
    );
  } finally {
    await writer.close();
    await writes.close();
  }
}

/** Credit holds, each database of its own: hold + settle, held balances, the sweeper. */
async function measureHolds(): Promise<void> {
  log('credit holds:');
  await pinning.pin();
  const holds = await pg.createDatabase();
  const handle = createDatabase(holds.url, { max: 16 });
  const admin = postgres(holds.url, { max: 1, onnotice: () => {} });
  try {
    const users = await createUsers(admin, 'holder', 16);
    figures.push(...(await measureHoldWrites(handle.db, users, int('rounds'), int('ops'), log)));
    figures.push(
      ...(await measureHeldBalance(handle.db, admin, int('open-holds'), int('iterations'), log)),
    );
  } finally {
    await admin.end();
    await handle.close();
    await holds.close();
  }
  const expiry = await pg.createDatabase();
  const sweeper = createDatabase(expiry.url, { max: 1 });
  const sql = postgres(expiry.url, { max: 1, onnotice: () => {} });
  try {
    figures.push(
      ...(await measureExpiry(
        sweeper.db,
        sql,
        {
          holds: int('expired-holds'),
          perUser: int('holds-per-user'),
          batch: Math.min(int('expire-batch'), int('expired-holds')),
        },
        log,
      )),
    );
  } finally {
    await sql.end();
    await sweeper.close();
    await expiry.close();
  }
}

/**
 * Drivers and poolers, each part in a database of its own: deductions through a
 * transaction-mode PgBouncer against direct, then one user's history through node-postgres
 * against postgres.js on a seeded trail.
 */
async function measureDrivers(): Promise<void> {
  log('drivers and poolers:');
  await pinning.pin();
  const writes = await pg.createDatabase();
  const admin = postgres(writes.url, { max: 1, onnotice: () => {} });
  try {
    const users = await createUsers(admin, 'driver', 16);
    figures.push(
      ...(await measurePooledDeductions(
        writes.url,
        pg.server.url,
        users,
        int('rounds'),
        int('ops'),
        log,
      )),
    );
  } finally {
    await admin.end();
    await writes.close();
  }
  const reads = await pg.createDatabase();
  const sql = postgres(reads.url, { max: 1, onnotice: () => {} });
  try {
    const seed = await seedTrail(sql, { rows: int('driver-rows'), onProgress: () => {} });
    const targets = await readTargets(sql, 1);
    const [count] = await sql<{ n: number }[]>`
      select count(*)::int as n from "CreditTransaction" where user_id = ${targets.heavyUser}`;
    log(
      `  seeded ${seed.rows.toLocaleString('en')} rows in ${((seed.insertMs + seed.indexMs) / 1000).toFixed(1)} s; ` +
        `the user read has ${count?.n.toLocaleString('en')}`,
    );
    figures.push(
      ...(await measureHistoryDrivers(reads.url, targets.heavyUser, int('iterations'), log)),
    );
  } finally {
    await sql.end();
    await reads.close();
  }
}

console.table(
  Object.fromEntries(
    figures.map((f) => [
      f.name,
      {
        package: f.value,
        rounds: formatSpread(f.spread),
        baseline: f.baseline,
        'baseline rounds': formatSpread(f.baselineSpread),
        unit: f.unit,
        ratio: f.ratio,
        'ratio rounds': formatSpread(f.ratioSpread),
      },
    ]),
  ),
);
const durationS = Math.round((performance.now() - started) / 1000);
if (jsonPath) {
  const results: BenchResults = {
    version: BENCH_RESULTS_VERSION,
    meta: {
      date: new Date().toISOString(),
      commit,
      node: process.version,
      postgres: pg.server.version,
      provider: pg.server.provider,
      cores: cpus().length,
      cpu: cpus()[0]?.model ?? 'unknown',
      memoryGiB: Math.round(totalmem() / 2 ** 30),
      pinned: pinning.pinned,
      serverCores: pinning.serverCores,
      clientCores: pinning.clientCores,
      pinning: pinning.summary,
      loadAverage: {
        start: loadAtStart.map((n) => Number(n.toFixed(2))),
        end: loadavg().map((n) => Number(n.toFixed(2))),
      },
      rows,
      rounds: int('rounds'),
      opsPerCaller: int('ops'),
      iterations: int('iterations'),
      sections: onlyIndexBuild
        ? ['index-build']
        : picked
          ? [runHolds && 'holds', runDrivers && 'drivers'].filter((s): s is string => !!s)
          : ['trail', 'index-build', 'holds', 'drivers', 'migration'],
      durationS,
    },
    figures,
  };
  mkdirSync(path.dirname(jsonPath), { recursive: true });
  writeFileSync(jsonPath, `${JSON.stringify(results, null, 2)}\n`);
  log(`bench: figures written to ${jsonPath}`);
}
log(`bench: done in ${durationS} s`);
for (const f of figures) {
  const spread = (label: string, s: Figure['spread']) =>
    s ? ` ${label}_min=${s.min} ${label}_max=${s.max}` : '';
  console.log(
    `bench: ${f.name} value=${f.value} unit=${f.unit} baseline=${f.baseline} ratio=${f.ratio}` +
      spread('value', f.spread) +
      spread('ratio', f.ratioSpread),
  );
}

/**
 * The commit the run measures, read when it starts (with "+changes" when tracked files other
 * than Markdown differ from it), or null outside git.
 */
function gitCommit(): string | null {
  try {
    const head = execFileSync('git', ['rev-parse', 'HEAD'], { encoding: 'utf8' }).trim();
    const dirty = execFileSync(
      'git',
      ['status', '--porcelain', '--untracked-files=no', '--', ':/', ':(top,exclude,glob)**/*.md'],
      { encoding: 'utf8' },
    ).trim();
    return dirty ? `${head}+changes` : head;
  } catch {
    return null;
  }
}
