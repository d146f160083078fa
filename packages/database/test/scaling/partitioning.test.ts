import { readFileSync } from 'node:fs';
import { createTestDatabase } from '@bragdoc/test-postgres';
import { eq } from 'drizzle-orm';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type Database } from '../../src/client.js';
import { rangeQuery, userHistoryQuery } from '../../src/credits/history.js';
import {
  deductCredits,
  expireCreditHolds,
  getCreditBalance,
  grantCredits,
  HoldAlreadySettledError,
  HoldAlreadyVoidedError,
  HoldExpiredError,
  holdCredits,
  IdempotencyConflictError,
  InsufficientCreditsError,
  InvalidRefundTargetError,
  listCreditTransactions,
  RefundExceedsDeductionError,
  refundCredits,
  settleCreditHold,
  verifyLedger,
  voidCreditHold,
} from '../../src/credits/index.js';
import { user } from '../../src/schema.js';
import { createUser, ledgerMismatches, trailSize } from '../credits/fixtures.js';
import { explainNodes, indexesUsed, seqScansOf } from '../explain.js';
import { refusalOf } from '../support.js';

// The DDL that docs/SCALING.md describes, run as written.
const partitionDdl = readFileSync(
  new URL('../../../../docs/scaling/partition-credit-transaction.sql', import.meta.url),
  'utf8',
);

let db: Database;
let sql: postgres.Sql;
let close: () => Promise<void>;
let before: { userId: string; deduction: string };
/** Holds taken before the change: one still open, one voided. */
let holdsBefore: { userId: string; open: string; voided: string };

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const doc = 'document_generation' as const;

/** What verifyLedger finds wrong in the user's trail (the installation aside: see SCALING.md). */
async function trailViolations(userId: string) {
  const { violations } = await verifyLedger(db, { userId });
  return violations.filter((v) => v.userId !== null);
}

/**
 * A row dated in an earlier month, as rows moved from an older table are: written with the
 * ledger's triggers off, since the ledger dates every row it writes itself.
 */
async function oldRow(userId: string, at: string) {
  await sql.begin(async (tx) => {
    await tx`alter table "CreditTransaction" disable trigger user`;
    await tx`insert into "CreditTransaction" (user_id, amount, operation, feature_type, created_at, balance_after, seq, hash)
             values (${userId}, 1, 'grant', 'chat_tool_call', ${at}, 0, 1, 'old')`;
    await tx`alter table "CreditTransaction" enable trigger user`;
  });
}

beforeAll(async () => {
  const testDb = await createTestDatabase({ connect: (url) => createDatabase(url, { max: 4 }) });
  ({ db, close } = testDb);
  sql = postgres(testDb.url, { max: 1, onnotice: () => {} });
  // History written before the change, through the package.
  const u = await createUser(db);
  const { transaction } = await deductCredits(db, {
    userId: u.id,
    amount: 4,
    featureType: 'chat_tool_call',
    idempotencyKey: 'before',
  });
  before = { userId: u.id, deduction: transaction.id };
  const h = await createUser(db);
  const open = await holdCredits(db, { userId: h.id, amount: 3, featureType: doc });
  const voided = await holdCredits(db, { userId: h.id, amount: 2, featureType: doc });
  await voidCreditHold(db, { holdId: voided.holdId });
  holdsBefore = { userId: h.id, open: open.holdId, voided: voided.holdId };
  await sql.unsafe(partitionDdl);
}, 60_000);
afterAll(async () => {
  await sql.end();
  await close();
});

describe('"CreditTransaction" range-partitioned by created_at (docs/scaling)', () => {
  it('is a partitioned table with monthly partitions and a default one', async () => {
    const parts = await sql`
      select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid
      where i.inhparent = '"CreditTransaction"'::regclass order by 1`;
    expect(parts.map((r) => r.relname)).toEqual([
      'CreditTransaction_2026_10',
      'CreditTransaction_2026_11',
      'CreditTransaction_2026_12',
      'CreditTransaction_default',
    ]);
  });

  it('kept the rows, their idempotency keys and the balances that explain them', async () => {
    expect(await trailSize(db, before.userId)).toBe(1);
    const replay = await deductCredits(db, {
      userId: before.userId,
      amount: 4,
      featureType: 'chat_tool_call',
      idempotencyKey: 'before',
    });
    expect(replay.replayed).toBe(true);
    expect(await ledgerMismatches(db)).toEqual([]);
  });

  it('the package works on it unchanged: deduct, grant, refund, the refund cap, errors', async () => {
    const u = await createUser(db);
    const d = await deductCredits(db, {
      userId: u.id,
      amount: 3,
      featureType: 'document_generation',
    });
    expect(d.balance).toBe(7);
    expect(
      (await grantCredits(db, { userId: u.id, amount: 5, featureType: 'document_generation' }))
        .balance,
    ).toBe(12);
    await refundCredits(db, {
      userId: u.id,
      amount: 3,
      featureType: 'document_generation',
      refundOf: d.transaction.id,
    });
    await expect(
      refundCredits(db, {
        userId: u.id,
        amount: 1,
        featureType: 'document_generation',
        refundOf: d.transaction.id,
      }),
    ).rejects.toThrow(RefundExceedsDeductionError);
    await expect(
      refundCredits(db, {
        userId: u.id,
        amount: 1,
        featureType: 'document_generation',
        refundOf: before.deduction,
      }),
    ).rejects.toThrow(InvalidRefundTargetError);
    await expect(
      deductCredits(db, { userId: u.id, amount: 100, featureType: 'chat_tool_call' }),
    ).rejects.toThrow(InsufficientCreditsError);
    expect(await ledgerMismatches(db)).toEqual([]);
  });

  it('keeps idempotency keys unique per user across partitions', async () => {
    const u = await createUser(db);
    const first = await deductCredits(db, {
      userId: u.id,
      amount: 1,
      featureType: 'chat_tool_call',
      idempotencyKey: 'k',
    });
    const retry = await deductCredits(db, {
      userId: u.id,
      amount: 1,
      featureType: 'chat_tool_call',
      idempotencyKey: 'k',
    });
    expect(retry).toMatchObject({ replayed: true, transaction: { id: first.transaction.id } });
    await expect(
      grantCredits(db, {
        userId: u.id,
        amount: 1,
        featureType: 'chat_tool_call',
        idempotencyKey: 'k',
      }),
    ).rejects.toThrow(IdempotencyConflictError);
    // A raw insert cannot reuse the key either: the claim table refuses it, whichever
    // partition the row would go to.
    const other = await refusalOf(
      sql`insert into "CreditTransaction" (user_id, amount, operation, feature_type, idempotency_key)
          values (${u.id}, 1, 'grant', 'chat_tool_call', 'k')`,
    );
    expect(other.code).toBe('23505');
  });

  it('puts each row in the partition whose month holds its created_at (the time it was applied)', async () => {
    const u = await createUser(db);
    await grantCredits(db, { userId: u.id, amount: 1, featureType: 'chat_tool_call' });
    const rows = await sql`
      select c.created_at, pg_get_expr(p.relpartbound, p.oid) as bound, p.relname
        from "CreditTransaction" c join pg_class p on p.oid = c.tableoid
       where c.user_id = ${u.id}`;
    expect(rows).toHaveLength(3);
    for (const row of rows) {
      const range = /FROM \('([^']+)'\) TO \('([^']+)'\)/.exec(String(row.bound));
      if (range) {
        const at = new Date(row.created_at as string).getTime();
        expect(at).toBeGreaterThanOrEqual(new Date(String(range[1])).getTime());
        expect(at).toBeLessThan(new Date(String(range[2])).getTime());
      } else {
        expect(row.relname).toBe('CreditTransaction_default');
      }
    }
  });

  it('stays append-only: UPDATE, DELETE and TRUNCATE of the parent, of a partition and of the claimed keys are refused', async () => {
    // A row in the partition the statements name, whatever month the test runs in: an
    // UPDATE or DELETE of an empty partition fires no row trigger, and would prove nothing.
    const u = await createUser(db);
    await oldRow(u.id, '2026-11-10');
    for (const statement of [
      sql`update "CreditTransaction" set amount = 99`,
      sql`delete from "CreditTransaction"`,
      sql`truncate "CreditTransaction"`,
      sql`update "CreditTransaction_2026_11" set amount = 99`,
      sql`delete from "CreditTransaction_2026_11"`,
      sql`truncate "CreditTransaction_2026_11"`,
      sql`delete from credit_idempotency_key`,
      sql`truncate credit_idempotency_key`,
      sql`update credit_hold_closing set user_id = user_id`,
      sql`delete from credit_hold_closing`,
      sql`truncate credit_hold_closing`,
    ]) {
      expect((await refusalOf(statement)).code).toBe('BC005');
    }
    // The row was written past the ledger: it goes with its user, as moved rows do.
    await db.delete(user).where(eq(user.id, u.id));
  });

  it("still deletes a user's rows, in every partition, with the user, and its holds and claims", async () => {
    const u = await createUser(db);
    await grantCredits(db, {
      userId: u.id,
      amount: 1,
      featureType: 'chat_tool_call',
      idempotencyKey: 'x',
    });
    const settled = await holdCredits(db, { userId: u.id, amount: 2, featureType: doc });
    await settleCreditHold(db, { holdId: settled.holdId, amount: 1 });
    await holdCredits(db, { userId: u.id, amount: 2, featureType: doc });
    await oldRow(u.id, '2026-10-15');
    await db.delete(user).where(eq(user.id, u.id));
    expect(await trailSize(db, u.id)).toBe(0);
    const keys = await sql`select 1 from credit_idempotency_key where user_id = ${u.id}`;
    expect(keys).toHaveLength(0);
    expect(await sql`select 1 from "CreditHold" where user_id = ${u.id}`).toHaveLength(0);
    expect(await sql`select 1 from credit_hold_closing where user_id = ${u.id}`).toHaveLength(0);
  });

  it('drops old months by detaching their partition: DDL, not DELETE', async () => {
    const u = await createUser(db);
    await oldRow(u.id, '2026-10-20');
    await sql`alter table "CreditTransaction" detach partition "CreditTransaction_2026_10"`;
    await sql`drop table "CreditTransaction_2026_10"`;
    const left = await sql`select 1 from "CreditTransaction" where created_at < '2026-11-01'`;
    expect(left).toHaveLength(0);
  });
});

describe('credit holds on the partitioned table', () => {
  it('kept the holds taken before the change: the open one settles, the voided one stays closed', async () => {
    const { userId, open, voided } = holdsBefore;
    const claims = await sql`select hold_id from credit_hold_closing where user_id = ${userId}`;
    expect(claims.map((r) => r.hold_id)).toEqual([voided]);
    await expect(voidCreditHold(db, { holdId: voided })).rejects.toThrow(HoldAlreadyVoidedError);
    const settled = await settleCreditHold(db, { holdId: open, amount: 1 });
    expect(settled).toMatchObject({ balance: 9, replayed: false });
    expect(await sql`select 1 from "CreditHold" where user_id = ${userId}`).toHaveLength(0);
    expect(await trailViolations(userId)).toEqual([]);
  });

  it('holds, settles (in part, and a retry replays), voids, each closing claimed once', async () => {
    const u = await createUser(db);
    const hold = await holdCredits(db, { userId: u.id, amount: 5, featureType: doc });
    expect(hold.balance).toBe(5);
    expect((await getCreditBalance(db, u.id)).heldCredits).toBe(5);
    const settled = await settleCreditHold(db, { holdId: hold.holdId, amount: 2 });
    expect(settled).toMatchObject({ balance: 8, replayed: false });
    const retry = await settleCreditHold(db, { holdId: hold.holdId, amount: 2 });
    expect(retry).toMatchObject({ replayed: true, transaction: { id: settled.transaction.id } });
    await expect(voidCreditHold(db, { holdId: hold.holdId })).rejects.toThrow(
      HoldAlreadySettledError,
    );
    const other = await holdCredits(db, { userId: u.id, amount: 3, featureType: doc });
    const voided = await voidCreditHold(db, { holdId: other.holdId, reason: 'unused' });
    expect(voided.balance).toBe(8);
    const claims = await sql`
      select c.hold_id, c.transaction_id, t.operation from credit_hold_closing c
        join "CreditTransaction" t on t.id = c.transaction_id
       where c.user_id = ${u.id} order by t.seq`;
    expect(claims.map((r) => [r.hold_id, r.transaction_id, r.operation])).toEqual([
      [hold.holdId, settled.transaction.id, 'settle'],
      [other.holdId, voided.transaction.id, 'void'],
    ]);
    expect(await ledgerMismatches(db)).toEqual([]);
    expect(await trailViolations(u.id)).toEqual([]);
  });

  it('a hold of 1 s expires through expireCreditHolds, once', async () => {
    const u = await createUser(db);
    const hold = await holdCredits(db, {
      userId: u.id,
      amount: 4,
      featureType: doc,
      expiresInMs: 1_000,
    });
    await sleep(1_100);
    const { expired } = await expireCreditHolds(db, { userId: u.id });
    expect(expired.map((r) => [r.operation, r.holdId, r.amount])).toEqual([
      ['expire', hold.holdId, 4],
    ]);
    expect((await expireCreditHolds(db, { userId: u.id })).expired).toEqual([]);
    await expect(voidCreditHold(db, { holdId: hold.holdId })).rejects.toThrow(HoldExpiredError);
    const balance = await getCreditBalance(db, u.id);
    expect(balance).toMatchObject({ freeCredits: 10, heldCredits: 0 });
    expect(await sql`select 1 from "CreditHold" where user_id = ${u.id}`).toHaveLength(0);
    expect(await ledgerMismatches(db)).toEqual([]);
    expect(await trailViolations(u.id)).toEqual([]);
  });

  it('concurrent settlements, voids and sweeps of one hold: exactly one closes it', async () => {
    const u = await createUser(db);
    const hold = await holdCredits(db, { userId: u.id, amount: 5, featureType: doc });
    const results = await Promise.allSettled([
      ...[1, 2, 3, 4, 5].map((amount) => settleCreditHold(db, { holdId: hold.holdId, amount })),
      ...[1, 2, 3, 4, 5].map(() => voidCreditHold(db, { holdId: hold.holdId })),
      expireCreditHolds(db, { userId: u.id }),
    ]);
    const winners = results.flatMap((r, i) => (r.status === 'fulfilled' && i < 10 ? [i] : []));
    expect(winners).toHaveLength(1);
    // Every other call is told who won: a settlement (distinct amounts, so no replay) or a void.
    const lost = (winners[0] ?? 0) < 5 ? HoldAlreadySettledError : HoldAlreadyVoidedError;
    for (const r of results.slice(0, 10)) {
      if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(lost);
    }
    expect(results[10]).toMatchObject({ status: 'fulfilled', value: { expired: [] } });
    const closing = await sql`select 1 from "CreditTransaction" where hold_id = ${hold.holdId}`;
    expect(closing).toHaveLength(1);
    expect(
      await sql`select 1 from credit_hold_closing where hold_id = ${hold.holdId}`,
    ).toHaveLength(1);
    expect(await ledgerMismatches(db)).toEqual([]);
    expect(await trailViolations(u.id)).toEqual([]);
  });

  it('the claims table is the last word: a second closing is refused even with credit_tx_prepare off', async () => {
    const u = await createUser(db);
    const hold = await holdCredits(db, { userId: u.id, amount: 2, featureType: doc });
    const voided = await voidCreditHold(db, { holdId: hold.holdId });
    // A second void written as the ledger would number it, but with its checks skipped.
    const error = await refusalOf(
      sql.begin(async (tx) => {
        await tx`alter table "CreditTransaction" disable trigger credit_tx_prepare`;
        await tx`insert into "CreditTransaction" (user_id, amount, operation, feature_type, hold_id, balance_after, seq, hash)
                 values (${u.id}, 2, 'void', ${doc}, ${hold.holdId}, 12, ${Number(voided.transaction.seq) + 1}, 'x')`;
      }),
    );
    expect(error).toMatchObject({ code: '23505', constraint_name: 'credit_tx_hold_close_idx' });
    expect(await getCreditBalance(db, u.id)).toMatchObject({ freeCredits: 10 });
  });

  it('claims only what the trail records: a hand-made claim or key is refused', async () => {
    const u = await createUser(db);
    const hold = await holdCredits(db, { userId: u.id, amount: 2, featureType: doc });
    for (const statement of [
      sql`insert into credit_hold_closing (hold_id, user_id, transaction_id)
          values (${hold.holdId}, ${u.id}, ${hold.holdId})`,
      sql`insert into credit_idempotency_key (user_id, idempotency_key, transaction_id)
          values (${u.id}, 'never-used', ${hold.holdId})`,
    ]) {
      expect((await refusalOf(statement)).code).toBe('BC005');
    }
    expect((await voidCreditHold(db, { holdId: hold.holdId })).balance).toBe(10);
  });

  it("credit_tx_prepare's installed-ledger check holds on a partition: it passes, and fails when a trigger is off", async () => {
    const u = await createUser(db);
    const [row] =
      await sql`select tableoid::regclass::text as part from "CreditTransaction" where user_id = ${u.id} limit 1`;
    const partition = String(row?.part);
    for (const off of [
      `alter table ${partition} disable trigger credit_tx_no_truncate`,
      `alter table ${partition} disable trigger credit_tx_apply`,
      'alter table "CreditHold" disable trigger credit_hold_guard',
    ]) {
      const error = await refusalOf(
        sql.begin(async (tx) => {
          await tx.unsafe(off);
          await tx`insert into "CreditTransaction" (user_id, amount, operation, feature_type)
                   values (${u.id}, 1, 'grant', ${doc})`;
        }),
      );
      expect(error.code).toBe('BC009');
    }
    expect((await grantCredits(db, { userId: u.id, amount: 1, featureType: doc })).balance).toBe(
      11,
    );
  });
});

describe('what a partitioned table cannot do (the reasons for the DDL above)', () => {
  it('refuses a unique index on (user_id, idempotency_key) that lacks created_at', async () => {
    const error = await refusalOf(
      sql`create unique index nope on "CreditTransaction" (user_id, idempotency_key) where idempotency_key is not null`,
    );
    expect(error.message).toMatch(/must include all partitioning columns/);
  });

  it('refuses a unique index on hold_id alone (as credit_tx_hold_close_idx was)', async () => {
    const error = await refusalOf(
      sql`create unique index nope on "CreditTransaction" (hold_id) where hold_id is not null`,
    );
    expect(error.message).toMatch(/must include all partitioning columns/);
  });

  it('refuses a foreign key to its id alone (as refund_of and "CreditHold".id had)', async () => {
    const error = await refusalOf(
      sql`alter table "CreditHold" add foreign key (id) references "CreditTransaction"(id)`,
    );
    expect(error.code).toBe('42830');
  });

  it('refuses a foreign key to its id alone (as refund_of had)', async () => {
    const error = await refusalOf(
      sql`alter table "CreditTransaction" add foreign key (refund_of) references "CreditTransaction"(id)`,
    );
    expect(error.code).toBe('42830'); // invalid_foreign_key: no unique constraint on (id)
  });
});

describe('plans on the partitioned table, with 150,000 rows over 500 users', () => {
  let heavy: string;
  beforeAll(async () => {
    await sql`insert into "User" (email) select 'part-' || g || '@example.com' from generate_series(1, 500) g`;
    // Seeded with the ledger's triggers off: the plans, not the balances, are the point.
    await sql.begin(async (tx) => {
      await tx`alter table "CreditTransaction" disable trigger user`;
      await tx`
        with u as (select id, row_number() over (order by email) n from "User" where email like 'part-%')
        insert into "CreditTransaction" (user_id, amount, operation, feature_type, created_at, balance_after, seq, hash)
        select u.id, 1, 'grant', 'chat_tool_call', timestamptz '2026-11-01' + g * interval '35 seconds', 0, 100 + g, 'seed'
        from generate_series(1, 150000) g join u on u.n = 1 + (hashint4(g) & 2147483647) % 500`;
      await tx`alter table "CreditTransaction" enable trigger user`;
    });
    await sql`analyze "CreditTransaction"`;
    const [row] =
      await sql`select user_id from "CreditTransaction" group by 1 order by count(*) desc limit 1`;
    heavy = row?.user_id as string;
  }, 60_000);

  it("a user's history is served by each partition's (user_id, seq) index, no Seq Scan", async () => {
    const plan = await explainNodes(
      sql,
      userHistoryQuery(db, { operation: false, featureType: false, cursor: false }),
      {
        userId: heavy,
        limit: 51,
      },
    );
    expect(
      indexesUsed(plan).some((name) => name.includes('user_id_seq') || name.includes('user_seq')),
    ).toBe(true);
    expect(plan.filter((n) => n['Node Type'] === 'Seq Scan')).toEqual([]);
    const page = await listCreditTransactions(db, { userId: heavy, limit: 50 });
    expect(page.items).toHaveLength(50);
  });

  it('a one-hour range reads one partition only (pruning), by its created_at index', async () => {
    const plan = await explainNodes(sql, rangeQuery(db, { cursor: false }), {
      from: new Date('2026-11-15T10:00:00Z'),
      to: new Date('2026-11-15T11:00:00Z'),
      limit: 51,
    });
    const partitions = new Set(plan.map((n) => n['Relation Name']).filter(Boolean));
    expect([...partitions]).toEqual(['CreditTransaction_2026_11']);
    expect(seqScansOf(plan, 'CreditTransaction_2026_11')).toEqual([]);
    expect(indexesUsed(plan).length).toBeGreaterThan(0);
  });
});
