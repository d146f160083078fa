import { randomUUID } from 'node:crypto';
import type { Database } from '../../src/client.js';
import {
  deductCredits,
  grantCredits,
  holdCredits,
  refundCredits,
  settleCreditHold,
  voidCreditHold,
} from '../../src/credits/index.js';
import { createUser } from './fixtures.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export interface Story {
  userId: string;
  email: string;
  /** The first deduction (document generation), refunded 2 of 3. */
  deductionId: string;
  /** A reservation's charge (settle of 3 of a hold of 4), refunded 1. */
  settlementId: string;
  /** Holds in every state. */
  holds: { settled: string; voided: string; expired: string; overdue: string; open: string };
}

/**
 * A user whose trail has a bit of everything support is asked about: grants of several
 * sources (one expiring), deductions of both balances with metadata, refunds of a deduction
 * and of a reservation's charge, and holds settled, voided, expired, overdue (past its expiry
 * but not yet given back) and open. Ends with 24 credits (6 held: 5 open, 1 overdue) and 19
 * chat messages; read-only, the overdue hold is shown held.
 */
export async function buildStory(db: Database, name = 'Ada <b>Lovelace</b>'): Promise<Story> {
  const email = `ada.${randomUUID().slice(0, 8)}@Example.com`;
  const u = await createUser(db, { email, name });
  const userId = u.id;
  await grantCredits(db, {
    userId,
    amount: 20,
    source: 'purchase',
    metadata: { reason: 'Starter pack', stripeInvoice: 'in_123' },
  });
  await grantCredits(db, {
    userId,
    amount: 5,
    source: 'promotional',
    expiresAt: new Date(Date.now() + 30 * 86_400_000),
  });
  const deduction = await deductCredits(db, {
    userId,
    amount: 3,
    featureType: 'document_generation',
    metadata: { documentId: 'doc-42', model: 'gpt-4o' },
  });
  await deductCredits(db, { userId, amount: 2, featureType: 'workstream_clustering' });
  await deductCredits(db, { userId, amount: 1, featureType: 'chat_message' });
  await refundCredits(db, {
    userId,
    amount: 2,
    featureType: 'document_generation',
    refundOf: deduction.transaction.id,
    metadata: { reason: 'the document failed to render' },
    actor: 'support@bragdoc.example',
  });
  const reserved = await holdCredits(db, { userId, amount: 4, featureType: 'document_generation' });
  const settlement = await settleCreditHold(db, { holdId: reserved.holdId, amount: 3 });
  await refundCredits(db, {
    userId,
    amount: 1,
    featureType: 'document_generation',
    refundOf: settlement.transaction.id,
  });
  const voided = await holdCredits(db, { userId, amount: 2, featureType: 'document_generation' });
  await voidCreditHold(db, { holdId: voided.holdId, reason: 'job cancelled' });
  const open = await holdCredits(db, {
    userId,
    amount: 5,
    featureType: 'document_generation',
    expiresInMs: 3_600_000,
  });
  // A short hold, due before the next one is taken: that write gives it back (an expire row).
  // The last one is past its expiry when the story is read, and nothing has written since.
  const expired = await holdCredits(db, {
    userId,
    amount: 1,
    featureType: 'chat_tool_call',
    expiresInMs: 1000,
  });
  while (Date.now() < +expired.expiresAt + 50) await sleep(100);
  const overdue = await holdCredits(db, {
    userId,
    amount: 1,
    featureType: 'chat_tool_call',
    expiresInMs: 1000,
  });
  while (Date.now() < +overdue.expiresAt + 50) await sleep(100);
  return {
    userId,
    email,
    deductionId: deduction.transaction.id,
    settlementId: settlement.transaction.id,
    holds: {
      settled: reserved.holdId,
      voided: voided.holdId,
      expired: expired.holdId,
      overdue: overdue.holdId,
      open: open.holdId,
    },
  };
}
