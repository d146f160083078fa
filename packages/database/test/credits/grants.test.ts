import { createTestDatabase } from '@bragdoc/test-postgres';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type Database } from '../../src/client.js';
import {
  deductCredits,
  expireCreditGrants,
  getCreditBalance,
  grantCredits,
  holdCredits,
  InsufficientCreditsError,
  refundCredits,
  settleCreditHold,
  verifyLedger,
  voidCreditHold,
} from '../../src/credits/index.js';
import { rowsOf } from '../../src/credits/prepared.js';
import { runScript } from '../run-script.js';
import { balances, createUser, ledgerMismatches } from './fixtures.js';

let db: Database;
let close: () => Promise<void>;
let databaseUrl = '';
beforeAll(async () => {
  const database = await createTestDatabase({
    connect: (url) => createDatabase(url, { max: 6 }),
  });
  ({ db, close } = database);
  databaseUrl = database.url;
});
afterAll(() => close());

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const doc = 'document_generation' as const;
const inMs = (ms: number) => new Date(Date.now() + ms);

async function expectVerified(userId: string) {
  expect((await verifyLedger(db, { userId })).violations).toEqual([]);
  expect(await ledgerMismatches(db)).toEqual([]);
}

/** The user's trail after its opening rows: operation, amount, balance after, source. */
async function story(userId: string) {
  return rowsOf<{
    operation: string;
    amount: number;
    balance_after: number;
    source: string | null;
  }>(
    await db.execute(sql`
      select operation::text, amount, balance_after, source::text from "CreditTransaction"
       where user_id = ${userId} and metadata is distinct from '{"reason": "opening_balance"}'
       order by seq`),
  );
}

/** What each of the user's grants has left, by source, oldest first. */
async function remaining(userId: string) {
  return rowsOf<{ source: string; remaining: number }>(
    await db.execute(sql`
      select source::text, remaining from credit_ledger.credit_grant
       where user_id = ${userId} and not chat order by created_seq`),
  );
}

describe('credit grants with a source and an expiry', () => {
  it('a new user has its opening balances as two grants that never expire, for no feature', async () => {
    const u = await createUser(db);
    const { grants } = await getCreditBalance(db, u.id);
    expect(grants.map((g) => [g.balance, g.source, g.amount, g.remaining, g.expiresAt])).toEqual([
      ['free_credits', 'opening', 10, 10, null],
      ['free_chat_messages', 'opening', 20, 20, null],
    ]);
    const [opening] = rowsOf<{ feature_type: string }>(
      await db.execute(
        sql`select feature_type::text from "CreditTransaction" where user_id = ${u.id} and seq = 1`,
      ),
    );
    expect(opening?.feature_type).toBe('none');
  });

  it('a grant of credits needs no feature and says where it came from (promotional when unsaid)', async () => {
    const u = await createUser(db);
    const bought = await grantCredits(db, { userId: u.id, amount: 50, source: 'purchase' });
    expect(bought.transaction).toMatchObject({
      featureType: 'none',
      source: 'purchase',
      grantExpiresAt: null,
    });
    const plain = await grantCredits(db, { userId: u.id, amount: 5, featureType: doc });
    expect(plain.transaction).toMatchObject({ featureType: doc, source: 'promotional' });
    const chats = await grantCredits(db, {
      userId: u.id,
      amount: 7,
      featureType: 'chat_message',
      source: 'support',
    });
    expect(chats).toMatchObject({ balance: 27, transaction: { source: 'support' } });
    await expectVerified(u.id);
  });

  it('a purchased pack that never expires is spent after the expiring promotional credits', async () => {
    const u = await createUser(db, { freeCredits: 0 });
    const pack = await grantCredits(db, { userId: u.id, amount: 100, source: 'purchase' });
    const promo = await grantCredits(db, {
      userId: u.id,
      amount: 10,
      source: 'promotional',
      expiresAt: inMs(60 * 60_000),
    });
    const sooner = await grantCredits(db, {
      userId: u.id,
      amount: 4,
      source: 'promotional',
      expiresAt: inMs(30 * 60_000),
    });
    const spent = await deductCredits(db, { userId: u.id, amount: 12, featureType: doc });
    // The soonest-expiring first, then the next; the pack is untouched.
    expect(spent.transaction.allocations).toEqual({
      [sooner.transaction.id]: 4,
      [promo.transaction.id]: 8,
    });
    const more = await deductCredits(db, { userId: u.id, amount: 5, featureType: doc });
    expect(more.transaction.allocations).toEqual({
      [promo.transaction.id]: 2,
      [pack.transaction.id]: 3,
    });
    expect(await remaining(u.id)).toEqual([
      { source: 'purchase', remaining: 97 },
      { source: 'promotional', remaining: 0 },
      { source: 'promotional', remaining: 0 },
    ]);
    await expectVerified(u.id);
  });

  it('a support grant that expires comes off the balance once, with its own row, when it is due', async () => {
    const u = await createUser(db);
    await grantCredits(db, {
      userId: u.id,
      amount: 6,
      source: 'support',
      expiresAt: inMs(1000),
      actor: 'support@example.com',
    });
    await deductCredits(db, { userId: u.id, amount: 2, featureType: doc });
    expect((await balances(db, u.id))?.freeCredits).toBe(14);
    await sleep(1200);
    // Read-only: computed, not written.
    const readOnly = await db.transaction((tx) => getCreditBalance(tx, u.id), {
      accessMode: 'read only',
    });
    expect(readOnly.freeCredits).toBe(10);
    expect(readOnly.grants.map((g) => g.source)).toEqual(['opening', 'opening']);
    expect((await story(u.id)).map((r) => r.operation)).toEqual(['grant', 'deduct']);
    // A read that can write takes it off, once.
    expect((await getCreditBalance(db, u.id)).freeCredits).toBe(10);
    expect((await getCreditBalance(db, u.id)).freeCredits).toBe(10);
    expect(await story(u.id)).toEqual([
      { operation: 'grant', amount: 6, balance_after: 16, source: 'support' },
      { operation: 'deduct', amount: 2, balance_after: 14, source: null },
      { operation: 'expire_grant', amount: 4, balance_after: 10, source: null },
    ]);
    await expectVerified(u.id);
  });

  it('a deduction after a grant expired never spends it: the expiry comes first, under the lock', async () => {
    const u = await createUser(db, { freeCredits: 0 });
    await grantCredits(db, { userId: u.id, amount: 5, expiresAt: inMs(800) });
    await sleep(1000);
    await expect(
      deductCredits(db, { userId: u.id, amount: 1, featureType: doc }),
    ).rejects.toBeInstanceOf(InsufficientCreditsError);
    // The refused deduction wrote nothing, its expiry included; the next write expires it.
    expect((await story(u.id)).map((r) => r.operation)).toEqual(['grant']);
    await grantCredits(db, { userId: u.id, amount: 1 });
    expect((await story(u.id)).map((r) => r.operation)).toEqual(['grant', 'expire_grant', 'grant']);
    await expectVerified(u.id);
  });

  it('a refund after its grant expired gives the credits back and takes them off again at once', async () => {
    const u = await createUser(db);
    await grantCredits(db, {
      userId: u.id,
      amount: 3,
      source: 'promotional',
      expiresAt: inMs(1000),
    });
    const use = await deductCredits(db, { userId: u.id, amount: 5, featureType: doc });
    // 3 from the promotion (expiring), 2 from the opening grant.
    expect(Object.values(use.transaction.allocations ?? {}).sort()).toEqual([2, 3]);
    await sleep(1200);
    const refund = await refundCredits(db, {
      userId: u.id,
      amount: 5,
      featureType: doc,
      refundOf: use.transaction.id,
    });
    expect(refund.balance).toBe(13);
    expect((await story(u.id)).slice(-2)).toEqual([
      { operation: 'refund', amount: 5, balance_after: 13, source: null },
      { operation: 'expire_grant', amount: 3, balance_after: 10, source: null },
    ]);
    expect((await balances(db, u.id))?.freeCredits).toBe(10);
    await expectVerified(u.id);
  });

  it('a refund without refundOf is a grant of its own, source refund, that never expires', async () => {
    const u = await createUser(db);
    const refund = await refundCredits(db, { userId: u.id, amount: 4, featureType: doc });
    expect(refund.transaction).toMatchObject({ source: 'refund', allocations: null });
    expect(await remaining(u.id)).toEqual([
      { source: 'opening', remaining: 10 },
      { source: 'refund', remaining: 4 },
    ]);
    await expectVerified(u.id);
  });

  it('a hold takes from the grants; a settlement gives back to the latest-expiring first, a void all', async () => {
    const u = await createUser(db, { freeCredits: 0 });
    await grantCredits(db, { userId: u.id, amount: 10, source: 'purchase' });
    const promo = await grantCredits(db, { userId: u.id, amount: 4, expiresAt: inMs(3_600_000) });
    const hold = await holdCredits(db, { userId: u.id, amount: 8, featureType: doc });
    expect(Object.values(hold.transaction.allocations ?? {}).sort()).toEqual([4, 4]);
    const settled = await settleCreditHold(db, { holdId: hold.holdId, amount: 3 });
    // The 3 charged stay on the promotion, the soonest to expire; 1 of it and 4 of the pack come back.
    expect(settled.transaction.allocations?.[promo.transaction.id]).toBe(1);
    expect(await remaining(u.id)).toEqual([
      { source: 'purchase', remaining: 10 },
      { source: 'promotional', remaining: 1 },
    ]);
    const other = await holdCredits(db, { userId: u.id, amount: 11, featureType: doc });
    await voidCreditHold(db, { holdId: other.holdId });
    expect(await remaining(u.id)).toEqual([
      { source: 'purchase', remaining: 10 },
      { source: 'promotional', remaining: 1 },
    ]);
    await expectVerified(u.id);
  });

  it('the sweeper expires the due grants of users who are not active', async () => {
    const users = [await createUser(db), await createUser(db)];
    for (const u of users)
      await grantCredits(db, {
        userId: u.id,
        amount: 2,
        source: 'promotional',
        expiresAt: inMs(500),
      });
    await sleep(700);
    const { expired } = await expireCreditGrants(db, { limit: 1000 });
    expect(expired.filter((r) => users.some((u) => u.id === r.userId))).toHaveLength(2);
    expect((await expireCreditGrants(db, { limit: 1000 })).expired).toEqual([]);
    for (const u of users) await expectVerified(u.id);
  });

  it('pnpm credits:expire-holds takes off due grants too, and prints each and a summary', async () => {
    const u = await createUser(db);
    const g = await grantCredits(db, { userId: u.id, amount: 3, expiresAt: inMs(500) });
    await sleep(700);
    const result = await runScript('scripts/credits-expire-holds.ts', [], {
      env: { DATABASE_URL: databaseUrl },
    });
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(
      `expired grant ${g.transaction.id} of user ${u.id}: 3 credits taken off`,
    );
    expect(result.stdout).toMatch(
      /credits:expire-holds: .+: expired \d+ grants? \(\d+ credits and \d+ chat messages taken off\) in \d+ ms\./,
    );
    expect((await balances(db, u.id))?.freeCredits).toBe(10);
    await expectVerified(u.id);
  });

  it('refuses an expiry in the past, a source the ledger sets, and chat messages granted as credits', async () => {
    const u = await createUser(db);
    await expect(
      grantCredits(db, { userId: u.id, amount: 1, expiresAt: new Date(Date.now() - 1000) }),
    ).rejects.toMatchObject({ code: 'INVALID_INPUT', field: 'expiresAt' });
    await expect(
      grantCredits(db, { userId: u.id, amount: 1, source: 'opening' as 'purchase' }),
    ).rejects.toMatchObject({ code: 'INVALID_INPUT', field: 'source' });
    expect(await story(u.id)).toEqual([]);
  });
});
