import { beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../src/client.js';
import {
  deductCredits,
  holdCredits,
  refundCredits,
  settleCreditHold,
} from '../src/credits/index.js';
import { createUser } from './credits/fixtures.js';
import { useMigratedDatabase } from './support.js';

const database = useMigratedDatabase();
let db: Database;
beforeAll(async () => {
  db = database().db;
});

describe("drizzle's relational queries", () => {
  it('load a user with its credit transactions and open holds', async () => {
    const u = await createUser(db);
    await deductCredits(db, { userId: u.id, amount: 1, featureType: 'chat_tool_call' });
    const hold = await holdCredits(db, { userId: u.id, amount: 2, featureType: 'chat_tool_call' });
    const found = await db.query.user.findFirst({
      where: (t, { eq }) => eq(t.id, u.id),
      with: { creditTransactions: { orderBy: (t, { asc }) => asc(t.seq) }, creditHolds: true },
    });
    expect(found?.creditTransactions.map((t) => t.operation)).toEqual([
      'grant',
      'grant',
      'deduct',
      'hold',
    ]);
    expect(found?.creditHolds.map((h) => [h.id, h.amount])).toEqual([[hold.holdId, 2]]);
  });

  it('load a deduction with its refunds, and a refund with its deduction', async () => {
    const u = await createUser(db);
    const deduction = await deductCredits(db, {
      userId: u.id,
      amount: 3,
      featureType: 'chat_tool_call',
    });
    const refund = await refundCredits(db, {
      userId: u.id,
      amount: 1,
      featureType: 'chat_tool_call',
      refundOf: deduction.transaction.id,
    });
    const withRefunds = await db.query.creditTransaction.findFirst({
      where: (t, { eq }) => eq(t.id, deduction.transaction.id),
      with: { refunds: true },
    });
    expect(withRefunds?.refunds.map((r) => r.id)).toEqual([refund.transaction.id]);
    const withDeduction = await db.query.creditTransaction.findFirst({
      where: (t, { eq }) => eq(t.id, refund.transaction.id),
      with: { refundOf: true, user: true },
    });
    expect(withDeduction?.refundOf?.id).toBe(deduction.transaction.id);
    expect(withDeduction?.user.id).toBe(u.id);
  });

  it('load a hold with its closing row, and a closing row with its hold', async () => {
    const u = await createUser(db);
    const hold = await holdCredits(db, {
      userId: u.id,
      amount: 4,
      featureType: 'document_generation',
    });
    const settled = await settleCreditHold(db, { holdId: hold.holdId, amount: 3 });
    const withClosing = await db.query.creditTransaction.findFirst({
      where: (t, { eq }) => eq(t.id, hold.holdId),
      with: { closings: true },
    });
    expect(withClosing?.closings.map((c) => [c.operation, c.amount])).toEqual([['settle', 3]]);
    const withHold = await db.query.creditTransaction.findFirst({
      where: (t, { eq }) => eq(t.id, settled.transaction.id),
      with: { hold: true },
    });
    expect(withHold?.hold?.amount).toBe(4);
  });
});
