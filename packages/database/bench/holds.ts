import { SingleBar } from 'cli-progress';
import type postgres from 'postgres';
import type { Database } from '../src/client.js';
import {
  deductCredits,
  expireCreditHolds,
  getCreditBalance,
  holdCredits,
  settleCreditHold,
} from '../src/credits/index.js';
import { verifyLedger } from '../src/credits/verify.js';
import {
  alternate,
  type Figure,
  figure,
  formatSpread,
  interleave,
  median,
  percentile,
  roundsFigure,
  spreadOf,
  timed,
} from './stats.js';
import { createBaselineTables, run } from './writes.js';

const CALLERS = 16;
const FEATURE = 'chat_tool_call';

/** Users with plenty of credits, created through the ledger (their opening rows are real). */
export async function createUsers(sql: postgres.Sql, label: string, count: number) {
  return (
    await sql<{ id: string }[]>`
      insert into "User" (email, free_credits, free_chat_messages)
      select ${label} || '-' || n || '@example.com', 1000000000, 0 from generate_series(1, ${count}::int) n
      returning id`
  ).map((r) => r.id);
}

/**
 * holdCredits + settleCreditHold (the whole amount), one pair per op, beside a single
 * deductCredits of the same amount: the reservation's two writes against the one write it
 * replaces. 16 concurrent callers on 16 distinct users and on one hot user; rounds alternate
 * which goes first; the figure is the median round, in ops/s (a pair is one op).
 */
export async function measureHoldWrites(
  db: Database,
  users: string[],
  rounds: number,
  opsPerCaller: number,
  log: (line: string) => void,
): Promise<Figure[]> {
  const holdAndSettle = async (userId: string) => {
    const hold = await holdCredits(db, { userId, amount: 1, featureType: FEATURE });
    await settleCreditHold(db, { holdId: hold.holdId, userId });
  };
  const deduct = (userId: string) => deductCredits(db, { userId, amount: 1, featureType: FEATURE });
  const hot = users[0] ?? '';
  const cases = {
    hold_settle_distinct_users: {
      pkg: (c: number) => holdAndSettle(users[c] ?? hot),
      baseline: (c: number) => deduct(users[c] ?? hot),
    },
    hold_settle_hot_user: { pkg: () => holdAndSettle(hot), baseline: () => deduct(hot) },
  };
  const figures: Figure[] = [];
  for (const [name, c] of Object.entries(cases)) {
    await run(CALLERS, 20, c.pkg); // warm-up: prepared statements, plans
    await run(CALLERS, 20, c.baseline);
    const pkg: number[] = [];
    const baseline: number[] = [];
    await alternate(
      rounds,
      async () => pkg.push(await run(CALLERS, opsPerCaller, c.pkg)),
      async () => baseline.push(await run(CALLERS, opsPerCaller, c.baseline)),
    );
    log(
      `  ${name}: hold + settle ${formatSpread(spreadOf(pkg))} pairs/s, deduct ${formatSpread(spreadOf(baseline))} ops/s over ${rounds} rounds`,
    );
    figures.push(roundsFigure(name, pkg, 'ops/s', baseline, { baselineName: 'deductCredits' }));
  }
  return figures;
}

/**
 * getCreditBalance of a user with `holds` open holds (none due) beside the same call for a
 * user with none, interleaved on one connection; and the same for deductCredits, since every
 * write of a user looks for that user's due holds first. Latency in ms, p50 and p99.
 */
export async function measureHeldBalance(
  db: Database,
  sql: postgres.Sql,
  holds: number,
  iterations: number,
  log: (line: string) => void,
): Promise<Figure[]> {
  const [held = '', free = ''] = await createUsers(sql, 'balance', 2);
  const setupMs = await timed(async () => {
    // An hour: none comes due while measured, so no read or write expires anything.
    for (let i = 0; i < holds; i++)
      await holdCredits(db, {
        userId: held,
        amount: 1,
        featureType: FEATURE,
        expiresInMs: 3600_000,
      });
  });
  const balance = await getCreditBalance(db, held);
  log(
    `  ${holds.toLocaleString('en')} open holds on one user in ${(setupMs / 1000).toFixed(1)} s; ` +
      `its balance: ${balance.freeCredits.toLocaleString('en')} free, ${balance.heldCredits.toLocaleString('en')} held`,
  );
  const cases = {
    [`balance_${holds}_open_holds`]: {
      pkg: () => getCreditBalance(db, held),
      baseline: () => getCreditBalance(db, free),
      iterations,
    },
    [`deduct_${holds}_open_holds`]: {
      pkg: () => deductCredits(db, { userId: held, amount: 1, featureType: FEATURE }),
      baseline: () => deductCredits(db, { userId: free, amount: 1, featureType: FEATURE }),
      iterations: Math.min(iterations, 1000),
    },
  };
  const figures: Figure[] = [];
  for (const [name, c] of Object.entries(cases)) {
    await interleave(Math.min(200, c.iterations), c.pkg, c.baseline); // warm-up
    const sample = await interleave(c.iterations, c.pkg, c.baseline);
    for (const p of [50, 99]) {
      figures.push(
        figure(`${name}_p${p}`, percentile(sample.pkg, p), 'ms', percentile(sample.baseline, p)),
      );
    }
  }
  return figures;
}

/**
 * Hand-written tables beside the ledger's: the "User" and "CreditTransaction" copies of
 * writes.ts, and a copy of "CreditHold" (same columns, indexes and user foreign key; no
 * triggers, no link to the trail).
 */
async function createBaselineHolds(sql: postgres.Sql, users: string[]): Promise<void> {
  await createBaselineTables(sql, users);
  await sql`create table baseline."CreditHold" (like public."CreditHold" including all)`;
  await sql`
    alter table baseline."CreditHold" add foreign key (user_id)
    references baseline."User"(id) on delete cascade`;
}

/**
 * What an app would write by hand to expire due holds, in one statement: take the earliest
 * due holds off the open-hold table (SKIP LOCKED, so concurrent sweepers split the work),
 * give their amounts back to each user's balance, and write one audit row per hold with the
 * balance after it.
 */
const handWrittenSweep = (sql: postgres.Sql, limit: number) => sql`
  with due as (
    delete from baseline."CreditHold" where id in (
      select id from baseline."CreditHold" where expires_at <= now()
      order by expires_at, id limit ${limit} for update skip locked)
    returning *),
  given as (
    update baseline."User" u set free_credits = u.free_credits + s.amount, updated_at = now()
    from (select user_id, sum(amount)::int as amount from due group by user_id) s
    where u.id = s.user_id)
  insert into baseline."CreditTransaction" (user_id, amount, operation, feature_type, hold_id, balance_after)
  select d.user_id, d.amount, 'expire', d.feature_type, d.id,
    u.free_credits + sum(d.amount) over (partition by d.user_id order by d.expires_at, d.id)
  from due d join baseline."User" u on u.id = d.user_id
  returning id`;

export interface ExpiryOptions {
  /** Expired holds to sweep. */
  holds: number;
  /** Holds per user: `holds / perUser` users. */
  perUser: number;
  /** Holds per sweeper call; package and hand-written calls alternate. */
  batch: number;
}

/**
 * expireCreditHolds on `holds` holds past their expiry, in calls of `batch`, alternating with
 * the hand-written sweep on the same number of holds in tables without the ledger; rows/s per
 * call, median call. The holds are taken through the ledger's own trigger (an INSERT of a hold
 * row, as holdCredits writes it), expiring 1 s later, each user's holds one after the other in
 * a server-side loop: a user's later hold never finds an earlier one of its own due (which
 * would expire it there and then). Then it waits for the last one to come due.
 */
export async function measureExpiry(
  db: Database,
  sql: postgres.Sql,
  options: ExpiryOptions,
  log: (line: string) => void,
): Promise<Figure[]> {
  const { holds, perUser, batch } = options;
  const userCount = Math.ceil(holds / perUser);
  const setupStarted = performance.now();
  const users = await createUsers(sql, 'expiry', userCount);
  await sql`create table bench_expiry_user (n int primary key, id uuid not null)`;
  await sql`insert into bench_expiry_user select n, id from unnest(${users}::uuid[]) with ordinality as t(id, n)`;
  const bar = new SingleBar({
    format: 'taking holds [{bar}] {percentage}% {value}/{total} holds, {eta}s left',
    hideCursor: true,
    noTTYOutput: true,
    notTTYSchedule: 5000,
  });
  bar.start(holds, 0);
  const usersPerChunk = Math.max(1, Math.floor(10_000 / perUser));
  const takeStarted = performance.now();
  for (let from = 1; from <= userCount; from += usersPerChunk) {
    const to = Math.min(userCount, from + usersPerChunk - 1);
    // One statement per hold, each user's holds in a row: the ledger refuses two rows of one
    // user in one statement. The last user takes what is left.
    await sql.unsafe(`
      do $$
      declare u record;
      begin
        for u in select n, id from bench_expiry_user where n between ${from} and ${to} order by n loop
          for i in 1..least(${perUser}, ${holds} - (u.n - 1) * ${perUser}) loop
            insert into public."CreditTransaction" (user_id, amount, operation, feature_type, hold_expires_at)
            values (u.id, 1 + i % 5, 'hold', '${FEATURE}', pg_catalog.clock_timestamp() + interval '1 second');
          end loop;
        end loop;
      end $$`);
    bar.update(Math.min(holds, to * perUser));
  }
  bar.stop();
  const takeMs = performance.now() - takeStarted;
  const [open] = await sql<{ count: number }[]>`select count(*)::int as count from "CreditHold"`;
  log(
    `  ${open?.count.toLocaleString('en')} holds over ${userCount.toLocaleString('en')} users taken in ` +
      `${(takeMs / 1000).toFixed(1)} s (${Math.round(holds / (takeMs / 1000)).toLocaleString('en')} holds/s, one trigger-checked INSERT each)`,
  );
  if (open?.count !== holds) throw new Error(`expected ${holds} open holds, found ${open?.count}`);

  await createBaselineHolds(sql, users);
  await sql`
    insert into baseline."CreditHold" (id, user_id, amount, feature_type, expires_at, created_at)
    select gen_random_uuid(), u.id, 1 + i % 5, ${FEATURE}, now() - interval '1 minute' + (u.n * ${perUser} + i) * interval '1 microsecond', now()
    from bench_expiry_user u cross join generate_series(1, ${perUser}::int) i
    limit ${holds}`;
  // Nothing left for autovacuum to do on the fresh rows while the sweepers run.
  for (const table of [
    'public."CreditHold"',
    'public."CreditTransaction"',
    'public."User"',
    'baseline."CreditHold"',
    'baseline."CreditTransaction"',
    'baseline."User"',
  ])
    await sql.unsafe(`vacuum (analyze) ${table}`);
  const [wait] = await sql<{ ms: number }[]>`
    select greatest(0, extract(epoch from max(expires_at) - clock_timestamp()) * 1000)::float8 as ms
    from "CreditHold"`;
  await new Promise((resolve) => setTimeout(resolve, (wait?.ms ?? 0) + 50));
  log(
    `  set up in ${((performance.now() - setupStarted) / 1000).toFixed(1)} s; sweeping in calls of ${batch.toLocaleString('en')}`,
  );

  const pkg: number[] = [];
  const baseline: number[] = [];
  let expired = 0;
  let given = 0;
  await alternate(
    Math.ceil(holds / batch),
    async () => {
      let rows = 0;
      const ms = await timed(async () => {
        rows = (await expireCreditHolds(db, { limit: batch })).expired.length;
      });
      expired += rows;
      pkg.push(rows / (ms / 1000));
    },
    async () => {
      let rows = 0;
      const ms = await timed(async () => {
        rows = (await handWrittenSweep(sql, batch)).length;
      });
      given += rows;
      baseline.push(rows / (ms / 1000));
    },
  );
  log(
    `  expireCreditHolds: ${expired.toLocaleString('en')} holds expired, ${formatSpread(spreadOf(pkg))} rows/s per call; ` +
      `hand-written: ${given.toLocaleString('en')}, ${formatSpread(spreadOf(baseline))} rows/s per call`,
  );
  if (expired !== holds || given !== holds)
    log(`  ✗ expected ${holds} expired by each, got ${expired} and ${given}`);

  const verifyMs = await timed(async () => {
    const verification = await verifyLedger(db);
    log(
      `  credits:verify after the sweep: ${verification.ok ? 'OK' : `${verification.violationCount} violations`}, ` +
        `${verification.rows.toLocaleString('en')} rows`,
    );
  });
  log(`  (verified in ${(verifyMs / 1000).toFixed(1)} s)`);
  return [figure('expire_holds', median(pkg), 'rows/s', median(baseline))];
}
