import { createTestDatabase } from '@bragdoc/test-postgres';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type Database } from '../../src/client.js';
import {
  type CreditUsageRow,
  deductCredits,
  getCreditUsage,
  grantCredits,
  holdCredits,
  InvalidInputError,
  refundCredits,
  settleCreditHold,
  setUserPlan,
  voidCreditHold,
} from '../../src/credits/index.js';
import { createUser } from './fixtures.js';

let db: Database;
let close: () => Promise<void>;
beforeAll(async () => {
  ({ db, close } = await createTestDatabase({
    connect: (url) => createDatabase(url, { max: 4 }),
  }));
});
afterAll(() => close());

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const doc = 'document_generation' as const;
const HOUR = 3_600_000;
/** From an hour ago to an hour ahead: today's rows, on any date and in any time zone. */
const around = () => ({ from: new Date(Date.now() - HOUR), to: new Date(Date.now() + HOUR) });

/** The rows of one feature, summed over the days (a run near midnight UTC spans two). */
function total(rows: Awaited<ReturnType<typeof getCreditUsage>>, featureType: string) {
  const sum = { spent: 0, covered: 0, granted: 0, refunded: 0, expired: 0 };
  for (const r of rows.filter((x) => x.featureType === featureType))
    for (const k of Object.keys(sum) as (keyof typeof sum)[]) sum[k] += r[k];
  return sum;
}

describe('getCreditUsage', () => {
  it("counts what was spent per feature, net of refunds, a hold's charge only, and never a grant", async () => {
    const u = await createUser(db);
    await grantCredits(db, { userId: u.id, amount: 50, source: 'purchase' });
    const use = await deductCredits(db, { userId: u.id, amount: 6, featureType: doc });
    await refundCredits(db, {
      userId: u.id,
      amount: 2,
      featureType: doc,
      refundOf: use.transaction.id,
    });
    const settled = await holdCredits(db, { userId: u.id, amount: 9, featureType: doc });
    await settleCreditHold(db, { holdId: settled.holdId, amount: 4 });
    const voided = await holdCredits(db, {
      userId: u.id,
      amount: 7,
      featureType: 'chat_tool_call',
    });
    await voidCreditHold(db, { holdId: voided.holdId });
    await deductCredits(db, { userId: u.id, amount: 3, featureType: 'chat_message' });
    const rows = await getCreditUsage(db, { ...around(), userId: u.id });
    expect(total(rows, doc)).toEqual({ spent: 8, covered: 0, granted: 0, refunded: 2, expired: 0 });
    expect(total(rows, 'chat_tool_call')).toEqual({
      spent: 0,
      covered: 0,
      granted: 0,
      refunded: 0,
      expired: 0,
    });
    expect(total(rows, 'chat_message')).toMatchObject({ spent: 3, granted: 20 });
    // Grants of credits are for no feature: the opening 10 and the pack.
    expect(total(rows, 'none')).toMatchObject({ spent: 0, granted: 60 });
    for (const r of rows) expect(r.day).toMatch(/^\d{4}-\d{2}-\d{2}$/);
  });

  it('counts what unlimited plans covered apart from what was spent', async () => {
    const u = await createUser(db);
    await setUserPlan(db, { userId: u.id, plan: 'paid' });
    await deductCredits(db, { userId: u.id, amount: 5, featureType: doc });
    const hold = await holdCredits(db, { userId: u.id, amount: 8, featureType: doc });
    await settleCreditHold(db, { holdId: hold.holdId, amount: 6 });
    const rows = await getCreditUsage(db, { ...around(), userId: u.id, featureType: doc });
    expect(total(rows, doc)).toEqual({
      spent: 0,
      covered: 11,
      granted: 0,
      refunded: 0,
      expired: 0,
    });
  });

  it('counts expired credits, for no feature', async () => {
    const u = await createUser(db);
    await grantCredits(db, { userId: u.id, amount: 4, expiresAt: new Date(Date.now() + 500) });
    await sleep(700);
    await deductCredits(db, { userId: u.id, amount: 1, featureType: doc });
    const rows = await getCreditUsage(db, { ...around(), userId: u.id });
    expect(total(rows, 'none')).toMatchObject({ granted: 14, expired: 4 });
  });

  it('for all users, adds up every user of the range, and nothing outside it', async () => {
    const [a, b] = [await createUser(db), await createUser(db)];
    const before = await getCreditUsage(db, { ...around(), featureType: 'workstream_clustering' });
    await deductCredits(db, { userId: a.id, amount: 2, featureType: 'workstream_clustering' });
    await deductCredits(db, { userId: b.id, amount: 3, featureType: 'workstream_clustering' });
    const after = await getCreditUsage(db, { ...around(), featureType: 'workstream_clustering' });
    expect(
      total(after, 'workstream_clustering').spent - total(before, 'workstream_clustering').spent,
    ).toBe(5);
    const past = await getCreditUsage(db, {
      from: new Date('2000-01-01T00:00:00Z'),
      to: new Date('2000-02-01T00:00:00Z'),
    });
    expect(past).toEqual([]);
  });

  it('puts a row on its UTC day, whatever the session TimeZone', async () => {
    const u = await createUser(db);
    await db.transaction(async (tx) => {
      await tx.execute(sql`set local time zone 'Pacific/Kiritimati'`);
      await deductCredits(tx, { userId: u.id, amount: 1, featureType: doc });
      const rows = await getCreditUsage(tx, { ...around(), userId: u.id, featureType: doc });
      const [utcDay] = (await tx.execute(
        sql`select to_char(created_at at time zone 'UTC', 'YYYY-MM-DD') as day from "CreditTransaction"
             where user_id = ${u.id} and operation = 'deduct'`,
      )) as unknown as { day: string }[];
      expect(rows.map((r) => r.day)).toEqual([utcDay?.day]);
    });
  });

  it("leaves a caller's transaction with the settings it had", async () => {
    await db.transaction(async (tx) => {
      await tx.execute(sql`set local jit = on`);
      await getCreditUsage(tx, around());
      const [row] = (await tx.execute(sql`select current_setting('jit') as jit`)) as unknown as {
        jit: string;
      }[];
      expect(row?.jit).toBe('on');
    });
  });

  it('for all users, sums whole past days once and reads the same figures as the trail gives per user', async () => {
    const users = [await createUser(db), await createUser(db), await createUser(db)];
    // Rows of ten past days (written with the ledger's triggers off: only their dates matter).
    await db.transaction(async (tx) => {
      await tx.execute(sql`alter table "CreditTransaction" disable trigger user`);
      await tx.execute(sql`
        insert into "CreditTransaction" (user_id, amount, operation, feature_type, created_at, balance_after, seq, hash, covered_by_plan)
        select (array[${users[0]?.id}::uuid, ${users[1]?.id}::uuid, ${users[2]?.id}::uuid])[1 + g % 3],
               1 + g % 4, (array['deduct', 'refund', 'grant', 'settle', 'expire_grant', 'deduct'])[1 + g % 6]::operation_type,
               (array['document_generation', 'chat_message', 'none'])[1 + g % 3]::feature_type,
               timestamptz '2001-03-01 00:00:00+00' + g * interval '37 minutes', 0, 1000 + g, 'x',
               case when g % 5 = 0 then 'paid' end
          from generate_series(1, 380) g`);
      await tx.execute(sql`alter table "CreditTransaction" enable trigger user`);
    });
    const range = { from: new Date('2001-03-01T06:00:00Z'), to: new Date('2001-03-09T18:00:00Z') };
    const all = await getCreditUsage(db, range);
    const done = (await db.execute(sql`
      select count(*)::int as n from credit_ledger.credit_usage_day_done
       where day between '2001-03-02' and '2001-03-08'`)) as unknown as { n: number }[];
    expect(done[0]?.n).toBe(7);
    const perUser = new Map<string, CreditUsageRow>();
    for (const u of users)
      for (const r of await getCreditUsage(db, { ...range, userId: u.id })) {
        const key = `${r.day} ${r.featureType}`;
        const sum = perUser.get(key) ?? {
          ...r,
          spent: 0,
          covered: 0,
          granted: 0,
          refunded: 0,
          expired: 0,
        };
        for (const k of ['spent', 'covered', 'granted', 'refunded', 'expired'] as const)
          sum[k] += r[k];
        perUser.set(key, sum);
      }
    const ofAll = all.filter((r) => r.day.startsWith('2001-03'));
    expect(ofAll).toEqual(
      [...perUser.values()].sort((a, b) =>
        (a.day + a.featureType).localeCompare(b.day + b.featureType),
      ),
    );
    expect(ofAll.length).toBeGreaterThan(20);
    // Again, from the summaries; and on a read-only connection, which cannot sum.
    expect((await getCreditUsage(db, range)).filter((r) => r.day.startsWith('2001-03'))).toEqual(
      ofAll,
    );
    const readOnly = await db.transaction((tx) => getCreditUsage(tx, range), {
      accessMode: 'read only',
    });
    expect(readOnly.filter((r) => r.day.startsWith('2001-03'))).toEqual(ofAll);
    const docOnly = await getCreditUsage(db, { ...range, featureType: 'document_generation' });
    expect(docOnly).toEqual(ofAll.filter((r) => r.featureType === 'document_generation'));
  });

  it('refuses a range that ends before it starts, or a date that is not one', async () => {
    await expect(
      getCreditUsage(db, { from: new Date(Date.now()), to: new Date(Date.now() - 1000) }),
    ).rejects.toBeInstanceOf(InvalidInputError);
    await expect(
      getCreditUsage(db, { from: new Date(Number.NaN), to: new Date() }),
    ).rejects.toMatchObject({ code: 'INVALID_INPUT', field: 'from' });
  });
});
