import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createTestDatabase, type TestDatabase } from '@bragdoc/test-postgres';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase } from '../../src/client.js';
import { verifyLedger } from '../../src/credits/index.js';
import { defaultMigrationsFolder, migrate } from '../../src/migrate/index.js';
import { readJournal } from '../../src/migrate/migrations.js';

// A database that ran the migrations up to 0002 and has a trail written then (balances the
// trail does not explain, rows listed out of apply order, no seq or hash), migrated on to
// 0003: every user gets its opening rows, its numbers and a chain that verifies.

let database: TestDatabase;
let sql: postgres.Sql;
let upTo0002: string;
const log = () => {};
const ids = {
  a: '00000000-0000-4000-8000-00000000000a',
  b: '00000000-0000-4000-8000-00000000000b',
};

beforeAll(async () => {
  database = await createTestDatabase({ empty: true });
  sql = postgres(database.url, { max: 1, onnotice: () => {} });
  upTo0002 = mkdtempSync(path.join(tmpdir(), 'bragdoc-0002-'));
  cpSync(defaultMigrationsFolder, upTo0002, { recursive: true });
  const journal = readJournal(upTo0002);
  journal.entries = journal.entries.filter((e) => e.idx <= 2);
  writeFileSync(path.join(upTo0002, 'meta', '_journal.json'), JSON.stringify(journal, null, 2));
  await migrate(database.url, { migrationsFolder: upTo0002, log });
  // Written under 0002's triggers: user a spends 3 credits and gets 5 chat messages, user b
  // spends all its credits; both were created with the default balances and no row for them.
  await sql`insert into "User" (id, email) values (${ids.a}, 'a@example.com'), (${ids.b}, 'b@example.com')`;
  await sql`insert into "CreditTransaction" (user_id, amount, operation, feature_type) values (${ids.a}, 3, 'deduct', 'chat_tool_call')`;
  await sql`insert into "CreditTransaction" (user_id, amount, operation, feature_type) values (${ids.a}, 5, 'grant', 'chat_message')`;
  await sql`insert into "CreditTransaction" (user_id, amount, operation, feature_type) values (${ids.b}, 10, 'deduct', 'document_generation')`;
  await migrate(database.url, { log });
}, 60_000);

afterAll(async () => {
  await sql.end();
  await database.close();
  rmSync(upTo0002, { recursive: true, force: true });
});

describe('migrating a trail written before 0003', () => {
  it('puts opening rows first, then the old rows in order, each with its running balance', async () => {
    const rows = await sql`
      select user_id, seq::int, operation, feature_type, amount, balance_after, metadata
      from "CreditTransaction" order by user_id, seq`;
    const opening = { reason: 'opening_balance' };
    expect(
      rows.map((r) => [
        r.user_id === ids.a ? 'a' : 'b',
        r.seq,
        r.operation,
        r.feature_type,
        r.amount,
        r.balance_after,
        r.metadata,
      ]),
    ).toEqual([
      ['a', 1, 'grant', 'document_generation', 10, 10, opening],
      ['a', 2, 'grant', 'chat_message', 20, 20, opening],
      ['a', 3, 'deduct', 'chat_tool_call', 3, 7, null],
      ['a', 4, 'grant', 'chat_message', 5, 25, null],
      ['b', 1, 'grant', 'document_generation', 10, 10, opening],
      ['b', 2, 'grant', 'chat_message', 20, 20, opening],
      ['b', 3, 'deduct', 'document_generation', 10, 0, null],
    ]);
  });

  it('leaves a ledger that verifies, and the ledger works on from there', async () => {
    const handle = createDatabase(database.url, { max: 1 });
    try {
      expect((await verifyLedger(handle.db)).violations).toEqual([]);
      await sql`insert into "CreditTransaction" (user_id, amount, operation, feature_type) values (${ids.b}, 4, 'grant', 'chat_tool_call')`;
      const [head] =
        await sql`select free_credits, ledger_seq::int from "User" where id = ${ids.b}`;
      expect(head).toEqual({ free_credits: 4, ledger_seq: 4 });
      expect((await verifyLedger(handle.db)).violations).toEqual([]);
    } finally {
      await handle.close();
    }
  });
});
