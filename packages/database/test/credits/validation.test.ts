import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type Database } from '../../src/client.js';
import {
  type CreditChangeResult,
  CreditsError,
  deductCredits,
  getCreditBalance,
  grantCredits,
  InvalidCursorError,
  InvalidInputError,
  listCreditTransactions,
  listCreditTransactionsInRange,
  refundCredits,
  withCreditReservation,
} from '../../src/credits/index.js';
import { featureTypeValues } from '../../src/schema.js';
import { useMigratedDatabase } from '../support.js';
import { balances, createUser, ledgerMismatches, trailSize } from './fixtures.js';

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
];

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

  it('refuses a well-formed cursor whose time no Date can hold', async () => {
    const scope = `user|${userId}||`;
    const digest = (text: string, n: number) =>
      createHash('sha256').update(text).digest('base64url').slice(0, n);
    const body = Buffer.from(
      JSON.stringify([9e15, '00000000-0000-4000-8000-000000000000', digest(scope, 8)]),
    ).toString('base64url');
    const error = await listCreditTransactions(db, {
      userId,
      cursor: `${body}.${digest(body, 12)}`,
    }).catch((e) => e);
    expect(error).toMatchObject({ code: 'INVALID_CURSOR' });
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

describe('property: every call succeeds with consistent balances or throws a typed error having written nothing', () => {
  const uuid = fc.uuid();
  const feature = fc.oneof(fc.constantFrom(...featureTypeValues), fc.string());
  const amount = fc.oneof(
    fc.integer({ min: 1, max: 30 }),
    fc.integer({ min: -5, max: 0 }),
    fc.double(),
    fc.constantFrom(2_147_483_647, 2_147_483_648, Number.NaN),
  );
  const metadata = fc.oneof(
    fc.constant(undefined),
    fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 })),
    fc.constantFrom<unknown>(
      [1],
      'text',
      null,
      new Date(),
      { bad: undefined },
      { big: 'x'.repeat(9000) },
    ),
  );
  const key = fc.option(fc.constantFrom('k1', 'k2', 'k3', '', 'x'.repeat(201)), { nil: undefined });
  const call = fc.record({
    op: fc.constantFrom('deduct', 'refund', 'grant', 'reserve-ok', 'reserve-fail', 'retry-last'),
    who: fc.oneof(fc.constantFrom('a', 'b'), uuid),
    amount,
    feature,
    metadata,
    key,
    refundOfPrevious: fc.boolean(),
  });

  it('holds for random sequences of valid and invalid calls', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(call, { minLength: 1, maxLength: 12 }), async (calls) => {
        const users = { a: (await createUser(db)).id, b: (await createUser(db)).id };
        const deductions: string[] = [];
        // The last keyed call that wrote: retrying it exactly must replay it, whatever the
        // balance is by then.
        let lastKeyed: { run: () => Promise<CreditChangeResult>; id: string } | undefined;
        for (const c of calls) {
          if (c.op === 'retry-last') {
            if (!lastKeyed) continue;
            const trail = await trailSize(db);
            const r = await lastKeyed.run();
            expect(r).toMatchObject({ replayed: true, transaction: { id: lastKeyed.id } });
            expect(await trailSize(db)).toBe(trail);
            continue;
          }
          const id = c.who === 'a' || c.who === 'b' ? users[c.who] : c.who;
          const input = {
            userId: id,
            amount: c.amount,
            featureType: c.feature,
            ...(c.metadata === undefined ? {} : { metadata: c.metadata }),
            ...(c.key === undefined ? {} : { idempotencyKey: c.key }),
          } as never;
          const before = {
            a: await balances(db, users.a),
            b: await balances(db, users.b),
            trail: await trailSize(db),
          };
          let wrote = true;
          try {
            if (c.op === 'deduct' || c.op === 'grant' || c.op === 'refund') {
              const refundOf =
                c.op === 'refund' && c.refundOfPrevious ? deductions.at(-1) : undefined;
              const args = { ...(input as object), ...(refundOf ? { refundOf } : {}) } as never;
              const op = { deduct: deductCredits, grant: grantCredits, refund: refundCredits }[
                c.op
              ];
              const run = () => op(db, args);
              const r = await run();
              wrote = !r.replayed;
              if (!r.replayed && c.op === 'deduct') deductions.push(r.transaction.id);
              if (!r.replayed && c.key !== undefined) lastKeyed = { run, id: r.transaction.id };
            } else {
              const { idempotencyKey: _key, ...reservation } = input as Record<string, unknown>;
              await withCreditReservation(db, reservation as never, async () => {
                if (c.op === 'reserve-fail') throw new Error('work failed');
              }).catch((e) => {
                if (!(e instanceof Error && e.message === 'work failed')) throw e;
              });
            }
          } catch (error) {
            wrote = false;
            if (!(error instanceof CreditsError)) throw error;
            expect(typeof error.code).toBe('string');
            expect({
              a: await balances(db, users.a),
              b: await balances(db, users.b),
              trail: await trailSize(db),
            }).toEqual(before);
          }
          if (!wrote) {
            expect(await trailSize(db)).toBe(before.trail);
          }
        }
        expect(await ledgerMismatches(db)).toEqual([]);
      }),
      { numRuns: 120 },
    );
  }, 120_000);
});
