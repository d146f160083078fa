import { eq, sql } from 'drizzle-orm';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/client.js';
import { deductCredits, grantCredits } from '../../src/credits/index.js';
import { creditTransaction, user } from '../../src/schema.js';
import { refusalOf, refusalSqlState, useMigratedDatabase } from '../support.js';
import { balances, createUser, trailSize } from './fixtures.js';

const database = useMigratedDatabase();
let db: Database;
beforeAll(async () => {
  db = database().db;
});

describe('the audit trail, as the database enforces it', () => {
  it('refuses UPDATE of a transaction with a clear message', async () => {
    const u = await createUser(db);
    const { transaction } = await deductCredits(db, {
      userId: u.id,
      amount: 1,
      featureType: 'chat_tool_call',
    });
    const error = await refusalOf(
      db
        .update(creditTransaction)
        .set({ amount: 100 })
        .where(eq(creditTransaction.id, transaction.id)),
    );
    expect(error.code).toBe('BC005');
    expect(error.message).toBe('"CreditTransaction" is append-only: UPDATE is refused');
  });

  it('refuses DELETE of a transaction', async () => {
    const u = await createUser(db);
    await deductCredits(db, { userId: u.id, amount: 1, featureType: 'chat_tool_call' });
    const error = await refusalOf(
      db.delete(creditTransaction).where(eq(creditTransaction.userId, u.id)),
    );
    expect(error.message).toBe('"CreditTransaction" is append-only: DELETE is refused');
    expect(await trailSize(db, u.id)).toBe(1);
  });

  it('refuses TRUNCATE, with the open holds that reference it or without', async () => {
    const cascade = await refusalOf(db.execute(sql`truncate "CreditTransaction" cascade`));
    expect(cascade.message).toBe('"CreditTransaction" is append-only: TRUNCATE is refused');
    // Without CASCADE, PostgreSQL itself refuses first: "CreditHold" references the trail.
    const alone = await refusalOf(db.execute(sql`truncate "CreditTransaction"`));
    expect(alone.code).toBe('0A000');
  });

  it("still removes a user's rows when the user is deleted (ON DELETE CASCADE)", async () => {
    const u = await createUser(db);
    const { transaction } = await deductCredits(db, {
      userId: u.id,
      amount: 2,
      featureType: 'chat_tool_call',
    });
    await db.execute(sql`
      insert into "CreditTransaction" (user_id, amount, operation, feature_type, refund_of)
      values (${u.id}, 1, 'refund', 'chat_tool_call', ${transaction.id})`);
    await db.delete(user).where(eq(user.id, u.id));
    expect(await trailSize(db, u.id)).toBe(0);
  });

  it('refuses a balance change that does not come with its audit row', async () => {
    const u = await createUser(db);
    const error = await refusalOf(
      db.update(user).set({ freeCredits: 1000 }).where(eq(user.id, u.id)),
    );
    expect(error.code).toBe('BC006');
    expect(await balances(db, u.id)).toMatchObject({ freeCredits: 10 });
  });

  it("refuses a balance change even with the ledger's flag set by hand, outside its trigger", async () => {
    const u = await createUser(db);
    const error = await refusalOf(
      db.transaction(async (tx) => {
        await tx.execute(sql`select set_config('bragdoc.ledger_write', 'on', true)`);
        await tx.update(user).set({ freeCredits: 1000 }).where(eq(user.id, u.id));
      }),
    );
    expect(error.code).toBe('BC006');
    expect(await balances(db, u.id)).toMatchObject({ freeCredits: 10 });
  });

  it('INSERT … ON CONFLICT DO NOTHING on a used idempotency key writes nothing and changes no balance', async () => {
    const u = await createUser(db);
    await grantCredits(db, {
      userId: u.id,
      amount: 100,
      featureType: 'chat_tool_call',
      idempotencyKey: 'g1',
    });
    for (let i = 0; i < 2; i++) {
      const rows = await db.execute(sql`
        insert into "CreditTransaction" (user_id, amount, operation, feature_type, idempotency_key)
        values (${u.id}, 100, 'grant', 'chat_tool_call', 'g1') on conflict do nothing returning id`);
      expect(rows).toHaveLength(0);
    }
    expect(await balances(db, u.id)).toMatchObject({ freeCredits: 110 });
    expect(await trailSize(db, u.id)).toBe(1);
  });

  it('INSERT … ON CONFLICT (id) DO NOTHING on an existing id writes nothing and changes no balance', async () => {
    const u = await createUser(db);
    const { transaction } = await grantCredits(db, {
      userId: u.id,
      amount: 5,
      featureType: 'chat_tool_call',
    });
    const rows = await db.execute(sql`
      insert into "CreditTransaction" (id, user_id, amount, operation, feature_type)
      values (${transaction.id}, ${u.id}, 5, 'grant', 'chat_tool_call') on conflict (id) do nothing returning id`);
    expect(rows).toHaveLength(0);
    expect(await balances(db, u.id)).toMatchObject({ freeCredits: 15 });
  });

  it('refuses INSERT … ON CONFLICT DO UPDATE (it would update the trail)', async () => {
    const u = await createUser(db);
    await grantCredits(db, {
      userId: u.id,
      amount: 5,
      featureType: 'chat_tool_call',
      idempotencyKey: 'g2',
    });
    const error = await refusalOf(
      db.execute(sql`
        insert into "CreditTransaction" (user_id, amount, operation, feature_type, idempotency_key)
        values (${u.id}, 5, 'grant', 'chat_tool_call', 'g2')
        on conflict (user_id, idempotency_key) where idempotency_key is not null do update set amount = 50`),
    );
    // The conflicting row is found, and updating it is what the trail refuses.
    expect(error.code).toBe('BC005');
    expect(await balances(db, u.id)).toMatchObject({ freeCredits: 15 });
  });

  it('lets other columns of "User" change freely', async () => {
    const u = await createUser(db);
    await db.update(user).set({ name: 'Renamed' }).where(eq(user.id, u.id));
    const [row] = await db.select({ name: user.name }).from(user).where(eq(user.id, u.id));
    expect(row?.name).toBe('Renamed');
  });

  it('applies a raw SQL insert to the balance and sets balance_after, seq, created_at and hash, whatever the insert says', async () => {
    const u = await createUser(db);
    const [row] = (await db.execute(sql`
      insert into "CreditTransaction" (user_id, amount, operation, feature_type, balance_after, seq, created_at, hash)
      values (${u.id}, 4, 'deduct', 'chat_tool_call', 999, 77, '2001-01-01', 'chosen')
      returning balance_after, seq, created_at, hash`)) as unknown as {
      balance_after: number;
      seq: string;
      created_at: string;
      hash: string;
    }[];
    expect(row?.balance_after).toBe(6);
    expect(Number(row?.seq)).toBe(3);
    expect(Math.abs(new Date(row?.created_at ?? 0).getTime() - Date.now())).toBeLessThan(60_000);
    expect(row?.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(await balances(db, u.id)).toMatchObject({ freeCredits: 6 });
  });

  it('refuses a raw SQL deduct larger than the balance (SQLSTATE BC001)', async () => {
    const u = await createUser(db);
    const insert = db.execute(sql`
      insert into "CreditTransaction" (user_id, amount, operation, feature_type)
      values (${u.id}, 11, 'deduct', 'chat_tool_call')`);
    expect(await refusalSqlState(insert)).toBe('BC001');
  });

  it("records each row's balance after it, in apply order", async () => {
    const u = await createUser(db);
    await deductCredits(db, { userId: u.id, amount: 3, featureType: 'chat_tool_call' });
    await grantCredits(db, { userId: u.id, amount: 5, featureType: 'chat_tool_call' });
    await deductCredits(db, { userId: u.id, amount: 2, featureType: 'chat_message' });
    const rows = await db
      .select({ op: creditTransaction.operation, after: creditTransaction.balanceAfter })
      .from(creditTransaction)
      .where(eq(creditTransaction.userId, u.id))
      .orderBy(creditTransaction.seq);
    expect(rows).toEqual([
      { op: 'grant', after: 10 },
      { op: 'grant', after: 20 },
      { op: 'deduct', after: 7 },
      { op: 'grant', after: 12 },
      { op: 'deduct', after: 18 },
    ]);
  });

  it('refuses a refund_of on a row that is not a refund (CHECK)', async () => {
    const u = await createUser(db);
    const { transaction } = await deductCredits(db, {
      userId: u.id,
      amount: 1,
      featureType: 'chat_tool_call',
    });
    const insert = db.execute(sql`
      insert into "CreditTransaction" (user_id, amount, operation, feature_type, refund_of)
      values (${u.id}, 1, 'grant', 'chat_tool_call', ${transaction.id})`);
    expect(await refusalSqlState(insert)).toBe('23514');
  });
});
