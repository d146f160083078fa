import { sql } from 'drizzle-orm';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/client.js';
import { withCreditReservation } from '../../src/credits/index.js';
import { useMigratedDatabase } from '../support.js';
import { balances, createUser } from './fixtures.js';

const database = useMigratedDatabase();
let db: Database;
beforeAll(async () => {
  db = database().db;
});

/** Runs a reservation whose work throws `failure`; returns the void's recorded error. */
async function refundNoteAfter(failure: Error): Promise<string> {
  const u = await createUser(db);
  await expect(
    withCreditReservation(
      db,
      { userId: u.id, amount: 2, featureType: 'document_generation' },
      async () => {
        throw failure;
      },
    ),
  ).rejects.toBe(failure);
  expect(await balances(db, u.id)).toMatchObject({ freeCredits: 10 });
  const [row] = (await db.execute(
    sql`select metadata->>'error' as error from "CreditTransaction"
        where user_id = ${u.id} and operation = 'void'`,
  )) as unknown as { error: string }[];
  return row?.error ?? '';
}

describe('withCreditReservation gives the hold back whatever the work threw', () => {
  it('a message with NUL characters (recorded with U+FFFD in their place)', async () => {
    expect(await refundNoteAfter(new Error('bad\u0000byte'))).toBe('bad\uFFFDbyte');
  });

  it('a message whose 500th code point is a surrogate pair (kept whole)', async () => {
    const message = `${'a'.repeat(499)}😀${'b'.repeat(10)}`;
    expect(await refundNoteAfter(new Error(message))).toBe(`${'a'.repeat(499)}😀`);
  });

  it('a message with a lone surrogate (recorded as U+FFFD)', async () => {
    expect(await refundNoteAfter(new Error('half \uD83D pair'))).toBe('half \uFFFD pair');
  });

  it('a 1 MB message (its first 500 code points are recorded)', async () => {
    const note = await refundNoteAfter(new Error('😀'.repeat(512 * 1024)));
    expect(Array.from(note)).toHaveLength(500);
    expect(note).toBe('😀'.repeat(500));
  });
});
