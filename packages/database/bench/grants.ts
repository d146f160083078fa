/**
 * `pnpm bench:grants [--rows N] [--rounds N] [--per-round N]`: what credit grants and plans
 * cost. Two sections, each beside a baseline measured in the same process:
 *
 * - **Deductions by live grants**: the INSERT of a deduction of 1 (what deductCredits sends),
 *   on a user with 1, 10 and 100 live grants (it takes from the soonest-expiring), on a user
 *   of an unlimited plan (a covered use), and on a second database of the same server
 *   migrated only up to 0011 (the ledger before plans and grants: "today's deduction"). One
 *   postgres.js connection each, the five rotated every round; p50 and p99 of all calls, with
 *   each round's median.
 * - **Usage figures**: `getCreditUsage` over a seeded trail of `--rows` rows (bench/seed.ts:
 *   one year, 1% heavy users), for all users over a day, a month and the year, and for one
 *   heavy user over the year: its first call (which sums the past days it needs into
 *   credit_usage_day), then the median of the next ones, beside the cheapest query that reads
 *   the same rows (a count over the same range, on the same index).
 *
 * A benchmark, not a test: it prints figures and never fails on them.
 */

import { rmSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import { startTestPostgres } from '@bragdoc/test-postgres';
import postgres from 'postgres';
import { createDatabase } from '../src/client.js';
import { getCreditUsage, grantCredits, setUserPlan } from '../src/credits/index.js';
import { defaultMigrationsFolder, migrate } from '../src/migrate/index.js';
import { seedTrail } from './seed.js';
import { median, percentile, timed } from './stats.js';
import { migrationsUpTo } from './write-base.js';

const { values } = parseArgs({
  options: {
    rows: { type: 'string', default: '1000000' },
    rounds: { type: 'string', default: '5' },
    'per-round': { type: 'string', default: '400' },
    'figure-runs': { type: 'string', default: '5' },
  },
});
const int = (name: 'rows' | 'rounds' | 'per-round' | 'figure-runs') => {
  const n = Number(String(values[name]).replaceAll('_', ''));
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer`);
  return n;
};
const log = (line: string) => console.log(line);
const ms = (n: number) => `${n.toFixed(3)} ms`;

const pg = await startTestPostgres({
  migrate: (url) => migrate(url),
  migrationsFolder: defaultMigrationsFolder,
  prefix: 'bragdoc_bench_grants',
  env: { ...process.env, TEST_DATABASE_URL: undefined },
  log,
});
log(
  `bench:grants: PostgreSQL ${pg.server.version} (${pg.server.provider}), Node ${process.version}, ` +
    `${cpus().length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB, load ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
);

await measureDeductions();
await measureUsage();
await pg.teardown();

async function measureDeductions(): Promise<void> {
  const current = await pg.createDatabase();
  const base = await pg.createDatabase({ empty: true });
  const folder = migrationsUpTo('0011');
  await migrate(base.url, { migrationsFolder: folder.path, log: () => {} });
  rmSync(folder.path, { recursive: true, force: true });
  const cur = createDatabase(current.url, { max: 1 });
  const curSql = postgres(current.url, { max: 1, onnotice: () => {} });
  const oldSql = postgres(base.url, { max: 1, onnotice: () => {} });
  try {
    const newUser = async (client: postgres.Sql, email: string) => {
      const [row] = await client<{ id: string }[]>`
        insert into "User" (email, free_credits) values (${email}, 1000000000) returning id`;
      return row?.id ?? '';
    };
    const baseUser = await newUser(oldSql, 'base@example.com');
    const users: { name: string; client: postgres.Sql; userId: string }[] = [
      { name: "0011's deduction (before plans and grants)", client: oldSql, userId: baseUser },
    ];
    for (const live of [1, 10, 100]) {
      const userId = await newUser(curSql, `grants-${live}@example.com`);
      // The opening grant (never expires) and live − 1 grants expiring over the next days,
      // so each deduction looks past none and takes from the soonest.
      for (let i = 1; i < live; i++)
        await grantCredits(cur.db, {
          userId,
          amount: 1_000_000,
          source: 'promotional',
          expiresAt: new Date(Date.now() + i * 86_400_000),
        });
      users.push({
        name: `deduction, ${live} live grant${live === 1 ? '' : 's'}`,
        client: curSql,
        userId,
      });
    }
    const paid = await newUser(curSql, 'paid@example.com');
    await setUserPlan(cur.db, { userId: paid, plan: 'paid' });
    users.push({ name: 'use covered by an unlimited plan', client: curSql, userId: paid });
    const deduct = (u: { client: postgres.Sql; userId: string }) =>
      u.client`insert into "CreditTransaction" (user_id, amount, operation, feature_type)
               values (${u.userId}, 1, 'deduct', 'chat_tool_call') returning *`;

    const samples = users.map(() => [] as number[]);
    const roundMedians = users.map(() => [] as number[]);
    const rounds = int('rounds');
    const perRound = int('per-round');
    // Warm-up: plans cached, pages in.
    for (const u of users) for (let i = 0; i < 100; i++) await deduct(u);
    for (let round = 0; round < rounds; round++) {
      const order = users.map((_, i) => (i + round) % users.length);
      const thisRound = users.map(() => [] as number[]);
      for (let i = 0; i < perRound; i++) {
        for (const k of order) {
          const u = users[k];
          if (!u) continue;
          const t = await timed(() => deduct(u));
          samples[k]?.push(t);
          thisRound[k]?.push(t);
        }
      }
      thisRound.forEach((s, k) => {
        roundMedians[k]?.push(median(s));
      });
    }
    const baseP50 = percentile(samples[0] ?? [], 50);
    log(`deductions, one connection, ${rounds} rounds × ${perRound} calls each, rotated:`);
    users.forEach((u, k) => {
      const s = samples[k] ?? [];
      const r = roundMedians[k] ?? [];
      log(
        `  ${u.name.padEnd(46)} p50 ${ms(percentile(s, 50))}  p99 ${ms(percentile(s, 99))}  ` +
          `round medians ${ms(Math.min(...r))}–${ms(Math.max(...r))}  p50 × ${(percentile(s, 50) / baseP50).toFixed(2)}`,
      );
    });
  } finally {
    await cur.close();
    await curSql.end();
    await oldSql.end();
    await current.close();
    await base.close();
  }
}

async function measureUsage(): Promise<void> {
  const rows = int('rows');
  const data = await pg.createDatabase();
  const client = postgres(data.url, { max: 1, onnotice: () => {} });
  const handle = createDatabase(data.url, { max: 1 });
  try {
    const seedMs = await timed(() => seedTrail(client, { rows, onProgress: () => {} }));
    log(
      `usage figures: seeded ${rows.toLocaleString('en')} rows in ${(seedMs / 1000).toFixed(1)} s`,
    );
    const [heavy] = await client<{ user_id: string }[]>`
      select user_id from "CreditTransaction" group by 1 order by count(*) desc limit 1`;
    const start = new Date('2025-01-01T00:00:00Z').getTime();
    const day = 86_400_000;
    const cases = [
      { name: 'all users, one day', from: start + 180 * day, to: start + 181 * day },
      { name: 'all users, 30 days', from: start + 150 * day, to: start + 180 * day },
      { name: 'all users, the year', from: start - day, to: start + 366 * day },
      {
        name: 'one heavy user, the year',
        from: start - day,
        to: start + 366 * day,
        userId: heavy?.user_id ?? '',
      },
    ];
    const runs = int('figure-runs');
    await measureCases();

    async function measureCases() {
      log(
        `usage figures (getCreditUsage: its first call, which sums the past days it needs, then the median of ${runs} more / a count of the same rows):`,
      );
      for (const c of cases) {
        const input = {
          from: new Date(c.from),
          to: new Date(c.to),
          ...(c.userId ? { userId: c.userId } : {}),
        };
        const pkg: number[] = [];
        const baseline: number[] = [];
        let days = 0;
        let counted = 0;
        const firstMs = await timed(() => getCreditUsage(handle.db, input));
        for (let i = 0; i < runs; i++) {
          pkg.push(
            await timed(async () => {
              days = (await getCreditUsage(handle.db, input)).length;
            }),
          );
          baseline.push(
            await timed(async () => {
              const [r] = c.userId
                ? await client<{ n: number }[]>`select count(*)::int as n from "CreditTransaction"
                  where user_id = ${c.userId} and created_at >= ${input.from} and created_at < ${input.to}`
                : await client<{ n: number }[]>`select count(*)::int as n from "CreditTransaction"
                  where created_at >= ${input.from} and created_at < ${input.to}`;
              counted = r?.n ?? 0;
            }),
          );
        }
        log(
          `  ${c.name.padEnd(26)} ${counted.toLocaleString('en').padStart(10)} rows → ${String(days).padStart(5)} day×feature rows: ` +
            `first ${ms(firstMs)}, then ${ms(median(pkg))} / ${ms(median(baseline))} (× ${(median(pkg) / median(baseline)).toFixed(2)})`,
        );
      }
    }
  } finally {
    await client.end();
    await handle.close();
    await data.close();
  }
}
