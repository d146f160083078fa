import { sql } from 'drizzle-orm';
import { beforeAll, describe, expect, expectTypeOf, it } from 'vitest';
import type { Database } from '../src/client.js';
import {
  type CreditTransaction,
  creditTransaction,
  type FeatureType,
  type OperationType,
  type User,
  user,
} from '../src/schema.js';
import { refusalSqlState, useMigratedDatabase } from './support.js';

const database = useMigratedDatabase();
let db: Database;
let owner: User;

beforeAll(async () => {
  db = database().db;
  const [created] = await db
    .insert(user)
    .values({ email: 'rows@example.com', name: 'Ada' })
    .returning();
  if (!created) throw new Error('insert returned no row');
  owner = created;
});

describe('rows through drizzle', () => {
  it('a new user gets 10 free credits, 20 free chat messages and both timestamps', () => {
    expect(owner.freeCredits).toBe(10);
    expect(owner.freeChatMessages).toBe(20);
    expect(owner.createdAt).toBeInstanceOf(Date);
    expect(owner.updatedAt).toBeInstanceOf(Date);
    expectTypeOf(owner.freeCredits).toEqualTypeOf<number>();
    expectTypeOf(owner.name).toEqualTypeOf<string | null>();
  });

  it('a credit transaction round-trips with its TypeScript types', async () => {
    const [inserted] = await db
      .insert(creditTransaction)
      .values({
        userId: owner.id,
        amount: 3,
        operation: 'deduct',
        featureType: 'workstream_clustering',
        metadata: { model: 'gpt', tokens: 1234, nested: { ok: true } },
      })
      .returning();
    if (!inserted) throw new Error('insert returned no row');
    const [opening] = await db
      .select({ id: creditTransaction.id })
      .from(creditTransaction)
      .where(sql`${creditTransaction.userId} = ${owner.id} and ${creditTransaction.seq} = 1`);
    if (!opening) throw new Error('no opening row');
    const [read] = await db
      .select()
      .from(creditTransaction)
      .where(sql`${creditTransaction.id} = ${inserted.id}`);
    expect(read).toEqual({
      id: inserted.id,
      userId: owner.id,
      amount: 3,
      operation: 'deduct',
      featureType: 'workstream_clustering',
      metadata: { model: 'gpt', tokens: 1234, nested: { ok: true } },
      createdAt: inserted.createdAt,
      // Set by the ledger trigger: the balance this deduction spent, after it; its place in
      // the user's trail (after the two opening rows); and its link in the hash chain.
      balanceAfter: 7,
      seq: 3,
      hash: expect.stringMatching(/^[0-9a-f]{64}$/),
      idempotencyKey: null,
      refundOf: null,
      holdId: null,
      holdExpiresAt: null,
      coveredByPlan: null,
      actor: null,
      source: null,
      grantExpiresAt: null,
      // Taken from the user's opening grant (its trail row's id).
      allocations: { [opening.id]: 3 },
    });
    expectTypeOf(inserted).toEqualTypeOf<CreditTransaction>();
    expectTypeOf(inserted.operation).toEqualTypeOf<OperationType>();
    expectTypeOf(inserted.featureType).toEqualTypeOf<FeatureType>();
    expectTypeOf(inserted.metadata).toEqualTypeOf<Record<string, unknown> | null>();
    expectTypeOf(inserted.seq).toEqualTypeOf<number>();
    expectTypeOf(inserted.balanceAfter).toEqualTypeOf<number>();
  });

  it('created_at has millisecond precision, so the Date a row returns finds it again exactly', async () => {
    const [inserted] = await db
      .insert(creditTransaction)
      .values({ userId: owner.id, amount: 1, operation: 'grant', featureType: 'chat_message' })
      .returning();
    if (!inserted) throw new Error('insert returned no row');
    const found = await db
      .select({ id: creditTransaction.id })
      .from(creditTransaction)
      .where(
        sql`${creditTransaction.id} = ${inserted.id} and ${creditTransaction.createdAt} = ${inserted.createdAt.toISOString()}`,
      );
    expect(found).toEqual([{ id: inserted.id }]);
  });

  it('refuses a negative amount (CHECK credit_tx_amount_positive)', async () => {
    const insert = db
      .insert(creditTransaction)
      .values({ userId: owner.id, amount: -1, operation: 'deduct', featureType: 'chat_tool_call' });
    expect(await refusalSqlState(insert)).toBe('23514');
  });

  it('refuses a zero amount', async () => {
    const insert = db
      .insert(creditTransaction)
      .values({ userId: owner.id, amount: 0, operation: 'refund', featureType: 'chat_tool_call' });
    expect(await refusalSqlState(insert)).toBe('23514');
  });

  it('refuses an operation that is not in the enum', async () => {
    const insert = db.execute(sql`
      insert into "CreditTransaction" (user_id, amount, operation, feature_type)
      values (${owner.id}, 1, 'steal', 'chat_tool_call')`);
    expect(await refusalSqlState(insert)).toBe('22P02');
  });

  it('refuses a feature type that is not in the enum', async () => {
    const insert = db.execute(sql`
      insert into "CreditTransaction" (user_id, amount, operation, feature_type)
      values (${owner.id}, 1, 'deduct', 'image_generation')`);
    expect(await refusalSqlState(insert)).toBe('22P02');
  });

  it('refuses a transaction for a user that does not exist (the ledger trigger, before the foreign key)', async () => {
    const insert = db.insert(creditTransaction).values({
      userId: '00000000-0000-4000-8000-000000000000',
      amount: 1,
      operation: 'grant',
      featureType: 'document_generation',
    });
    expect(await refusalSqlState(insert)).toBe('BC002');
  });

  it('refuses a negative balance (CHECK user_free_credits_non_negative)', async () => {
    const insert = db.insert(user).values({ email: 'negative@example.com', freeCredits: -1 });
    expect(await refusalSqlState(insert)).toBe('23514');
  });

  it('refuses a negative chat message balance', async () => {
    const insert = db
      .insert(user)
      .values({ email: 'negative-chat@example.com', freeChatMessages: -1 });
    expect(await refusalSqlState(insert)).toBe('23514');
  });

  it('refuses a second user with the same email', async () => {
    const insert = db.insert(user).values({ email: 'rows@example.com' });
    expect(await refusalSqlState(insert)).toBe('23505');
  });
});
