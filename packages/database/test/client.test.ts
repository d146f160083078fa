import { createTestDatabase, type TestDatabase } from '@bragdoc/test-postgres';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase } from '../src/client.js';
import { deductCredits } from '../src/credits/index.js';
import { rowsOf } from '../src/credits/prepared.js';
import { createUser } from './credits/fixtures.js';

let database: TestDatabase;
beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(() => database.close());

/** Runs a ledger write on a one-connection pool, then counts that session's named statements. */
async function namedStatementsAfterAWrite(url: string, options = {}) {
  const handle = createDatabase(url, { max: 1, ...options });
  try {
    const u = await createUser(handle.db);
    await deductCredits(handle.db, { userId: u.id, amount: 1, featureType: 'chat_tool_call' });
    const [row] = rowsOf<{ n: string }>(
      await handle.db.execute(sql`select count(*) as n from pg_prepared_statements`),
    );
    return Number(row?.n);
  } finally {
    await handle.close();
  }
}

describe('createDatabase', () => {
  it('prepares statements by default', async () => {
    expect(await namedStatementsAfterAWrite(database.url)).toBeGreaterThan(0);
  });

  it('with ?pgbouncer=true, prepares none, and the flag never reaches the server', async () => {
    const url = new URL(database.url);
    url.searchParams.set('pgbouncer', 'true');
    expect(await namedStatementsAfterAWrite(url.toString())).toBe(0);
  });

  it('with prepare: false, prepares none', async () => {
    expect(await namedStatementsAfterAWrite(database.url, { prepare: false })).toBe(0);
  });
});
