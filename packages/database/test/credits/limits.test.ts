import { sql } from 'drizzle-orm';
import postgres from 'postgres';
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Database } from '../../src/client.js';
import {
  DailyLimitExceededError,
  deductCredits,
  grantCredits,
  holdCredits,
  verifyLedger,
  voidCreditHold,
} from '../../src/credits/index.js';
import { refusalOf, useMigratedDatabase } from '../support.js';
import { createUser, PLAIN_FEATURE, trailSize } from './fixtures.js';

// Limits are data: a row of credit_ledger.credit_limit caps what a user takes for a feature
// in one UTC day, enforced under the user's lock by credit_rule_daily_limit. The trial's
// "5 document credits per UTC day" is the example; the table ships empty.

const handle = useMigratedDatabase();
const DOC = 'document_generation' as const;
let database: { db: Database; url: string };

beforeAll(async () => {
  database = { db: handle().db, url: handle().url };
  await database.db.execute(
    sql`insert into credit_ledger.credit_limit values ('document_generation', 'day', 5)`,
  );
});

// Each test's writes must fall in one UTC day: within 15 s of midnight by the server's
// clock, wait for the new day first (at most 15 s, on any date, whatever the machine's load).
beforeEach(async () => {
  await database.db.execute(sql`
    select pg_sleep(extract(epoch from (date_trunc('day', now(), 'UTC') + interval '24 hours' - clock_timestamp())) + 0.1)
     where date_trunc('day', now(), 'UTC') + interval '24 hours' - clock_timestamp() < interval '15 seconds'`);
});

describe('a daily limit of 5 document credits', () => {
  it('lets deductions and holds take up to 5 in the day, and refuses the one past it, writing nothing', async () => {
    const u = await createUser(database.db, { freeCredits: 100 });
    await deductCredits(database.db, { userId: u.id, amount: 3, featureType: DOC });
    await holdCredits(database.db, { userId: u.id, amount: 2, featureType: DOC });
    const before = await trailSize(database.db, u.id);
    const error = await deductCredits(database.db, {
      userId: u.id,
      amount: 1,
      featureType: DOC,
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DailyLimitExceededError);
    expect(error).toMatchObject({
      code: 'DAILY_LIMIT_EXCEEDED',
      featureType: DOC,
      limit: 5,
      used: 5,
      requested: 1,
    });
    // The room comes back at the next midnight UTC, whatever today is.
    const resetsAt = (error as DailyLimitExceededError).resetsAt;
    expect(resetsAt.getUTCHours()).toBe(0);
    expect(resetsAt.getTime()).toBeGreaterThan(Date.now() - 60_000);
    expect(resetsAt.getTime() - Date.now()).toBeLessThanOrEqual(86_400_000);
    expect(await trailSize(database.db, u.id)).toBe(before);
  });

  it('is per user: another user still has its 5', async () => {
    const a = await createUser(database.db, { freeCredits: 100 });
    const b = await createUser(database.db, { freeCredits: 100 });
    await deductCredits(database.db, { userId: a.id, amount: 5, featureType: DOC });
    await expect(
      deductCredits(database.db, { userId: b.id, amount: 5, featureType: DOC }),
    ).resolves.toMatchObject({
      balance: 95,
    });
  });

  it('leaves other features, grants and the balance rule alone', async () => {
    const u = await createUser(database.db, { freeCredits: 100 });
    await deductCredits(database.db, { userId: u.id, amount: 5, featureType: DOC });
    await expect(
      deductCredits(database.db, { userId: u.id, amount: 50, featureType: PLAIN_FEATURE }),
    ).resolves.toMatchObject({ balance: 45 });
    await expect(
      grantCredits(database.db, { userId: u.id, amount: 10, featureType: DOC }),
    ).resolves.toMatchObject({
      balance: 55,
    });
  });

  it('a voided hold still counts: what could have been charged today is what the limit bounds', async () => {
    const u = await createUser(database.db, { freeCredits: 100 });
    const hold = await holdCredits(database.db, { userId: u.id, amount: 5, featureType: DOC });
    await voidCreditHold(database.db, { holdId: hold.holdId });
    await expect(
      deductCredits(database.db, { userId: u.id, amount: 1, featureType: DOC }),
    ).rejects.toThrow(DailyLimitExceededError);
  });

  it('a retry of the keyed deduction that used the room up is a replay, not a refusal', async () => {
    const u = await createUser(database.db, { freeCredits: 100 });
    const first = await deductCredits(database.db, {
      userId: u.id,
      amount: 5,
      featureType: DOC,
      idempotencyKey: 'k',
    });
    const retry = await deductCredits(database.db, {
      userId: u.id,
      amount: 5,
      featureType: DOC,
      idempotencyKey: 'k',
    });
    expect(retry).toMatchObject({ replayed: true, transaction: { id: first.transaction.id } });
  });

  it('holds under concurrent deductions: 20 racing deductions of 1 take exactly 5', async () => {
    const u = await createUser(database.db, { freeCredits: 100 });
    const results = await Promise.allSettled(
      Array.from({ length: 20 }, () =>
        deductCredits(database.db, { userId: u.id, amount: 1, featureType: DOC }),
      ),
    );
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(5);
    const refused = results.filter((r) => r.status === 'rejected');
    expect(
      refused.every((r) => (r as PromiseRejectedResult).reason instanceof DailyLimitExceededError),
    ).toBe(true);
    expect((await verifyLedger(database.db, { userId: u.id })).violations).toEqual([]);
  });

  it('is counted in UTC days whatever the session TimeZone', async () => {
    const u = await createUser(database.db, { freeCredits: 100 });
    const session = postgres(database.url, { max: 1, onnotice: () => {} });
    try {
      // A zone 14 hours ahead: its "today" began up to 14 hours before UTC's.
      await session`set timezone = 'Pacific/Kiritimati'`;
      await session`insert into "CreditTransaction" (user_id, amount, operation, feature_type)
                    values (${u.id}, 5, 'deduct', ${DOC})`;
      const refusal = await refusalOf(
        session`insert into "CreditTransaction" (user_id, amount, operation, feature_type)
                values (${u.id}, 1, 'deduct', ${DOC})`,
      );
      expect(refusal.code).toBe('BC020');
    } finally {
      await session.end();
    }
  });

  it("cannot be changed by a role other than the owner, even with ALL on the app's tables: the limits are the owner's, in a migration", async () => {
    const role = `bragdoc_limits_${Math.random().toString(16).slice(2, 10)}`;
    const session = postgres(database.url, { max: 1, onnotice: () => {} });
    try {
      await session.unsafe(
        `create role ${role}; grant all on all tables in schema public to ${role}; grant usage on schema credit_ledger to ${role}`,
      );
      const refusal = await refusalOf(
        session.begin(async (tx) => {
          await tx.unsafe(`set local role ${role}`);
          await tx.unsafe('update credit_ledger.credit_limit set max_amount = 1000000');
        }),
      );
      expect(refusal.code).toBe('42501');
    } finally {
      await session.unsafe(`drop owned by ${role}; drop role ${role}`);
      await session.end();
    }
  });
});
