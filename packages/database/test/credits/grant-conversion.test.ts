import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createTestDatabase, type TestDatabase } from '@bragdoc/test-postgres';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type DatabaseHandle } from '../../src/client.js';
import {
  deductCredits,
  getCreditBalance,
  refundCredits,
  verifyLedger,
  voidCreditHold,
} from '../../src/credits/index.js';
import { defaultMigrationsFolder, migrate } from '../../src/migrate/index.js';
import { readJournal } from '../../src/migrate/migrations.js';

// A database whose trails were written before credit grants existed (migrations up to 0014:
// balances, deductions, refunds, a hold still open), migrated on: every balance becomes one
// grant carried over, the ledger verifies, and the old rows can still be spent from, refunded
// and closed.

let database: TestDatabase;
let sql: postgres.Sql;
let handle: DatabaseHandle;
let folder: string;
const ids = {
  a: '00000000-0000-4000-8000-0000000000a1',
  b: '00000000-0000-4000-8000-0000000000b1',
  empty: '00000000-0000-4000-8000-0000000000c1',
};
let oldDeduction = '';
let openHold = '';

beforeAll(async () => {
  database = await createTestDatabase({ empty: true });
  sql = postgres(database.url, { max: 1, onnotice: () => {} });
  folder = mkdtempSync(path.join(tmpdir(), 'bragdoc-0014-'));
  cpSync(defaultMigrationsFolder, folder, { recursive: true });
  const journal = readJournal(folder);
  journal.entries = journal.entries.filter((e) => e.idx <= 14);
  writeFileSync(path.join(folder, 'meta', '_journal.json'), JSON.stringify(journal, null, 2));
  await migrate(database.url, { migrationsFolder: folder, log: () => {} });
  await sql`insert into "User" (id, email, free_credits) values
    (${ids.a}, 'a@example.com', 10), (${ids.b}, 'b@example.com', 50), (${ids.empty}, 'c@example.com', 0)`;
  const [d] = await sql<{ id: string }[]>`
    insert into "CreditTransaction" (user_id, amount, operation, feature_type)
    values (${ids.a}, 4, 'deduct', 'document_generation') returning id`;
  oldDeduction = d?.id ?? '';
  await sql`insert into "CreditTransaction" (user_id, amount, operation, feature_type)
            values (${ids.a}, 30, 'grant', 'document_generation')`;
  const [h] = await sql<{ id: string }[]>`
    insert into "CreditTransaction" (user_id, amount, operation, feature_type, hold_expires_at)
    values (${ids.b}, 20, 'hold', 'chat_tool_call', clock_timestamp() + interval '1 hour') returning id`;
  openHold = h?.id ?? '';
  await sql`insert into "CreditTransaction" (user_id, amount, operation, feature_type)
            values (${ids.empty}, 20, 'deduct', 'chat_message')`;
  await migrate(database.url, { log: () => {} });
  handle = createDatabase(database.url, { max: 2 });
}, 60_000);

afterAll(async () => {
  await handle?.close();
  await sql.end();
  await database.close();
  rmSync(folder, { recursive: true, force: true });
});

describe('converting trails written before credit grants existed', () => {
  it('carries each balance over as one grant that never expires, and the ledger verifies', async () => {
    const grants = await sql<
      { user_id: string; chat: boolean; amount: number; remaining: number }[]
    >`
      select user_id, chat, amount, remaining from credit_ledger.credit_grant
       where source = 'carried_over' order by user_id, chat`;
    expect(grants).toEqual([
      { user_id: ids.a, chat: false, amount: 36, remaining: 36 },
      { user_id: ids.a, chat: true, amount: 20, remaining: 20 },
      { user_id: ids.b, chat: false, amount: 30, remaining: 30 },
      { user_id: ids.b, chat: true, amount: 20, remaining: 20 },
    ]);
    expect((await verifyLedger(handle.db)).violations).toEqual([]);
  });

  it('spends the carried-over balance, and gives back what an old row took as a grant of its own', async () => {
    const use = await deductCredits(handle.db, {
      userId: ids.a,
      amount: 6,
      featureType: 'chat_tool_call',
    });
    expect(Object.values(use.transaction.allocations ?? {})).toEqual([6]);
    const refund = await refundCredits(handle.db, {
      userId: ids.a,
      amount: 4,
      featureType: 'document_generation',
      refundOf: oldDeduction,
    });
    expect(refund.transaction).toMatchObject({ source: 'refund', allocations: null });
    const voided = await voidCreditHold(handle.db, { holdId: openHold });
    expect(voided).toMatchObject({ balance: 50, transaction: { source: 'refund' } });
    const a = await getCreditBalance(handle.db, ids.a);
    expect(a.freeCredits).toBe(34);
    expect(a.grants.map((g) => [g.source, g.remaining])).toEqual([
      ['carried_over', 30],
      ['refund', 4],
      ['carried_over', 20],
    ]);
    expect((await verifyLedger(handle.db)).violations).toEqual([]);
  });
});
