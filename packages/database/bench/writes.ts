import postgres from 'postgres';
import type { Database } from '../src/client.js';
import { deductCredits, refundCredits } from '../src/credits/index.js';
import { type Figure, formatSpread, rotate, roundsFigure } from './stats.js';

const CALLERS = 16;
const WARM_UP_OPS = 20;
const FEATURE = 'chat_tool_call';
/** Used keys per user for the replay case (each replay call retries one of them). */
const REPLAY_KEYS = 20;

/**
 * A copy of the two tables without the ledger: what an app writing the same statements by
 * hand would have. Same columns, CHECKs, defaults, indexes (the idempotency key's partial
 * unique index, refund_of's index) and foreign key, but no triggers, and none of the ledger's
 * own columns filled (seq, hash) nor its apply-order index. One column more, `refunded`, for
 * the one-statement capped refund (see `refundCte`).
 */
export async function createBaselineTables(sql: postgres.Sql, users: string[]): Promise<void> {
  await sql`create schema baseline`;
  await sql`create table baseline."User" (like public."User" including all)`;
  await sql`create table baseline."CreditTransaction" (like public."CreditTransaction" including all)`;
  await sql`
    alter table baseline."CreditTransaction" add foreign key (user_id)
    references baseline."User"(id) on delete cascade`;
  await sql`
    alter table baseline."CreditTransaction"
    alter column seq drop not null, alter column hash drop not null,
    add column refunded integer not null default 0`;
  const [seqIndex] = await sql<{ name: string }[]>`
    select i.relname as name from pg_index x join pg_class i on i.oid = x.indexrelid
    where x.indrelid = 'baseline."CreditTransaction"'::regclass
      and pg_get_indexdef(i.oid) like '%(user_id, seq)%'`;
  if (seqIndex) await sql.unsafe(`drop index baseline."${seqIndex.name}"`);
  await sql`
    insert into baseline."User" (id, email, free_credits, free_chat_messages)
    select id, email, free_credits, free_chat_messages from public."User" where id = any(${users}::uuid[])`;
}

/** `callers` concurrent loops of `opsPerCaller` calls each: calls per second over the whole. */
export async function run(
  callers: number,
  opsPerCaller: number,
  op: (caller: number) => Promise<unknown>,
): Promise<number> {
  const started = performance.now();
  await Promise.all(
    Array.from({ length: callers }, async (_, caller) => {
      for (let i = 0; i < opsPerCaller; i++) await op(caller);
    }),
  );
  return (callers * opsPerCaller) / ((performance.now() - started) / 1000);
}

type Op = (caller: number) => Promise<unknown>;
interface WriteCase {
  /** The package's call. */
  pkg: Op;
  /** The same write as one data-modifying statement (one round trip). */
  cte: Op;
  /** The same write as a transaction, one statement per step. */
  tx: Op;
}

class Replayed extends Error {}

/**
 * The hand-written baselines on the trigger-free copy (`baseline.*`), as postgres.js tagged
 * templates (prepared statements). Each returns the written (or, on a replay, the first) row;
 * an empty result where the package would throw (insufficient credits, a refund over its
 * deduction) throws too, so a silent no-op can never look fast.
 */
function baselines(sql: postgres.Sql) {
  const one = <T>(rows: T[], what: string): T => {
    const [row] = rows;
    if (!row) throw new Error(what);
    return row;
  };
  return {
    /** The issue's statement: the conditional UPDATE feeds the INSERT, one round trip. */
    deductCte: async (userId: string) =>
      one(
        await sql`
          with u as (
            update baseline."User" set free_credits = free_credits - 1, updated_at = now()
            where id = ${userId}::uuid and free_credits >= 1 returning free_credits)
          insert into baseline."CreditTransaction" (user_id, amount, operation, feature_type, balance_after)
          select ${userId}::uuid, 1, 'deduct', ${FEATURE}, free_credits from u returning *`,
        'insufficient credits',
      ),
    deductTx: (userId: string) =>
      sql.begin(async (tx) => {
        const row = one(
          await tx`
            update baseline."User" set free_credits = free_credits - 1, updated_at = now()
            where id = ${userId}::uuid and free_credits >= 1 returning free_credits`,
          'insufficient credits',
        );
        return one(
          await tx`
            insert into baseline."CreditTransaction" (user_id, amount, operation, feature_type, balance_after)
            values (${userId}::uuid, 1, 'deduct', ${FEATURE}, ${row.free_credits}) returning *`,
          'no row',
        );
      }),
    /**
     * A refund of 1 of `deductionId`, capped at that deduction's amount in one statement: the
     * deduction's `refunded` counter is raised only while it stays within `amount` (a
     * conditional UPDATE, re-checked on the newest row version under its lock, so concurrent
     * refunds of one deduction cannot pass the cap together); the balance and the refund row
     * follow only when it was. It updates the deduction's row: the trail is not append-only.
     */
    refundCte: async (userId: string, deductionId: string) =>
      one(
        await sql`
          with d as (
            update baseline."CreditTransaction" set refunded = refunded + 1
            where id = ${deductionId}::uuid and user_id = ${userId}::uuid and operation = 'deduct'
              and refunded + 1 <= amount
            returning id, feature_type),
          u as (
            update baseline."User" set free_credits = free_credits + 1, updated_at = now()
            where id = ${userId}::uuid and exists (select from d) returning free_credits)
          insert into baseline."CreditTransaction"
            (user_id, amount, operation, feature_type, balance_after, refund_of)
          select ${userId}::uuid, 1, 'refund', d.feature_type, u.free_credits, d.id from d, u
          returning *`,
        'refund over its deduction',
      ),
    /**
     * The same cap, append-only, as a transaction: lock the deduction (refunds of it queue
     * here), then, in a statement whose snapshot is taken after the lock (READ COMMITTED), give
     * the credit back only if the refunds so far plus this one stay within it, then the row.
     */
    refundTx: (userId: string, deductionId: string) =>
      sql.begin(async (tx) => {
        const deduction = one(
          await tx<{ amount: number }[]>`
            select amount from baseline."CreditTransaction"
            where id = ${deductionId}::uuid and user_id = ${userId}::uuid and operation = 'deduct'
            for update`,
          'no such deduction',
        );
        const row = one(
          await tx`
            update baseline."User" set free_credits = free_credits + 1, updated_at = now()
            where id = ${userId}::uuid
              and (select coalesce(sum(amount), 0) from baseline."CreditTransaction"
                   where refund_of = ${deductionId}::uuid) + 1 <= ${deduction.amount}
            returning free_credits`,
          'refund over its deduction',
        );
        return one(
          await tx`
            insert into baseline."CreditTransaction"
              (user_id, amount, operation, feature_type, balance_after, refund_of)
            values (${userId}::uuid, 1, 'refund', ${FEATURE}, ${row.free_credits}, ${deductionId}::uuid)
            returning *`,
          'no row',
        );
      }),
    /**
     * An idempotent deduction in one statement. The user's row is locked first (FOR UPDATE
     * returns its newest version, so balance_after is right under concurrency); the INSERT
     * runs only then, and ON CONFLICT on the (user_id, idempotency_key) partial unique index
     * skips a used key; the balance is changed only when a row was inserted. A retry gets the
     * first row back from the last SELECT, except when it raced the first attempt (that row
     * committed after this statement's snapshot): then it gets no row, and would read again.
     */
    idempotentCte: async (userId: string, key: string) =>
      one(
        await sql`
          with l as (
            select id, free_credits from baseline."User"
            where id = ${userId}::uuid and free_credits >= 1 for update),
          ins as (
            insert into baseline."CreditTransaction"
              (user_id, amount, operation, feature_type, balance_after, idempotency_key)
            select l.id, 1, 'deduct', ${FEATURE}, l.free_credits - 1, ${key} from l
            on conflict (user_id, idempotency_key) where idempotency_key is not null do nothing
            returning *),
          u as (
            update baseline."User" set free_credits = free_credits - 1, updated_at = now()
            where id = (select user_id from ins) returning free_credits)
          select ins.*, false as replayed from ins
          union all
          select t.*, true from baseline."CreditTransaction" t
          where t.user_id = ${userId}::uuid and t.idempotency_key = ${key}
            and not exists (select from ins)`,
        'insufficient credits or a concurrent first attempt',
      ),
    /**
     * As a transaction: UPDATE, then INSERT … ON CONFLICT DO NOTHING; no row means the key
     * was used: roll back (the balance change with it) and read the first row.
     */
    idempotentTx: async (userId: string, key: string) => {
      try {
        return await sql.begin(async (tx) => {
          const balance = one(
            await tx`
              update baseline."User" set free_credits = free_credits - 1, updated_at = now()
              where id = ${userId}::uuid and free_credits >= 1 returning free_credits`,
            'insufficient credits',
          );
          const [row] = await tx`
            insert into baseline."CreditTransaction"
              (user_id, amount, operation, feature_type, balance_after, idempotency_key)
            values (${userId}::uuid, 1, 'deduct', ${FEATURE}, ${balance.free_credits}, ${key})
            on conflict (user_id, idempotency_key) where idempotency_key is not null do nothing
            returning *`;
          if (!row) throw new Replayed();
          return row;
        });
      } catch (error) {
        if (!(error instanceof Replayed)) throw error;
        return one(
          await sql`
            select * from baseline."CreditTransaction"
            where user_id = ${userId}::uuid and idempotency_key = ${key}`,
          'the key vanished',
        );
      }
    },
  };
}

/** Hands out ids in order, one list per caller: each refund call takes the next deduction. */
function queues(lists: string[][]) {
  const next = lists.map(() => 0);
  return (caller: number): string => {
    const list = lists[caller] ?? [];
    const id = list[next[caller] ?? 0];
    if (id === undefined) throw new Error(`caller ${caller} ran out of deductions to refund`);
    next[caller] = (next[caller] ?? 0) + 1;
    return id;
  };
}

/**
 * `count` deductions of 1 per caller to refund, in the ledger (through its triggers) and in
 * the baseline copy twice (one set each for the CTE and the transaction, since each deduction
 * is refunded once; their balance lowered to match): per caller, the user `userOf(caller)`.
 * The ledger's rows go in one INSERT statement each (its triggers number a user's rows per
 * statement), from a DO loop, marked with an idempotency key `tag-n` to find them again.
 */
async function deductionsToRefund(
  admin: postgres.Sql,
  tag: string,
  userOf: (caller: number) => string,
  count: number,
): Promise<{ pkg: string[][]; cte: string[][]; tx: string[][] }> {
  const callersOf = new Map<string, number[]>();
  for (let caller = 0; caller < CALLERS; caller++)
    callersOf.set(userOf(caller), [...(callersOf.get(userOf(caller)) ?? []), caller]);
  const ids = {
    pkg: Array.from({ length: CALLERS }, () => [] as string[]),
    cte: Array.from({ length: CALLERS }, () => [] as string[]),
    tx: Array.from({ length: CALLERS }, () => [] as string[]),
  };
  // Each user's ids, dealt to its callers in turn.
  const deal = (side: keyof typeof ids, callers: number[], rows: { id: string }[]) => {
    for (const [i, r] of rows.entries())
      ids[side][callers[i % callers.length] as number]?.push(r.id);
  };
  for (const [userId, callers] of callersOf) {
    const total = count * callers.length;
    if (!/^[0-9a-f-]{36}$/.test(userId) || !/^[a-z_]+$/.test(tag))
      throw new Error(`unexpected user id ${userId} or tag ${tag}`);
    await admin.unsafe(`
      do $$ begin
        for n in 1..${total} loop
          insert into public."CreditTransaction" (user_id, amount, operation, feature_type, idempotency_key)
          values ('${userId}', 1, 'deduct', '${FEATURE}', '${tag}-' || n);
        end loop;
      end $$`);
    deal(
      'pkg',
      callers,
      await admin<{ id: string }[]>`
        select id from public."CreditTransaction"
        where user_id = ${userId}::uuid and idempotency_key like ${`${tag}-%`} order by seq`,
    );
    for (const side of ['cte', 'tx'] as const) {
      deal(
        side,
        callers,
        await admin<{ id: string }[]>`
          insert into baseline."CreditTransaction" (user_id, amount, operation, feature_type, balance_after)
          select ${userId}::uuid, 1, 'deduct', ${FEATURE}, 0 from generate_series(1, ${total}::int)
          returning id`,
      );
      await admin`
        update baseline."User" set free_credits = free_credits - ${total}::int where id = ${userId}::uuid`;
    }
  }
  return ids;
}

/**
 * The package's writes with 16 concurrent callers, each beside two hand-written baselines on
 * the trigger-free copy: one data-modifying statement (a CTE, one round trip) and a
 * transaction with one statement per step. Cases: deductCredits (16 distinct users, one hot
 * user), refundCredits with refundOf (a capped refund of a deduction of the caller's user),
 * deductCredits with a fresh idempotencyKey per call, and with a used one (a replay). Each
 * round runs the three one after the other, the order rotated every round; the figures are
 * the median round (ops/s), with every round's min–max and the round-by-round ratio's.
 */
export async function measureWrites(
  db: Database,
  url: string,
  users: string[],
  rounds: number,
  opsPerCaller: number,
  options: { log: (line: string) => void; beforeRounds: () => Promise<void> },
): Promise<Figure[]> {
  const sql = postgres(url, { max: CALLERS, onnotice: () => {} });
  const admin = postgres(url, { max: 1, onnotice: () => {} });
  const base = baselines(sql);
  const hot = users[0] ?? '';
  const userOf = (c: number) => users[c] ?? hot;
  const opsPerCallerInAll = WARM_UP_OPS + rounds * opsPerCaller;
  // Fresh keys: unique per call across contenders and cases.
  let keys = 0;
  const freshKey = () => `k-${++keys}`;
  const replayKey = (() => {
    let i = 0;
    return (caller: number) => `replay-${caller}-${i++ % REPLAY_KEYS}`;
  })();

  const deduct = (userId: string) => deductCredits(db, { userId, amount: 1, featureType: FEATURE });
  const deductKeyed = (userId: string, idempotencyKey: string) =>
    deductCredits(db, { userId, amount: 1, featureType: FEATURE, idempotencyKey });
  const refund = (userId: string, refundOf: string) =>
    refundCredits(db, { userId, amount: 1, featureType: FEATURE, refundOf });

  const cases: Record<string, () => Promise<WriteCase>> = {
    deduct_distinct_users: async () => ({
      pkg: (c) => deduct(userOf(c)),
      cte: (c) => base.deductCte(userOf(c)),
      tx: (c) => base.deductTx(userOf(c)),
    }),
    deduct_hot_user: async () => ({
      pkg: () => deduct(hot),
      cte: () => base.deductCte(hot),
      tx: () => base.deductTx(hot),
    }),
    refund_capped_distinct_users: async () => {
      const ids = await deductionsToRefund(admin, 'refundable', userOf, opsPerCallerInAll);
      const [pkg, cte, tx] = [queues(ids.pkg), queues(ids.cte), queues(ids.tx)];
      return {
        pkg: (c) => refund(userOf(c), pkg(c)),
        cte: (c) => base.refundCte(userOf(c), cte(c)),
        tx: (c) => base.refundTx(userOf(c), tx(c)),
      };
    },
    refund_capped_hot_user: async () => {
      const ids = await deductionsToRefund(admin, 'refundable_hot', () => hot, opsPerCallerInAll);
      const [pkg, cte, tx] = [queues(ids.pkg), queues(ids.cte), queues(ids.tx)];
      return {
        pkg: (c) => refund(hot, pkg(c)),
        cte: (c) => base.refundCte(hot, cte(c)),
        tx: (c) => base.refundTx(hot, tx(c)),
      };
    },
    deduct_idempotent_distinct_users: async () => ({
      pkg: (c) => deductKeyed(userOf(c), freshKey()),
      cte: (c) => base.idempotentCte(userOf(c), freshKey()),
      tx: (c) => base.idempotentTx(userOf(c), freshKey()),
    }),
    deduct_idempotent_hot_user: async () => ({
      pkg: () => deductKeyed(hot, freshKey()),
      cte: () => base.idempotentCte(hot, freshKey()),
      tx: () => base.idempotentTx(hot, freshKey()),
    }),
    deduct_idempotent_replay_distinct_users: async () => {
      // Each user's keys used once, on both sides, before the replays.
      for (let k = 0; k < REPLAY_KEYS; k++)
        for (let c = 0; c < CALLERS; c++) {
          await deductKeyed(userOf(c), `replay-${c}-${k}`);
          await base.idempotentTx(userOf(c), `replay-${c}-${k}`);
        }
      const check = async (replay: Promise<{ replayed: boolean }>) => {
        if (!(await replay).replayed) throw new Error('a replay wrote a row');
      };
      return {
        pkg: (c) => check(deductKeyed(userOf(c), replayKey(c))),
        cte: (c) =>
          check(
            base
              .idempotentCte(userOf(c), replayKey(c))
              .then((row) => ({ replayed: row.replayed === true })),
          ),
        tx: (c) =>
          // The transaction baseline returns the row as stored; a replay is an older row.
          base.idempotentTx(userOf(c), replayKey(c)),
      };
    },
  };

  const figures: Figure[] = [];
  try {
    for (const [name, make] of Object.entries(cases)) {
      const c = await make();
      const samples = { pkg: [] as number[], cte: [] as number[], tx: [] as number[] };
      for (const side of ['pkg', 'cte', 'tx'] as const) await run(CALLERS, WARM_UP_OPS, c[side]);
      await options.beforeRounds();
      await rotate(
        rounds,
        (['pkg', 'cte', 'tx'] as const).map(
          (side) => async () => samples[side].push(await run(CALLERS, opsPerCaller, c[side])),
        ),
      );
      options.log(
        `  ${name}: package ${formatSpread({ min: Math.min(...samples.pkg), max: Math.max(...samples.pkg) })}, ` +
          `CTE ${formatSpread({ min: Math.min(...samples.cte), max: Math.max(...samples.cte) })}, ` +
          `transaction ${formatSpread({ min: Math.min(...samples.tx), max: Math.max(...samples.tx) })} ops/s over ${rounds} rounds`,
      );
      figures.push(
        roundsFigure(`${name}_vs_cte`, samples.pkg, 'ops/s', samples.cte, {
          baselineName: 'one-statement CTE',
        }),
        roundsFigure(`${name}_vs_tx`, samples.pkg, 'ops/s', samples.tx, {
          baselineName: 'transaction, one statement per step',
        }),
      );
    }
    await checkBaselineTables(admin, options.log);
  } finally {
    await admin.end();
    await sql.end();
  }
  return figures;
}

/**
 * The baselines wrote what they claim: each user's balance is its start minus its deductions
 * plus its refunds, no deduction is refunded past its amount, no key used twice. Printed, so a
 * baseline that is fast because it is wrong shows up.
 */
async function checkBaselineTables(admin: postgres.Sql, log: (line: string) => void) {
  const [row] = await admin<{ users_off: number; over_refunded: number; keys_twice: number }[]>`
    select
      (select count(*)::int from baseline."User" u
       join public."User" p on p.id = u.id
       left join (select user_id,
                    sum(case when operation = 'deduct' then -amount else amount end) as delta
                  from baseline."CreditTransaction" group by user_id) t on t.user_id = u.id
       where u.free_credits <> 1000000000 + coalesce(t.delta, 0)) as users_off,
      (select count(*)::int from baseline."CreditTransaction" d
       where d.operation = 'deduct'
         and (select coalesce(sum(r.amount), 0) from baseline."CreditTransaction" r
              where r.refund_of = d.id) > d.amount) as over_refunded,
      (select count(*)::int from (select 1 from baseline."CreditTransaction"
       where idempotency_key is not null group by user_id, idempotency_key having count(*) > 1) k)
        as keys_twice`;
  const ok = row?.users_off === 0 && row.over_refunded === 0 && row.keys_twice === 0;
  log(
    `  baseline tables: ${ok ? 'consistent' : 'INCONSISTENT'} (balances off: ${row?.users_off}, ` +
      `deductions refunded past their amount: ${row?.over_refunded}, keys used twice: ${row?.keys_twice})`,
  );
}
