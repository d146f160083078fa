import { sql } from 'drizzle-orm';
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Database } from '../../src/client.js';
import {
  CapExceededError,
  DailyLimitExceededError,
  deductCredits,
  holdCredits,
  setUserPlan,
  verifyLedger,
} from '../../src/credits/index.js';
import { useMigratedDatabase } from '../support.js';
import { createUser, trailSize } from './fixtures.js';

// Caps per plan, feature and period, as rows of credit_ledger.credit_limit: the free plan may
// use 4 workstream clusterings a month, every plan 6 chat tool calls a week (covered uses
// count too), and the paid plan 2 document generations a day.

const handle = useMigratedDatabase();
let db: Database;

beforeAll(async () => {
  db = handle().db;
  await db.execute(sql`
    insert into credit_ledger.credit_limit (feature_type, period, max_amount, plan) values
      ('workstream_clustering', 'month', 4, 'free'),
      ('chat_tool_call', 'week', 6, null),
      ('document_generation', 'day', 2, 'paid')`);
});

// Each test's writes must fall in one UTC day (and so one week and month): within 15 s of
// midnight by the server's clock, wait for the next day first.
beforeEach(async () => {
  await db.execute(sql`
    select pg_sleep(extract(epoch from (date_trunc('day', now(), 'UTC') + interval '24 hours' - clock_timestamp())) + 0.1)
     where date_trunc('day', now(), 'UTC') + interval '24 hours' - clock_timestamp() < interval '15 seconds'`);
});

const refusal = (promise: Promise<unknown>) =>
  promise.then(
    () => null,
    (e: unknown) => e,
  );

describe('caps per plan, feature and period', () => {
  it("a free user's monthly cap refuses the use past it, says the plan and when the month ends, and writes nothing", async () => {
    const u = await createUser(db, { freeCredits: 100 });
    for (let i = 0; i < 4; i++)
      await deductCredits(db, { userId: u.id, amount: 1, featureType: 'workstream_clustering' });
    const before = await trailSize(db, u.id);
    const error = await refusal(
      deductCredits(db, { userId: u.id, amount: 1, featureType: 'workstream_clustering' }),
    );
    expect(error).toBeInstanceOf(CapExceededError);
    expect(error).not.toBeInstanceOf(DailyLimitExceededError);
    expect(error).toMatchObject({
      code: 'CAP_EXCEEDED',
      period: 'month',
      plan: 'free',
      limit: 4,
      used: 4,
    });
    const resetsAt = (error as CapExceededError).resetsAt;
    expect([resetsAt.getUTCDate(), resetsAt.getUTCHours(), resetsAt.getUTCMinutes()]).toEqual([
      1, 0, 0,
    ]);
    expect(resetsAt.getTime()).toBeGreaterThan(Date.now() - 60_000);
    expect(resetsAt.getTime() - Date.now()).toBeLessThanOrEqual(31 * 86_400_000);
    expect(await trailSize(db, u.id)).toBe(before);
  });

  it("another plan's cap does not apply: a paid user is not held to the free plan's month", async () => {
    const u = await createUser(db);
    await setUserPlan(db, { userId: u.id, plan: 'paid' });
    for (let i = 0; i < 6; i++)
      await deductCredits(db, { userId: u.id, amount: 1, featureType: 'workstream_clustering' });
    expect((await verifyLedger(db, { userId: u.id })).ok).toBe(true);
  });

  it('a cap for every plan holds an unlimited plan too, counting covered uses, and resets on a Monday', async () => {
    const u = await createUser(db);
    await setUserPlan(db, { userId: u.id, plan: 'demo' });
    await holdCredits(db, { userId: u.id, amount: 4, featureType: 'chat_tool_call' });
    await deductCredits(db, { userId: u.id, amount: 2, featureType: 'chat_tool_call' });
    const error = await refusal(
      deductCredits(db, { userId: u.id, amount: 1, featureType: 'chat_tool_call' }),
    );
    expect(error).toMatchObject({ code: 'CAP_EXCEEDED', period: 'week', plan: null, used: 6 });
    const resetsAt = (error as CapExceededError).resetsAt;
    expect([resetsAt.getUTCDay(), resetsAt.getUTCHours()]).toEqual([1, 0]);
  });

  it("a plan's daily cap applies from the moment the user is on it, as DAILY_LIMIT_EXCEEDED", async () => {
    const u = await createUser(db, { freeCredits: 50 });
    for (let i = 0; i < 3; i++)
      await deductCredits(db, { userId: u.id, amount: 1, featureType: 'document_generation' });
    await setUserPlan(db, { userId: u.id, plan: 'paid' });
    // Today's 3 metered uses count against the paid plan's 2 a day from now on.
    const error = await refusal(
      deductCredits(db, { userId: u.id, amount: 1, featureType: 'document_generation' }),
    );
    expect(error).toBeInstanceOf(DailyLimitExceededError);
    expect(error).toMatchObject({
      code: 'DAILY_LIMIT_EXCEEDED',
      period: 'day',
      plan: 'paid',
      used: 3,
    });
  });
});
