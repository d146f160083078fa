import postgres from 'postgres';
import type { Database } from '../src/client.js';
import { deductCredits } from '../src/credits/index.js';
import { alternate, type Figure, figure, median } from './stats.js';

const CALLERS = 16;

/**
 * A copy of the two tables without the ledger: what an app writing the same UPDATE + INSERT
 * by hand would have. Same columns, CHECKs, defaults, indexes and foreign key, but no
 * triggers, and none of the ledger's own columns filled (seq, hash) nor its apply-order index.
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
    alter column seq drop not null, alter column hash drop not null`;
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

/**
 * deductCredits with 16 concurrent callers, on 16 distinct users and on one hot user,
 * beside the same deduction written by hand with postgres.js: a transaction with the
 * conditional UPDATE … RETURNING and the audit INSERT. Rounds alternate which goes first;
 * the figure is the median round.
 */
export async function measureWrites(
  db: Database,
  url: string,
  users: string[],
  rounds: number,
  opsPerCaller: number,
): Promise<Figure[]> {
  const sql = postgres(url, { max: CALLERS, onnotice: () => {} });
  const handWritten = (userId: string) =>
    sql.begin(async (tx) => {
      const [row] = await tx`
        update baseline."User" set free_credits = free_credits - 1, updated_at = now()
        where id = ${userId} and free_credits >= 1 returning free_credits`;
      if (!row) throw new Error('insufficient credits');
      await tx`
        insert into baseline."CreditTransaction" (user_id, amount, operation, feature_type, balance_after)
        values (${userId}, 1, 'deduct', 'chat_tool_call', ${row.free_credits})`;
    });
  const viaPackage = (userId: string) =>
    deductCredits(db, { userId, amount: 1, featureType: 'chat_tool_call' });
  const hot = users[0] ?? '';
  const cases = {
    deduct_distinct_users: {
      pkg: (c: number) => viaPackage(users[c] ?? hot),
      baseline: (c: number) => handWritten(users[c] ?? hot),
    },
    deduct_hot_user: { pkg: () => viaPackage(hot), baseline: () => handWritten(hot) },
  };
  const figures: Figure[] = [];
  try {
    for (const [name, c] of Object.entries(cases)) {
      await run(CALLERS, 20, c.pkg); // warm-up
      await run(CALLERS, 20, c.baseline);
      const pkg: number[] = [];
      const baseline: number[] = [];
      await alternate(
        rounds,
        async () => pkg.push(await run(CALLERS, opsPerCaller, c.pkg)),
        async () => baseline.push(await run(CALLERS, opsPerCaller, c.baseline)),
      );
      figures.push(figure(name, median(pkg), 'ops/s', median(baseline)));
    }
  } finally {
    await sql.end();
  }
  return figures;
}
