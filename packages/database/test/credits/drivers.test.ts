import { createTestDatabase, type TestDatabase } from '@bragdoc/test-postgres';
import { PGlite } from '@electric-sql/pglite';
import { eq, sql } from 'drizzle-orm';
import { drizzle as drizzlePg } from 'drizzle-orm/node-postgres';
import { drizzle as drizzlePglite } from 'drizzle-orm/pglite';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type Database } from '../../src/client.js';
import {
  deductCredits,
  getCreditBalance,
  grantCredits,
  HoldAlreadyVoidedError,
  holdCredits,
  IdempotencyConflictError,
  InsufficientCreditsError,
  LedgerNotInstalledError,
  listCreditTransactions,
  listCreditTransactionsInRange,
  RefundExceedsDeductionError,
  refundCredits,
  settleCreditHold,
  verifyLedger,
  voidCreditHold,
  withCreditReservation,
} from '../../src/credits/index.js';
import { defaultMigrationsFolder } from '../../src/migrate/index.js';
import { readMigrations } from '../../src/migrate/migrations.js';
import * as schema from '../../src/schema.js';
import { user } from '../../src/schema.js';

/** A driver under test: a drizzle database over it, and how to let it go. */
interface Driver {
  db: Database;
  close: () => Promise<void>;
}

/**
 * The same behaviours, through each driver the package supports: every operation is one
 * INSERT or SELECT that any of them can send, and errors, rows and transactions must come
 * out the same whatever the driver's own types and error fields.
 */
function ledgerSuite(name: string, connect: () => Promise<Driver>) {
  describe(`through ${name}`, () => {
    let driver: Driver;
    let db: Database;
    beforeAll(async () => {
      driver = await connect();
      db = driver.db;
    }, 60_000);
    afterAll(() => driver?.close());

    const newUser = async (freeCredits = 10) => {
      const [row] = await db
        .insert(user)
        .values({ email: `${crypto.randomUUID()}@example.com`, freeCredits })
        .returning();
      if (!row) throw new Error('insert returned no row');
      return row.id;
    };

    it('deducts, grants and refunds within the cap, with typed errors', async () => {
      const userId = await newUser();
      const deduction = await deductCredits(db, {
        userId,
        amount: 4,
        featureType: 'chat_tool_call',
        metadata: { model: 'm' },
      });
      expect(deduction.balance).toBe(6);
      expect(deduction.transaction.seq).toBe(3);
      expect(deduction.transaction.createdAt).toBeInstanceOf(Date);
      await grantCredits(db, { userId, amount: 1, featureType: 'document_generation' });
      await refundCredits(db, {
        userId,
        amount: 3,
        featureType: 'chat_tool_call',
        refundOf: deduction.transaction.id,
      });
      await expect(
        refundCredits(db, {
          userId,
          amount: 2,
          featureType: 'chat_tool_call',
          refundOf: deduction.transaction.id,
        }),
      ).rejects.toThrow(RefundExceedsDeductionError);
      await expect(
        deductCredits(db, { userId, amount: 100, featureType: 'chat_tool_call' }),
      ).rejects.toThrow(InsufficientCreditsError);
      expect(await getCreditBalance(db, userId)).toMatchObject({ freeCredits: 10 });
    });

    it('replays an idempotency key and refuses it with other arguments', async () => {
      const userId = await newUser();
      const input = {
        userId,
        amount: 2,
        featureType: 'chat_tool_call' as const,
        idempotencyKey: 'k',
      };
      const first = await deductCredits(db, input);
      const again = await deductCredits(db, input);
      expect(again).toMatchObject({ replayed: true, transaction: { id: first.transaction.id } });
      await expect(deductCredits(db, { ...input, amount: 3 })).rejects.toThrow(
        IdempotencyConflictError,
      );
    });

    it('holds, settles part, voids, and refuses a second close', async () => {
      const userId = await newUser();
      const hold = await holdCredits(db, { userId, amount: 5, featureType: 'document_generation' });
      expect(hold.expiresAt).toBeInstanceOf(Date);
      expect(await getCreditBalance(db, userId)).toMatchObject({ freeCredits: 5, heldCredits: 5 });
      const settled = await settleCreditHold(db, { holdId: hold.holdId, userId, amount: 2 });
      expect(settled.balance).toBe(8);
      const other = await holdCredits(db, {
        userId,
        amount: 1,
        featureType: 'document_generation',
      });
      await voidCreditHold(db, { holdId: other.holdId, userId });
      await expect(voidCreditHold(db, { holdId: other.holdId })).rejects.toThrow(
        HoldAlreadyVoidedError,
      );
      const out = await withCreditReservation(
        db,
        { userId, amount: 2, featureType: 'document_generation' },
        async (r) => {
          r.use(1);
          return 'ok';
        },
      );
      expect(out).toBe('ok');
      expect(await getCreditBalance(db, userId)).toMatchObject({ freeCredits: 7, heldCredits: 0 });
    });

    it("runs inside a caller's transaction, in a savepoint that keeps it usable after a refusal", async () => {
      const userId = await newUser(3);
      await db.transaction(async (tx) => {
        await expect(
          deductCredits(tx, { userId, amount: 5, featureType: 'chat_tool_call' }),
        ).rejects.toThrow(InsufficientCreditsError);
        await deductCredits(tx, { userId, amount: 1, featureType: 'chat_tool_call' });
      });
      expect(await getCreditBalance(db, userId)).toMatchObject({ freeCredits: 2 });
    });

    it('pages a history in apply order and a time range, and the rows match a plain select', async () => {
      const userId = await newUser(100);
      for (let i = 0; i < 7; i++)
        await deductCredits(db, { userId, amount: 1, featureType: 'chat_tool_call' });
      const seen: number[] = [];
      let cursor: string | undefined;
      do {
        const page = await listCreditTransactions(db, {
          userId,
          limit: 3,
          ...(cursor ? { cursor } : {}),
        });
        seen.push(...page.items.map((r) => r.seq));
        cursor = page.nextCursor ?? undefined;
      } while (cursor);
      expect(seen).toEqual([9, 8, 7, 6, 5, 4, 3, 2, 1]);
      const { items } = await listCreditTransactions(db, { userId, limit: 1 });
      const [plain] = await db
        .select()
        .from(schema.creditTransaction)
        .where(eq(schema.creditTransaction.id, items[0]?.id ?? ''));
      expect(items[0]).toEqual(plain);
      const range = await listCreditTransactionsInRange(db, {
        from: new Date(Date.now() - 60_000),
        to: new Date(Date.now() + 60_000),
        limit: 500,
      });
      expect(range.items.filter((r) => r.userId === userId)).toHaveLength(9);
    });

    it('verifies the ledger', async () => {
      const result = await verifyLedger(db);
      expect(result.violations).toEqual([]);
      expect(result.rows).toBeGreaterThan(0);
    });
  });
}

let server: TestDatabase | undefined;
const pgDatabase = async () => {
  server = await createTestDatabase();
  return server;
};
afterAll(() => server?.close());

ledgerSuite('postgres.js (createDatabase)', async () => {
  const database = await createTestDatabase();
  const handle = createDatabase(database.url, { max: 4 });
  return {
    db: handle.db,
    close: async () => {
      await handle.close();
      await database.close();
    },
  };
});

ledgerSuite('node-postgres (pg)', async () => {
  const database = await pgDatabase();
  const pool = new pg.Pool({ connectionString: database.url, max: 4 });
  return { db: drizzlePg(pool, { schema }), close: () => pool.end() };
});

ledgerSuite('PGlite (in-process, migrated from the same SQL files)', async () => {
  const client = new PGlite();
  // Each migration in a transaction of its own, as db:migrate runs it.
  for (const migration of readMigrations(defaultMigrationsFolder)) {
    await client.exec('begin');
    for (const statement of migration.statements) await client.exec(statement);
    await client.exec('commit');
  }
  return { db: drizzlePglite(client, { schema }), close: () => client.close() };
});

describe('a database built without the migrations (drizzle-kit push), through PGlite', () => {
  it('refuses ledger writes with LEDGER_NOT_INSTALLED', async () => {
    const client = new PGlite();
    try {
      for (const migration of readMigrations(defaultMigrationsFolder).slice(0, 2))
        for (const statement of migration.statements) await client.exec(statement);
      await client.exec("create type credit_source as enum ('opening', 'promotional')");
      await client.exec(
        'alter table "CreditTransaction" add column seq bigint not null, add column hash text not null, add column hold_id uuid, add column hold_expires_at timestamptz(3), add column covered_by_plan text, add column actor text, add column source credit_source, add column grant_expires_at timestamptz(3), add column allocations jsonb; alter table "User" add column ledger_seq bigint not null default 0, add column ledger_hash text; alter table "CreditTransaction" alter column balance_after set not null',
      );
      const db = drizzlePglite(client, { schema });
      const [row] = await db
        .execute<{ id: string }>(
          sql`insert into "User" (email) values ('push@example.com') returning id`,
        )
        .then((r) => r.rows);
      await expect(
        deductCredits(db, { userId: row?.id ?? '', amount: 1, featureType: 'chat_tool_call' }),
      ).rejects.toThrow(LedgerNotInstalledError);
    } finally {
      await client.close();
    }
  });
});
