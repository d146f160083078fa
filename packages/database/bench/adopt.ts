/**
 * `pnpm bench:adopt [--rows N] [--users N]`: how long taking over a live database costs, and
 * how long the app's writes wait. It builds a seed-plan database of N log rows (default 1M)
 * and its users, then runs db:adopt and db:migrate on it, beside a baseline measured in the
 * same process on the same data first: one copy of the log with its three indexes (CREATE
 * TABLE AS, CREATE INDEX), reading and writing every row once, the least a conversion in
 * place can cost. A benchmark, not a test: it prints figures and never fails on them.
 */
import { cpus, loadavg, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import { startTestPostgres } from '@bragdoc/test-postgres';
import postgres from 'postgres';
import { createDatabase } from '../src/client.js';
import { verifyLedger } from '../src/credits/verify.js';
import { adopt, defaultMigrationsFolder, migrate } from '../src/migrate/index.js';
import { fillSeedDatabase, SEED_SCHEMA } from '../test/adopt/seed-database.js';
import { timed } from './stats.js';

const { values } = parseArgs({
  options: {
    rows: { type: 'string', default: '1000000' },
    users: { type: 'string', default: '10000' },
  },
});
const rows = Number(values.rows);
const users = Number(values.users);
const log = (line: string) => console.log(line);
const ms = (value: number) => `${Math.round(value).toLocaleString('en')} ms`;

const env: NodeJS.ProcessEnv = process.env.BENCH_DATABASE_URL
  ? { TEST_DATABASE_URL: process.env.BENCH_DATABASE_URL, TEST_POSTGRES_PROVIDER: 'url' }
  : { ...process.env, TEST_DATABASE_URL: undefined };
const pg = await startTestPostgres({
  migrate: (url) => migrate(url),
  migrationsFolder: defaultMigrationsFolder,
  prefix: process.env.BENCH_DATABASE_PREFIX ?? 'bragdoc_bench',
  env,
  log: () => {},
});
log(
  `bench:adopt: PostgreSQL ${pg.server.version} (${pg.server.provider}), Node ${process.version}, ` +
    `${cpus().length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB, load ${loadavg()[0]?.toFixed(2)}; ` +
    `${rows.toLocaleString('en')} log rows, ${users.toLocaleString('en')} users`,
);

const database = await pg.createDatabase({ empty: true });
const sql = postgres(database.url, { max: 1, onnotice: () => {} });
try {
  await sql.unsafe(SEED_SCHEMA);
  const filled = await timed(() => fillSeedDatabase(sql, { users, logRows: rows }));
  await sql`vacuum analyze`;
  log(`  seed database filled in ${ms(filled)}`);

  const baseline = await timed(async () => {
    await sql`create table log_copy as select * from "CreditTransaction"`;
    await sql`create index on log_copy (user_id)`;
    await sql`create index on log_copy (created_at)`;
    await sql`create index on log_copy (user_id, created_at)`;
  });
  await sql`drop table log_copy`;

  const lines: string[] = [];
  let result: Awaited<ReturnType<typeof adopt>> | undefined;
  const adoption = await timed(async () => {
    result = await adopt(database.url, { log: (line) => lines.push(line) });
  });
  let migrated: Awaited<ReturnType<typeof migrate>> | undefined;
  const migration = await timed(async () => {
    migrated = await migrate(database.url);
  });
  const handle = createDatabase(database.url, { max: 1 });
  let ok = false;
  const verification = await timed(async () => {
    ok = (await verifyLedger(handle.db)).ok;
  });
  await handle.close();

  const [trail] = await sql<{ n: number }[]>`select count(*)::int as n from "CreditTransaction"`;
  log(`  baseline: one copy of the log and its three indexes   ${ms(baseline)}`);
  log(
    `  db:adopt                                             ${ms(adoption)}  ` +
      `(${(adoption / baseline).toFixed(2)} × baseline; tables locked ${ms(result?.lockedMs ?? 0)}, ` +
      `${result?.logRows.toLocaleString('en')} rows kept, ${result?.skippedRows} moved out, ` +
      `${result?.nullBalancesDefaulted} NULL balances defaulted)`,
  );
  log(
    `  db:migrate (installs the ledger, 0003 makes the trail) ${ms(migration)}  ` +
      `(${(migration / baseline).toFixed(2)} × baseline)`,
  );
  for (const step of migrated?.applied ?? []) {
    log(`    ${step.name.padEnd(36)} ${ms(step.durationMs)} (${step.mode})`);
  }
  log(
    `  credits:verify afterwards                            ${ms(verification)}  ` +
      `(${ok ? 'ok' : 'FAILED'}; ${trail?.n.toLocaleString('en')} trail rows)`,
  );
  const transactions = new Set(migrated?.applied.map((step) => step.mode)).size;
  log(
    "  The app's writes wait while db:adopt holds the tables (its lock figure), then while " +
      `db:migrate's transaction${transactions > 1 ? 's hold' : ' holds'} them (its whole figure: ` +
      'its migrations run in one transaction here, from 0002 on).',
  );
} finally {
  await sql.end();
  await database.close();
  await pg.teardown();
}
