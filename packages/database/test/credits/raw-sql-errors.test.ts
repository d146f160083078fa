import { sql } from 'drizzle-orm';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/client.js';
import {
  BalanceOutsideLedgerError,
  InsufficientCreditsError,
  LedgerAppendOnlyError,
  LedgerWriteOrderError,
  toCreditsError,
} from '../../src/credits/index.js';
import { rowsOf } from '../../src/credits/prepared.js';
import { useMigratedDatabase } from '../support.js';
import { balances, createUser, PLAIN_FEATURE, trailSize } from './fixtures.js';

// An app that writes the trail with its own SQL (a route kept from before the package, a
// script) gets the driver's error, or drizzle's wrapping it. toCreditsError(error) turns any
// that carries a ledger SQLSTATE into the package's typed error, reading the user from the
// error's DETAIL, and hands every other error back as it was.

const database = useMigratedDatabase();
let db: Database;
beforeAll(async () => {
  db = database().db;
});

async function failureOf(run: () => Promise<unknown>): Promise<unknown> {
  try {
    await run();
  } catch (error) {
    return error;
  }
  throw new Error('expected the statement to fail');
}

describe('toCreditsError(error) for SQL the app writes itself', () => {
  it('a raw INSERT of a deduction beyond the balance becomes InsufficientCreditsError (a 402), with the user and the figures, and writes nothing', async () => {
    const u = await createUser(db);
    const raw = await failureOf(() =>
      db.execute(sql`insert into "CreditTransaction" (user_id, amount, operation, feature_type)
                     values (${u.id}, 11, 'deduct', ${PLAIN_FEATURE})`),
    );
    const error = toCreditsError(raw);
    expect(error).toBeInstanceOf(InsufficientCreditsError);
    expect(error).toMatchObject({
      code: 'INSUFFICIENT_CREDITS',
      userId: u.id,
      required: 11,
      available: 10,
    });
    expect(await balances(db, u.id)).toEqual({ freeCredits: 10, freeChatMessages: 20 });
    expect(await trailSize(db, u.id)).toBe(0);
  });

  it("the seed's conditional UPDATE of a balance becomes BalanceOutsideLedgerError", async () => {
    const u = await createUser(db);
    const raw = await failureOf(() =>
      db.execute(sql`update "User" set free_credits = free_credits - 2
                     where id = ${u.id} and free_credits >= 2 returning free_credits`),
    );
    expect(toCreditsError(raw)).toBeInstanceOf(BalanceOutsideLedgerError);
    expect(toCreditsError(raw)).toMatchObject({ code: 'BALANCE_OUTSIDE_LEDGER' });
    expect(await balances(db, u.id)).toEqual({ freeCredits: 10, freeChatMessages: 20 });
  });

  it('a DELETE of a trail row becomes LedgerAppendOnlyError', async () => {
    const u = await createUser(db);
    const rows = async () =>
      rowsOf(await db.execute(sql`select id from "CreditTransaction" where user_id = ${u.id}`))
        .length;
    const before = await rows();
    expect(before).toBeGreaterThan(0);
    const raw = await failureOf(() =>
      db.execute(sql`delete from "CreditTransaction" where user_id = ${u.id}`),
    );
    expect(toCreditsError(raw)).toBeInstanceOf(LedgerAppendOnlyError);
    expect(await rows()).toBe(before);
  });

  it('a grant passed off as an opening row becomes LedgerWriteOrderError, saying what to do instead', async () => {
    const u = await createUser(db);
    const raw = await failureOf(() =>
      db.execute(sql`insert into "CreditTransaction" (user_id, amount, operation, feature_type, metadata)
                     values (${u.id}, 5, 'grant', ${PLAIN_FEATURE}, '{"reason": "opening_balance"}')`),
    );
    const error = toCreditsError(raw);
    expect(error).toBeInstanceOf(LedgerWriteOrderError);
    expect(error).toMatchObject({
      code: 'LEDGER_WRITE_ORDER',
      hint: 'Give a grant another reason.',
    });
    expect(await balances(db, u.id)).toEqual({ freeCredits: 10, freeChatMessages: 20 });
  });

  it("returns every other error as it was: the app's own, and the server's that are not the ledger's", async () => {
    const syntax = await failureOf(() => db.execute(sql`selec 1`));
    expect(toCreditsError(syntax)).toBe(syntax);
    // A lock timeout or an integer overflow in the app's own SQL is not a ledger refusal.
    const overflow = await failureOf(() => db.execute(sql`select 2147483647::int4 + 1`));
    expect(toCreditsError(overflow)).toBe(overflow);
    const plain = new Error('not from the database');
    expect(toCreditsError(plain)).toBe(plain);
    expect(toCreditsError(undefined)).toBe(undefined);
  });
});
