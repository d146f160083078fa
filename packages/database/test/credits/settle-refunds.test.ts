import { createTestDatabase } from '@bragdoc/test-postgres';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type Database } from '../../src/client.js';
import {
  getCreditUsage,
  grantCredits,
  holdCredits,
  InvalidRefundTargetError,
  RefundExceedsDeductionError,
  refundCredits,
  settleCreditHold,
  setUserPlan,
  verifyLedger,
  voidCreditHold,
  withCreditReservation,
} from '../../src/credits/index.js';
import { rowsOf } from '../../src/credits/prepared.js';
import { balances, createUser, ledgerMismatches, trailSize } from './fixtures.js';

let db: Database;
let close: () => Promise<void>;
beforeAll(async () => {
  ({ db, close } = await createTestDatabase({
    connect: (url) => createDatabase(url, { max: 4 }),
  }));
});
afterAll(() => close());

const doc = 'document_generation' as const;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const inMs = (ms: number) => new Date(Date.now() + ms);

async function expectVerified(userId: string) {
  expect((await verifyLedger(db, { userId })).violations).toEqual([]);
  expect(await ledgerMismatches(db)).toEqual([]);
}

async function remaining(userId: string) {
  return rowsOf<{ source: string; remaining: number }>(
    await db.execute(sql`
      select source::text, remaining from credit_ledger.credit_grant
       where user_id = ${userId} and not chat order by created_seq`),
  );
}

/** A settled hold: holds `held`, charges `charged`; returns the settlement's row id. */
async function settled(userId: string, held: number, charged: number) {
  const hold = await holdCredits(db, { userId, amount: held, featureType: doc });
  const settle = await settleCreditHold(db, { holdId: hold.holdId, amount: charged });
  return settle.transaction.id;
}

describe("refunds of a reservation's charge (a settlement)", () => {
  it('gives back what the settlement charged, and no more', async () => {
    const u = await createUser(db);
    const charge = await settled(u.id, 5, 3);
    expect((await balances(db, u.id))?.freeCredits).toBe(7);
    const refund = await refundCredits(db, {
      userId: u.id,
      amount: 3,
      featureType: doc,
      refundOf: charge,
    });
    expect(refund.balance).toBe(10);
    expect(refund.transaction.refundOf).toBe(charge);
    const error = await refundCredits(db, {
      userId: u.id,
      amount: 1,
      featureType: doc,
      refundOf: charge,
    }).catch((e) => e);
    expect(error).toBeInstanceOf(RefundExceedsDeductionError);
    expect(error).toMatchObject({ deducted: 3, refunded: 3, requested: 1 });
    expect((await balances(db, u.id))?.freeCredits).toBe(10);
    await expectVerified(u.id);
  });

  it('in parts, each within what is left of the charge', async () => {
    const u = await createUser(db);
    const charge = await settled(u.id, 6, 6);
    await refundCredits(db, { userId: u.id, amount: 2, featureType: doc, refundOf: charge });
    await refundCredits(db, { userId: u.id, amount: 4, featureType: doc, refundOf: charge });
    await expect(
      refundCredits(db, { userId: u.id, amount: 1, featureType: doc, refundOf: charge }),
    ).rejects.toBeInstanceOf(RefundExceedsDeductionError);
    expect((await balances(db, u.id))?.freeCredits).toBe(10);
    await expectVerified(u.id);
  });

  it('returns the credits to the grants the charge kept, not to those the settlement gave back', async () => {
    const u = await createUser(db, { freeCredits: 0 });
    await grantCredits(db, { userId: u.id, amount: 10, source: 'purchase' });
    await grantCredits(db, { userId: u.id, amount: 4, expiresAt: inMs(3_600_000) });
    // The hold takes 4 of the promotion and 4 of the pack; the settlement gives back 4 to the
    // pack and 1 to the promotion: the 3 charged stayed on the promotion.
    const charge = await settled(u.id, 8, 3);
    expect(await remaining(u.id)).toEqual([
      { source: 'purchase', remaining: 10 },
      { source: 'promotional', remaining: 1 },
    ]);
    await refundCredits(db, { userId: u.id, amount: 3, featureType: doc, refundOf: charge });
    expect(await remaining(u.id)).toEqual([
      { source: 'purchase', remaining: 10 },
      { source: 'promotional', remaining: 4 },
    ]);
    await expectVerified(u.id);
  });

  it('of credits whose grant has expired since, takes them off again at once', async () => {
    const u = await createUser(db, { freeCredits: 0 });
    // Seconds to spare: the hold and its settlement come before the grant is due, busy or not.
    const grant = await grantCredits(db, { userId: u.id, amount: 5, expiresAt: inMs(3000) });
    const charge = await settled(u.id, 5, 5);
    while (Date.now() < +(grant.transaction.grantExpiresAt ?? 0) + 50) await sleep(100);
    const refund = await refundCredits(db, {
      userId: u.id,
      amount: 5,
      featureType: doc,
      refundOf: charge,
    });
    expect(refund.balance).toBe(5);
    expect((await balances(db, u.id))?.freeCredits).toBe(0);
    await expectVerified(u.id);
  });

  it('is counted against spending: a refunded reservation spent nothing', async () => {
    const u = await createUser(db);
    const from = new Date(Date.now() - 60_000);
    const charge = await settled(u.id, 4, 4);
    await refundCredits(db, { userId: u.id, amount: 4, featureType: doc, refundOf: charge });
    const rows = await getCreditUsage(db, { from, to: inMs(60_000), userId: u.id });
    const spent = rows.filter((r) => r.featureType === doc).reduce((n, r) => n + r.spent, 0);
    expect(spent).toBe(0);
  });

  it('of a charge through withCreditReservation works the same way', async () => {
    const u = await createUser(db);
    let holdId = '';
    await withCreditReservation(
      db,
      { userId: u.id, amount: 5, featureType: doc },
      async (reservation) => {
        holdId = reservation.holdId;
        reservation.use(2);
      },
    );
    const [settlement] = rowsOf<{ id: string }>(
      await db.execute(
        sql`select id from "CreditTransaction" where hold_id = ${holdId} and operation = 'settle'`,
      ),
    );
    const charge = settlement?.id ?? '';
    await refundCredits(db, { userId: u.id, amount: 2, featureType: doc, refundOf: charge });
    expect((await balances(db, u.id))?.freeCredits).toBe(10);
    await expectVerified(u.id);
  });

  it.each([
    ['a hold', 'not_a_deduction'],
    ['a void', 'not_a_deduction'],
    ['a settlement an unlimited plan covered', 'covered_by_plan'],
  ] as const)('is refused for %s, and nothing is written', async (what, reason) => {
    const u = await createUser(db);
    let target: string;
    if (what === 'a settlement an unlimited plan covered') {
      await setUserPlan(db, { userId: u.id, plan: 'paid' });
      target = await settled(u.id, 3, 3);
    } else {
      const hold = await holdCredits(db, { userId: u.id, amount: 3, featureType: doc });
      target =
        what === 'a hold'
          ? hold.holdId
          : (await voidCreditHold(db, { holdId: hold.holdId })).transaction.id;
    }
    const before = await trailSize(db, u.id);
    const error = await refundCredits(db, {
      userId: u.id,
      amount: 1,
      featureType: doc,
      refundOf: target,
    }).catch((e) => e);
    expect(error).toBeInstanceOf(InvalidRefundTargetError);
    expect(error).toMatchObject({ reason, refundOf: target });
    expect(await trailSize(db, u.id)).toBe(before);
  });

  it('past the charge is reported by credits:verify when the owner forces one in', async () => {
    const u = await createUser(db);
    const charge = await settled(u.id, 3, 2);
    await refundCredits(db, { userId: u.id, amount: 2, featureType: doc, refundOf: charge });
    await expectVerified(u.id);
    // The owner disables the ledger's triggers and writes a second refund of the same charge.
    await db.execute(sql`alter table "CreditTransaction" disable trigger user`);
    try {
      await db.execute(sql`
        insert into "CreditTransaction" (user_id, amount, operation, feature_type, refund_of, seq, balance_after, hash)
        select ${u.id}, 2, 'refund', 'document_generation', ${charge}, max(seq) + 1, 12, 'x'
          from "CreditTransaction" where user_id = ${u.id}`);
    } finally {
      await db.execute(sql`alter table "CreditTransaction" enable trigger user`);
    }
    const { violationsByKind } = await verifyLedger(db, { userId: u.id });
    expect(violationsByKind).toHaveProperty('refund_exceeds_deduction', 1);
  });
});
