import { createTestDatabase } from '@bragdoc/test-postgres';
import { sql } from 'drizzle-orm';
import { withReplicas } from 'drizzle-orm/pg-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type Database } from '../../src/client.js';
import {
  deductCredits,
  OperationTimeoutError,
  setOperationTimeout,
} from '../../src/credits/index.js';
import { everyServerOf, onPrimary, onReplica } from '../../src/credits/replicas.js';
import { createUser } from './fixtures.js';

let db: Database;
let other: Database;
let closeAll: () => Promise<void>;
beforeAll(async () => {
  const database = await createTestDatabase({
    connect: (url) => createDatabase(url, { max: 2 }),
  });
  const second = createDatabase(database.url, { max: 2 });
  db = database.db;
  other = second.db;
  closeAll = async () => {
    await second.close();
    await database.close();
  };
});
afterAll(() => closeAll());

describe('which server a call runs on', () => {
  it('a plain database and a transaction are used as they are', async () => {
    expect(onPrimary(db)).toBe(db);
    expect(onReplica(db)).toBe(db);
    await db.transaction(async (tx) => {
      expect(onPrimary(tx)).toBe(tx);
      expect(onReplica(tx)).toBe(tx);
    });
  });

  it('a withReplicas database: its primary for writes, one of its replicas for reads, a setting for all three', () => {
    const both = withReplicas(db, [other]);
    expect(onPrimary(both)).toBe(db);
    expect(onReplica(both)).toBe(other);
    expect(everyServerOf(both)).toEqual([both, db, other]);
  });

  it('an operation timeout set on a withReplicas database bounds the calls it routes', async () => {
    const both = withReplicas(db, [other]);
    const { id } = await createUser(db);
    setOperationTimeout(both, 300);
    try {
      // Another session holds the user's row: the deduction waits for it past the budget.
      await other.transaction(async (tx) => {
        await tx.execute(sql`select 1 from "User" where id = ${id} for update`);
        const error = await deductCredits(both, {
          userId: id,
          amount: 1,
          featureType: 'chat_tool_call',
        }).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(OperationTimeoutError);
      });
    } finally {
      setOperationTimeout(both, undefined);
    }
  });
});
