import { sql } from 'drizzle-orm';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/client.js';
import {
  deductCredits,
  getCreditBalance,
  grantCredits,
  setUserPlan,
  verifyLedger,
} from '../../src/credits/index.js';
import { rowsOf } from '../../src/credits/prepared.js';
import { useMigratedDatabase } from '../support.js';
import { createUser } from './fixtures.js';

// Allowances are plan data: `monthly` grants 10 credits and 5 chat messages a UTC month;
// `tick` grants 3 credits a second, a period short enough for a test to cross its boundaries
// on the server's own clock (nothing moves the ledger's time).

const handle = useMigratedDatabase();
let db: Database;
const doc = 'document_generation' as const;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

beforeAll(async () => {
  db = handle().db;
  await db.execute(sql`
    insert into credit_ledger.credit_plan (plan, allowance_credits, allowance_chat_messages, allowance_period)
    values ('monthly', 10, 5, 'month'), ('tick', 3, null, 'second')`);
});

/** The user's allowance grants: amount, the period they are for, and when they expire. */
async function allowances(userId: string) {
  return rowsOf<{ amount: number; chat: boolean; starts: string; expires: string }>(
    await db.execute(sql`
      select amount, feature_type = 'chat_message' as chat, metadata #>> '{allowance,starts}' as starts,
             to_char(grant_expires_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') as expires
        from "CreditTransaction" where user_id = ${userId} and source = 'allowance' order by seq`),
  );
}

describe('allowances', () => {
  it("are granted at the user's first write of the period, expiring at the period's end, once", async () => {
    const u = await createUser(db, { freeCredits: 0, freeChatMessages: 0 });
    await setUserPlan(db, { userId: u.id, plan: 'monthly' });
    const use = await deductCredits(db, { userId: u.id, amount: 4, featureType: doc });
    expect(use.balance).toBe(6);
    await deductCredits(db, { userId: u.id, amount: 1, featureType: 'chat_message' });
    await deductCredits(db, { userId: u.id, amount: 1, featureType: doc });
    const granted = await allowances(u.id);
    expect(granted.map((g) => [g.amount, g.chat])).toEqual([
      [10, false],
      [5, true],
    ]);
    // For this UTC month, expiring when the next one starts, whatever today is.
    const [credits] = granted;
    expect(credits?.starts).toMatch(/^\d{4}-\d{2}-01T00:00:00Z$/);
    expect(credits?.expires).toMatch(/^\d{4}-\d{2}-01T00:00:00Z$/);
    expect(new Date(credits?.expires ?? '').getTime()).toBeGreaterThan(Date.now() - 60_000);
    expect((await verifyLedger(db, { userId: u.id })).violations).toEqual([]);
  });

  it('are granted by a balance read too, and a read-only one reports the balance without them', async () => {
    const u = await createUser(db, { freeCredits: 0, freeChatMessages: 0 });
    await setUserPlan(db, { userId: u.id, plan: 'monthly' });
    const replica = await db.transaction((tx) => getCreditBalance(tx, u.id), {
      accessMode: 'read only',
    });
    expect(replica).toMatchObject({ freeCredits: 0, freeChatMessages: 0, grants: [] });
    const balance = await getCreditBalance(db, u.id);
    expect(balance).toMatchObject({ freeCredits: 10, freeChatMessages: 5 });
    expect(balance.grants.map((g) => g.source)).toEqual(['allowance', 'allowance']);
    expect(await allowances(u.id)).toHaveLength(2);
  });

  it('do not roll over: each period the last one expires and the new one is granted, purchases untouched', async () => {
    const u = await createUser(db, { freeCredits: 0, freeChatMessages: 0 });
    await grantCredits(db, { userId: u.id, amount: 20, source: 'purchase' });
    await setUserPlan(db, { userId: u.id, plan: 'tick' });
    await deductCredits(db, { userId: u.id, amount: 1, featureType: doc });
    await sleep(1100);
    await deductCredits(db, { userId: u.id, amount: 1, featureType: doc });
    await sleep(1100);
    const balance = await getCreditBalance(db, u.id);
    const granted = await allowances(u.id);
    // One grant per period that saw a write or a read, never two for one period.
    expect(granted.length).toBeGreaterThanOrEqual(3);
    expect(new Set(granted.map((g) => g.starts)).size).toBe(granted.length);
    // Each deduction took from the allowance (it expires first), never from the purchase.
    const purchase = balance.grants.find((g) => g.source === 'purchase');
    expect(purchase?.remaining).toBe(20);
    expect(balance.freeCredits).toBe(20 + 3);
    const [expired] = rowsOf<{ n: number; total: number }>(
      await db.execute(sql`
        select count(*)::int as n, sum(amount)::int as total from "CreditTransaction"
         where user_id = ${u.id} and operation = 'expire_grant'`),
    );
    expect(expired?.n).toBe(granted.length - 1);
    expect(expired?.total).toBe((granted.length - 1) * 3 - 2);
    expect((await verifyLedger(db, { userId: u.id })).violations).toEqual([]);
  });

  it('are granted once per period under concurrent writes and reads', async () => {
    const u = await createUser(db, { freeCredits: 0, freeChatMessages: 0 });
    await setUserPlan(db, { userId: u.id, plan: 'monthly' });
    await Promise.all([
      ...Array.from({ length: 6 }, () => getCreditBalance(db, u.id)),
      ...Array.from({ length: 6 }, () =>
        deductCredits(db, { userId: u.id, amount: 1, featureType: doc }).catch(() => undefined),
      ),
    ]);
    expect(await allowances(u.id)).toHaveLength(2);
    expect((await verifyLedger(db, { userId: u.id })).violations).toEqual([]);
  });

  it('grant what fits below the largest balance, so a full balance never locks its user out', async () => {
    const u = await createUser(db, { freeCredits: 2_147_483_640, freeChatMessages: 0 });
    await setUserPlan(db, { userId: u.id, plan: 'monthly' });
    const use = await deductCredits(db, { userId: u.id, amount: 1, featureType: doc });
    // 7 of the 10 fitted, then 1 was spent; the chat messages fitted whole.
    expect(use.balance).toBe(2_147_483_646);
    expect((await allowances(u.id)).map((g) => g.amount)).toEqual([7, 5]);
    expect((await getCreditBalance(db, u.id)).freeCredits).toBe(2_147_483_646);
    expect((await verifyLedger(db, { userId: u.id })).violations).toEqual([]);
  });

  it('follow the plan: a plan without one grants none', async () => {
    const u = await createUser(db);
    await deductCredits(db, { userId: u.id, amount: 1, featureType: doc });
    await getCreditBalance(db, u.id);
    expect(await allowances(u.id)).toEqual([]);
  });
});
