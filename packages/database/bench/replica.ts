/**
 * `pnpm bench:replica [--rows N] [--writers N] [--seconds N]`: reads on a streaming replica
 * beside the same reads on the primary, idle and under write load, and what a support
 * statement (`credits:trail`) costs for a user with 20,000 rows.
 *
 * - A private primary and a real standby of it (startReplicatedPair: the embedded
 *   PostgreSQL, the standby a copy of the stopped primary), a trail of `--rows` rows seeded on
 *   the primary (bench/seed.ts: one year; 10 heavy users with 2% of the rows each) and
 *   streamed to the replica.
 * - **Reads**: a user's history page, a heavy user's, usage figures of all users over 30
 *   days and of one heavy user over 30 days. Idle: each read alternated between the primary
 *   and the replica. Under load: `--writers` connections deducting on the primary as fast as
 *   they can while the reads run for `--seconds` against one server, then the other (three
 *   times each); the writers' throughput in each window says what the reads cost them, and the
 *   replica's replay lag is sampled throughout.
 * - **credits:trail**: getCreditStatement of a heavy user with all its rows (verified), the
 *   page rendered, on the primary and on the replica, and the command itself end to end;
 *   beside paging through the same rows with listCreditTransactions (what an adopter wrote
 *   by hand), in the same run.
 *
 * A benchmark, not a test: it prints figures and never fails on them.
 */

import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import path from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { startReplicatedPair } from '@bragdoc/test-postgres';
import postgres from 'postgres';
import { createDatabase, type Database } from '../src/client.js';
import {
  deductCredits,
  getCreditStatement,
  getCreditUsage,
  listCreditTransactions,
  renderCreditStatementHtml,
} from '../src/credits/index.js';
import { migrate } from '../src/migrate/index.js';
import { seedTrail } from './seed.js';
import { median, percentile, timed } from './stats.js';

const { values } = parseArgs({
  options: {
    rows: { type: 'string', default: '1000000' },
    writers: { type: 'string', default: '16' },
    seconds: { type: 'string', default: '10' },
    runs: { type: 'string', default: '20' },
  },
});
const int = (name: 'rows' | 'writers' | 'seconds' | 'runs') => {
  const n = Number(String(values[name]).replaceAll('_', ''));
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer`);
  return n;
};
const log = (line: string) => console.log(line);
const ms = (n: number) => `${n.toFixed(1)} ms`;

const pair = await startReplicatedPair('embedded');
const primary = createDatabase(pair.primaryUrl, { max: 4 });
const replica = createDatabase(pair.replicaUrl, { max: 4 });
const seeder = postgres(pair.primaryUrl, { max: 1, onnotice: () => {} });
try {
  log(
    `bench:replica: PostgreSQL ${pair.major} (embedded, primary and streaming standby), Node ${process.version}, ` +
      `${cpus().length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB, load ${loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}`,
  );
  await migrate(pair.primaryUrl, { log: () => {} });
  const rows = int('rows');
  const seedMs = await timed(() => seedTrail(seeder, { rows, onProgress: () => {} }));
  const caughtUpMs = await timed(() => pair.caughtUp(600_000));
  log(
    `seeded ${rows.toLocaleString('en')} rows on the primary in ${(seedMs / 1000).toFixed(1)} s; ` +
      `the replica had replayed them ${(caughtUpMs / 1000).toFixed(1)} s later`,
  );
  const [heavy] = await seeder<{ user_id: string; n: number }[]>`
    select user_id, count(*)::int as n from "CreditTransaction" group by 1 order by count(*) desc offset 1 limit 1`;
  const typical = (
    await seeder<{ id: string }[]>`
      select id from "User" u where (select count(*) from "CreditTransaction" t where t.user_id = u.id) between 50 and 200 limit 200`
  ).map((r) => r.id);
  const writersUsers = (
    await seeder<{ id: string }[]>`select id from "User" order by id desc limit 1000`
  ).map((r) => r.id);
  if (!heavy || typical.length === 0) throw new Error('the seed has no heavy or typical users');
  const day = 86_400_000;
  const month = {
    from: new Date(Date.parse('2025-01-01T00:00:00Z') + 150 * day),
    to: new Date(Date.parse('2025-01-01T00:00:00Z') + 180 * day),
  };
  // The day summaries are the primary's to write (the replica reads them): sum them once.
  await getCreditUsage(primary.db, month);
  await pair.caughtUp(600_000);
  let k = 0;
  const reads: { name: string; run: (db: Database) => Promise<unknown> }[] = [
    {
      name: 'history page, a typical user (50 rows)',
      run: (db) =>
        listCreditTransactions(db, { userId: typical[k++ % typical.length] as string, limit: 50 }),
    },
    {
      name: 'history page, a heavy user (50 rows)',
      run: (db) => listCreditTransactions(db, { userId: heavy.user_id, limit: 50 }),
    },
    { name: 'usage, all users, 30 days', run: (db) => getCreditUsage(db, month) },
    {
      name: 'usage, a heavy user, 30 days',
      run: (db) => getCreditUsage(db, { ...month, userId: heavy.user_id }),
    },
  ];

  // Idle: each read alternated between the two servers.
  const runs = int('runs');
  log(`\nreads, idle: median (p90) of ${runs} calls each, primary and replica alternated`);
  for (const read of reads) {
    const onPrimary: number[] = [];
    const onReplica: number[] = [];
    for (let i = 0; i < runs; i++) {
      const [first, second] = i % 2 ? [replica, primary] : [primary, replica];
      const a = await timed(() => read.run(first.db));
      const b = await timed(() => read.run(second.db));
      (first === primary ? onPrimary : onReplica).push(a);
      (second === primary ? onPrimary : onReplica).push(b);
    }
    log(
      `  ${read.name.padEnd(42)} primary ${ms(median(onPrimary))} (${ms(percentile(onPrimary, 90))})  ` +
        `replica ${ms(median(onReplica))} (${ms(percentile(onReplica, 90))})  replica × ${(median(onReplica) / median(onPrimary)).toFixed(2)}`,
    );
  }

  // Under write load: the writers deduct on the primary the whole time.
  const writers = int('writers');
  const seconds = int('seconds');
  const load = createDatabase(pair.primaryUrl, { max: writers });
  let writes = 0;
  let writing = true;
  const writerLoops = Array.from({ length: writers }, async (_, w) => {
    let i = w;
    while (writing) {
      await deductCredits(load.db, {
        userId: writersUsers[i++ % writersUsers.length] as string,
        amount: 1,
        featureType: 'chat_tool_call',
      });
      writes++;
    }
  });
  const lags: number[] = [];
  const lagSampler = (async () => {
    const lagSql = postgres(pair.replicaUrl, { max: 1, onnotice: () => {} });
    try {
      while (writing) {
        const [row] = await lagSql<{ lag: number | null }[]>`
          select extract(epoch from pg_catalog.clock_timestamp() - pg_catalog.pg_last_xact_replay_timestamp())::float8 * 1000 as lag`;
        if (row?.lag != null) lags.push(row.lag);
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      await lagSql.end();
    }
  })();
  await new Promise((r) => setTimeout(r, 2000)); // the writers get going
  const samples = new Map<string, { primary: number[]; replica: number[] }>(
    reads.map((r) => [r.name, { primary: [], replica: [] }]),
  );
  const throughput = { primary: [] as number[], replica: [] as number[] };
  for (let window = 0; window < 6; window++) {
    const target = window % 2 === 0 ? 'primary' : 'replica';
    const db = target === 'primary' ? primary.db : replica.db;
    const before = writes;
    const started = performance.now();
    while (performance.now() - started < seconds * 1000) {
      for (const read of reads)
        samples.get(read.name)?.[target].push(await timed(() => read.run(db)));
    }
    throughput[target].push(((writes - before) * 1000) / (performance.now() - started));
  }
  writing = false;
  await Promise.all(writerLoops);
  await lagSampler;
  await load.close();
  log(
    `\nreads under write load (${writers} writers deducting on the primary), ${seconds} s windows, three on each server: median (p90)`,
  );
  for (const read of reads) {
    const s = samples.get(read.name);
    if (!s) continue;
    log(
      `  ${read.name.padEnd(42)} primary ${ms(median(s.primary))} (${ms(percentile(s.primary, 90))})  ` +
        `replica ${ms(median(s.replica))} (${ms(percentile(s.replica, 90))})  replica × ${(median(s.replica) / median(s.primary)).toFixed(2)}`,
    );
  }
  const avg = (a: number[]) => a.reduce((n, x) => n + x, 0) / a.length;
  log(
    `  writers' throughput: ${avg(throughput.primary).toFixed(0)} deductions/s while the reads ran on the primary, ` +
      `${avg(throughput.replica).toFixed(0)}/s while they ran on the replica (× ${(avg(throughput.replica) / avg(throughput.primary)).toFixed(2)})`,
  );
  log(
    `  replica replay lag under that load (${lags.length} samples): median ${ms(median(lags))}, p99 ${ms(percentile(lags, 99))}, max ${ms(Math.max(...lags))}`,
  );

  // credits:trail for the heavy user, all rows.
  await pair.caughtUp(600_000);
  log(
    `\ncredits:trail of a user with ${heavy.n.toLocaleString('en')} rows (all of them, verified): median of 5`,
  );
  for (const [name, db] of [
    ['primary', primary.db],
    ['replica', replica.db],
  ] as const) {
    const statementMs: number[] = [];
    const renderMs: number[] = [];
    const pagingMs: number[] = [];
    const unverifiedMs: number[] = [];
    let bytes = 0;
    for (let i = 0; i < 5; i++) {
      // Baseline first and second in turn: paging through the same rows, 500 at a time.
      const page = async () => {
        let cursor: string | undefined;
        do {
          const result = await listCreditTransactions(db, {
            userId: heavy.user_id,
            limit: 500,
            ...(cursor ? { cursor } : {}),
          });
          cursor = result.nextCursor ?? undefined;
        } while (cursor);
      };
      const statement = async () => {
        const s = await getCreditStatement(db, { user: heavy.user_id, limit: heavy.n });
        const t = performance.now();
        bytes = renderCreditStatementHtml(s).length;
        renderMs.push(performance.now() - t);
      };
      const unverified = () =>
        getCreditStatement(db, { user: heavy.user_id, limit: heavy.n, verify: false });
      if (i % 2) {
        pagingMs.push(await timed(page));
        unverifiedMs.push(await timed(unverified));
        statementMs.push(await timed(statement));
      } else {
        statementMs.push(await timed(statement));
        unverifiedMs.push(await timed(unverified));
        pagingMs.push(await timed(page));
      }
    }
    log(
      `  on the ${name.padEnd(8)} getCreditStatement + page ${ms(median(statementMs))} (of which the page ${ms(median(renderMs))}, ${(bytes / 2 ** 20).toFixed(1)} MiB); ` +
        `without verify ${ms(median(unverifiedMs))}; paging with listCreditTransactions (500 a page, no balances, no verify) ${ms(median(pagingMs))}`,
    );
  }
  const dir = mkdtempSync(path.join(tmpdir(), 'bench-trail-'));
  const file = path.join(dir, 'trail.html');
  const command: number[] = [];
  for (let i = 0; i < 3; i++) {
    command.push(
      await timed(() =>
        promisify(execFile)(
          process.execPath,
          [
            '--import',
            'tsx',
            'scripts/credits-trail.ts',
            heavy.user_id,
            '--limit',
            String(heavy.n),
            '--html',
            file,
          ],
          { env: { ...process.env, DATABASE_URL: pair.replicaUrl }, maxBuffer: 512 * 2 ** 20 },
        ),
      ),
    );
  }
  log(
    `  pnpm credits:trail <user> --limit ${heavy.n} --html FILE on the replica, end to end (node + tsx start, text and page): median of 3 ${ms(median(command))}, page ${(statSync(file).size / 2 ** 20).toFixed(1)} MiB`,
  );
  rmSync(dir, { recursive: true, force: true });
} finally {
  await seeder.end();
  await primary.close();
  await replica.close();
  await pair.stop();
}
