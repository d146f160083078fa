import { sql } from 'drizzle-orm';
import { beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type Database } from '../../src/client.js';
import {
  deductCredits,
  getCreditBalance,
  grantCredits,
  InvalidInputError,
  listCreditTransactions,
  listCreditTransactionsInRange,
  MAX_METADATA_DEPTH,
  refundCredits,
  withCreditReservation,
} from '../../src/credits/index.js';
import { useMigratedDatabase } from '../support.js';
import { createUser } from './fixtures.js';

const database = useMigratedDatabase();
let db: Database;
let url: string;
// A client whose pool is already closed: any query through it would fail with a
// connection error, so an InvalidInputError from it proves the database was not touched.
let closedDb: Database;
let userId: string;

beforeAll(async () => {
  ({ db, url } = database());
  const closed = createDatabase(url);
  await closed.close();
  closedDb = closed.db;
  userId = (await createUser(db)).id;
});

const valid = { amount: 1, featureType: 'chat_tool_call' } as const;

const invalidChanges: [string, Record<string, unknown>, string][] = [
  ['a userId that is not a UUID', { userId: 'user-1' }, 'userId'],
  ['a fractional amount', { amount: 1.5 }, 'amount'],
  ['a zero amount', { amount: 0 }, 'amount'],
  ['a negative amount', { amount: -5 }, 'amount'],
  ['an amount beyond int4', { amount: 2_147_483_648 }, 'amount'],
  ['NaN', { amount: Number.NaN }, 'amount'],
  ['an amount given as a string', { amount: '5' }, 'amount'],
  ['an unknown featureType', { featureType: 'image_generation' }, 'featureType'],
  ['metadata that is an array', { metadata: [1, 2] }, 'metadata'],
  ['metadata that is a Date', { metadata: new Date() }, 'metadata'],
  ['metadata holding a Date', { metadata: { at: new Date() } }, 'metadata.at'],
  ['metadata holding undefined', { metadata: { a: undefined } }, 'metadata.a'],
  ['metadata holding Infinity', { metadata: { n: Number.POSITIVE_INFINITY } }, 'metadata.n'],
  ['metadata larger than 8 KiB', { metadata: { text: 'x'.repeat(9000) } }, 'metadata'],
  ['an empty idempotency key', { idempotencyKey: '' }, 'idempotencyKey'],
  ['an idempotency key over 200 characters', { idempotencyKey: 'k'.repeat(201) }, 'idempotencyKey'],
  ['an unknown field', { amout: 5 }, 'input'],
  ['an idempotency key with a NUL character', { idempotencyKey: 'a\u0000b' }, 'idempotencyKey'],
  ['an idempotency key with a lone surrogate', { idempotencyKey: '\ud800' }, 'idempotencyKey'],
  ['metadata with a NUL character', { metadata: { note: 'a\u0000b' } }, 'metadata.note'],
  ['metadata with a lone surrogate in a key', { metadata: { '\udc00': 1 } }, 'metadata.\udc00'],
  ['metadata nested deeper than 32 levels', { metadata: nested(33) }, 'metadata'],
  ['metadata that contains itself', { metadata: cyclic() }, 'metadata'],
  ['metadata holding a BigInt', { metadata: { n: 1n } }, 'metadata'],
  [
    'a userId in braces without the closing one',
    { userId: '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11' },
    'userId',
  ],
  [
    'a userId with a hyphen inside a group of four',
    { userId: 'a0eeb-c999c0b4ef8bb6d6bb9bd380a11' },
    'userId',
  ],
];

/** `{ a: { a: … } }`, `depth` objects deep. */
function nested(depth: number): Record<string, unknown> {
  let value: Record<string, unknown> = {};
  for (let i = 1; i < depth; i++) value = { a: value };
  return value;
}

function cyclic(): Record<string, unknown> {
  const value: Record<string, unknown> = { a: 1 };
  value.self = value;
  return value;
}

describe('bad input is refused before the database is touched', () => {
  const operations = { deductCredits, refundCredits, grantCredits } as const;
  for (const [name, operation] of Object.entries(operations)) {
    it.each(invalidChanges)(`${name} refuses %s`, async (_, change, field) => {
      const error = await operation(closedDb, { userId, ...valid, ...change } as never).catch(
        (e) => e,
      );
      expect(error).toBeInstanceOf(InvalidInputError);
      expect(error).toMatchObject({ code: 'INVALID_INPUT', field });
    });
  }

  it('refundCredits refuses a refundOf that is not a UUID', async () => {
    const error = await refundCredits(closedDb, { userId, ...valid, refundOf: 'abc' }).catch(
      (e) => e,
    );
    expect(error).toMatchObject({ code: 'INVALID_INPUT', field: 'refundOf' });
  });

  it('withCreditReservation refuses bad input without running the work', async () => {
    let ran = false;
    const error = await withCreditReservation(
      closedDb,
      { userId, ...valid, amount: 0 },
      async () => {
        ran = true;
      },
    ).catch((e) => e);
    expect(error).toMatchObject({ code: 'INVALID_INPUT', field: 'amount' });
    expect(ran).toBe(false);
  });

  it('withCreditReservation refuses an idempotency key (a replay would run the work uncharged)', async () => {
    const error = await withCreditReservation(
      closedDb,
      { userId, ...valid, idempotencyKey: 'k' } as never,
      async () => {},
    ).catch((e) => e);
    expect(error).toMatchObject({ code: 'INVALID_INPUT', field: 'input' });
  });

  it('getCreditBalance refuses a userId that is not a UUID', async () => {
    await expect(getCreditBalance(closedDb, 'nope')).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      field: 'userId',
    });
  });

  it.each([
    [{ limit: 0 }, 'limit'],
    [{ limit: 501 }, 'limit'],
    [{ limit: 2.5 }, 'limit'],
    [{ operation: 'steal' }, 'operation'],
    [{ featureType: 'nope' }, 'featureType'],
    [{ cursor: '' }, 'cursor'],
  ])('listCreditTransactions refuses %o', async (change, field) => {
    const error = await listCreditTransactions(closedDb, { userId, ...change } as never).catch(
      (e) => e,
    );
    expect(error).toMatchObject({ code: 'INVALID_INPUT', field });
  });

  it('listCreditTransactionsInRange refuses from > to', async () => {
    const error = await listCreditTransactionsInRange(closedDb, {
      from: new Date('2026-02-01'),
      to: new Date('2026-01-01'),
    }).catch((e) => e);
    expect(error).toMatchObject({
      code: 'INVALID_INPUT',
      field: 'from',
      reason: 'must not be after to',
    });
  });

  it('listCreditTransactionsInRange refuses a date past the year 9999', async () => {
    const error = await listCreditTransactionsInRange(closedDb, {
      from: new Date('2026-01-01'),
      to: new Date(Date.UTC(10000, 0, 1)),
    }).catch((e) => e);
    expect(error).toMatchObject({
      code: 'INVALID_INPUT',
      field: 'to',
      reason: 'must be in the years 1–9999',
    });
  });

  it('listCreditTransactionsInRange refuses an invalid Date', async () => {
    const error = await listCreditTransactionsInRange(closedDb, {
      from: new Date('nope'),
      to: new Date(),
    }).catch((e) => e);
    expect(error).toMatchObject({ code: 'INVALID_INPUT', field: 'from' });
  });
});

describe('input the database would take is taken', () => {
  it.each([
    ['upper case', (id: string) => id.toUpperCase()],
    ['braces', (id: string) => `{${id}}`],
    ['no hyphens', (id: string) => id.replaceAll('-', '')],
    [
      'a hyphen after every group of four digits',
      (id: string) => id.replaceAll('-', '').replace(/(.{4})(?=.)/g, '$1-'),
    ],
  ])('a userId spelled with %s is the same user', async (_, spell) => {
    const u = await createUser(db);
    const spelled = spell(u.id);
    const [check] = (await db.execute(
      sql`select ${spelled}::uuid = ${u.id}::uuid as same`,
    )) as unknown as { same: boolean }[];
    expect(check?.same).toBe(true);
    const result = await deductCredits(db, {
      userId: spelled,
      amount: 1,
      featureType: 'chat_tool_call',
    });
    expect(result.transaction.userId).toBe(u.id);
    expect((await getCreditBalance(db, spelled)).freeCredits).toBe(9);
  });

  it('a userId of any UUID version or variant (here the nil UUID and version 9) is accepted', async () => {
    for (const id of [
      '00000000-0000-0000-0000-000000000000',
      'a0eebc99-9c0b-9ef8-0b6d-6bb9bd380a11',
    ]) {
      const u = await createUser(db, { id });
      expect((await getCreditBalance(db, id)).freeCredits).toBe(10);
      await grantCredits(db, { userId: u.id, amount: 1, featureType: 'chat_tool_call' });
    }
  });

  it(`metadata nested ${MAX_METADATA_DEPTH} levels deep is accepted`, async () => {
    const result = await grantCredits(db, {
      userId,
      amount: 1,
      featureType: 'chat_tool_call',
      metadata: nested(MAX_METADATA_DEPTH),
    });
    expect(result.transaction.metadata).toEqual(nested(MAX_METADATA_DEPTH));
  });

  it('a "__proto__" key in metadata is kept, not dropped', async () => {
    const metadata = JSON.parse('{"__proto__": {"polluted": true}, "model": "m"}') as Record<
      string,
      unknown
    >;
    const result = await grantCredits(db, {
      userId,
      amount: 1,
      featureType: 'chat_tool_call',
      metadata,
    });
    expect(Object.keys(result.transaction.metadata ?? {})).toEqual(['model', '__proto__']);
    const [row] = (await db.execute(
      sql`select metadata::text as text from "CreditTransaction" where id = ${result.transaction.id}`,
    )) as unknown as { text: string }[];
    expect(row?.text).toBe('{"model": "m", "__proto__": {"polluted": true}}');
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});
