import { createHash } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/client.js';
import {
  deductCredits,
  InvalidCursorError,
  listCreditTransactions,
  listCreditTransactionsInRange,
} from '../../src/credits/index.js';
import { useMigratedDatabase } from '../support.js';
import { createUser } from './fixtures.js';

const database = useMigratedDatabase();
let db: Database;
let userId: string;

beforeAll(async () => {
  db = database().db;
  userId = (await createUser(db)).id;
});

/** A cursor as the API spells them, for any values: what someone forging one would send. */
function forge(values: unknown[], scope: string): string {
  const digest = (text: string, n: number) =>
    createHash('sha256').update(text).digest('base64url').slice(0, n);
  const body = Buffer.from(JSON.stringify([...values, digest(scope, 8)])).toString('base64url');
  return `${body}.${digest(body, 12)}`;
}

describe('cursors', () => {
  async function aCursor() {
    const u = await createUser(db);
    for (let i = 0; i < 3; i++)
      await deductCredits(db, { userId: u.id, amount: 1, featureType: 'chat_tool_call' });
    const page = await listCreditTransactions(db, { userId: u.id, limit: 1 });
    if (!page.nextCursor) throw new Error('expected a next page');
    return { userId: u.id, cursor: page.nextCursor };
  }

  it('refuses a malformed cursor', async () => {
    const error = await listCreditTransactions(db, { userId, cursor: 'not-a-cursor' }).catch(
      (e) => e,
    );
    expect(error).toBeInstanceOf(InvalidCursorError);
    expect(error).toMatchObject({ code: 'INVALID_CURSOR', field: 'cursor' });
  });

  it('refuses a cursor altered in one character', async () => {
    const { userId: owner, cursor } = await aCursor();
    const body = cursor.split('.')[0] ?? '';
    const flipped = `${body.slice(0, 5)}${body[5] === 'A' ? 'B' : 'A'}${body.slice(6)}.${cursor.split('.')[1]}`;
    const error = await listCreditTransactions(db, { userId: owner, cursor: flipped }).catch(
      (e) => e,
    );
    expect(error).toMatchObject({
      code: 'INVALID_CURSOR',
      reason: 'was altered (checksum mismatch)',
    });
  });

  it.each([
    ['a negative seq', -1],
    ['a fractional seq', 1.5],
    ['a seq beyond 2^53', 2 ** 60],
    ['a seq that is a string', '5'],
  ])('refuses a well-formed history cursor with %s', async (_, seq) => {
    const error = await listCreditTransactions(db, {
      userId,
      cursor: forge([seq], `user|${userId}||`),
    }).catch((e) => e);
    expect(error).toMatchObject({ code: 'INVALID_CURSOR' });
  });

  it.each([
    ['no Date can hold', 9e15],
    ['PostgreSQL cannot parse (year -200000)', Date.UTC(-200000, 0, 1)],
    ['is past the year 9999', Date.UTC(20000, 0, 1)],
  ])('refuses a well-formed range cursor whose time %s, with INVALID_CURSOR', async (_, time) => {
    const from = new Date('2020-01-01T00:00:00Z');
    const to = new Date('2030-01-01T00:00:00Z');
    const cursor = forge(
      [time, '00000000-0000-4000-8000-000000000000'],
      `range|${from.toISOString()}|${to.toISOString()}`,
    );
    const error = await listCreditTransactionsInRange(db, { from, to, cursor }).catch((e) => e);
    expect(error).toBeInstanceOf(InvalidCursorError);
    expect(error).toMatchObject({ code: 'INVALID_CURSOR', field: 'cursor' });
  });

  it("refuses a cursor of another user's history", async () => {
    const { cursor } = await aCursor();
    const error = await listCreditTransactions(db, { userId, cursor }).catch((e) => e);
    expect(error).toMatchObject({
      code: 'INVALID_CURSOR',
      reason: expect.stringContaining('another query'),
    });
  });

  it('refuses a cursor of the same history with other filters', async () => {
    const { userId: owner, cursor } = await aCursor();
    const error = await listCreditTransactions(db, {
      userId: owner,
      cursor,
      operation: 'deduct',
    }).catch((e) => e);
    expect(error).toMatchObject({ code: 'INVALID_CURSOR' });
  });
});
