import { sql } from 'drizzle-orm';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/client.js';
import {
  deductCredits,
  getCreditBalance,
  HoldsExpiryBacklogError,
  verifyLedger,
} from '../../src/credits/index.js';
import { rowsOf } from '../../src/credits/prepared.js';
import { refusalOf, useMigratedDatabase } from '../support.js';
import { createUser, PLAIN_FEATURE, trailSize } from './fixtures.js';

// A write first gives back its user's due holds, each with an expire row that costs a full
// ledger write. A user with thousands of them made its next write take seconds (or never end
// under a short statement_timeout). Past 100 due at once a write now refuses at once, before
// expiring any; the package then gives them back in batches, each its own statement, and
// writes again.

const handle = useMigratedDatabase();
let db: Database;
beforeAll(() => {
  db = handle().db;
});

const HOLDS = 150;

/** A user with HOLDS open holds of 1 credit each, all past their expiry (by the server's clock). */
async function userWithDueHolds(): Promise<string> {
  const u = await createUser(db, { freeCredits: 1000 });
  await db.execute(
    sql.raw(`
    do $$ begin
      for i in 1..${HOLDS} loop
        insert into "CreditTransaction" (user_id, amount, operation, feature_type, hold_expires_at)
        values ('${u.id}', 1, 'hold', '${PLAIN_FEATURE}', clock_timestamp() + interval '4 seconds');
      end loop;
    end $$`),
  );
  // Until the last one is due, by the server's clock.
  await db.execute(
    sql.raw(`
    do $$ begin
      while exists (select 1 from "CreditHold" where user_id = '${u.id}' and expires_at > clock_timestamp()) loop
        perform pg_sleep(0.2);
      end loop;
    end $$`),
  );
  return u.id;
}

async function openHolds(userId: string): Promise<number> {
  const [row] = rowsOf(
    await db.execute(sql`select count(*)::int as n from "CreditHold" where user_id = ${userId}`),
  );
  return Number(row?.n);
}

describe(`a user with ${HOLDS} due holds (more than a write gives back)`, () => {
  it('a raw write refuses at once with BC021, expiring none', async () => {
    const userId = await userWithDueHolds();
    const refusal = await refusalOf(
      db.execute(sql`insert into "CreditTransaction" (user_id, amount, operation, feature_type)
                     values (${userId}, 1, 'deduct', ${PLAIN_FEATURE})`),
    );
    expect(refusal.code).toBe('BC021');
    expect(await openHolds(userId)).toBe(HOLDS);
  });

  it("inside a caller's transaction, a deduction throws HOLDS_EXPIRY_BACKLOG (retryable) and writes nothing", async () => {
    const userId = await userWithDueHolds();
    const before = await trailSize(db, userId);
    const error = await db
      .transaction((tx) => deductCredits(tx, { userId, amount: 1, featureType: PLAIN_FEATURE }))
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HoldsExpiryBacklogError);
    expect(error).toMatchObject({ code: 'HOLDS_EXPIRY_BACKLOG', retryable: true, limit: 100 });
    expect(await trailSize(db, userId)).toBe(before);
  });

  it('on a Database, a deduction gives them all back in batches, then spends from the balance they restore', async () => {
    const userId = await userWithDueHolds();
    const { balance } = await deductCredits(db, {
      userId,
      amount: 1000,
      featureType: PLAIN_FEATURE,
    });
    expect(balance).toBe(0);
    expect(await openHolds(userId)).toBe(0);
    expect((await verifyLedger(db, { userId })).violations).toEqual([]);
  });

  it('a balance read gives them back in batches too', async () => {
    const userId = await userWithDueHolds();
    await expect(getCreditBalance(db, userId)).resolves.toMatchObject({
      freeCredits: 1000,
      heldCredits: 0,
    });
    expect(await openHolds(userId)).toBe(0);
  });
});
