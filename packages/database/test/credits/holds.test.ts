import { spawn } from 'node:child_process';
import { sql } from 'drizzle-orm';
import { beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type Database, type Transaction } from '../../src/client.js';
import {
  DEFAULT_HOLD_EXPIRY_MS,
  deductCredits,
  expireCreditHolds,
  getCreditBalance,
  grantCredits,
  HoldAlreadySettledError,
  HoldAlreadyVoidedError,
  HoldAmountError,
  HoldExpiredError,
  HoldNotFoundError,
  holdCredits,
  InsufficientCreditsError,
  InvalidInputError,
  settleCreditHold,
  verifyLedger,
  voidCreditHold,
  withCreditReservation,
} from '../../src/credits/index.js';
import type { FeatureType } from '../../src/schema.js';
import { packageDir, runScript } from '../run-script.js';
import { useMigratedDatabase } from '../support.js';
import { balances, createUser, ledgerMismatches, trailSize } from './fixtures.js';

const database = useMigratedDatabase();
let db: Database;
beforeAll(async () => {
  db = database().db;
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const doc = 'document_generation' as const;

/** A hold of the shortest expiry (1 s): `sleep(1100)` after it, and it is due. */
const shortHold = (userId: string, amount: number, featureType: FeatureType = doc) =>
  holdCredits(db, { userId, amount, featureType, expiresInMs: 1000 });

interface TrailRow {
  id: string;
  seq: string;
  operation: string;
  amount: number;
  balance_after: number;
  hold_id: string | null;
  metadata: Record<string, unknown> | null;
}

/** The user's trail after its opening rows, in apply order. */
async function trail(userId: string): Promise<TrailRow[]> {
  return (await db.execute(sql`
    select id, seq, operation, amount, balance_after, hold_id, metadata from "CreditTransaction"
     where user_id = ${userId} and metadata is distinct from '{"reason": "opening_balance"}'::jsonb
     order by seq`)) as unknown as TrailRow[];
}

/** The balance as stored, read without getCreditBalance (which would expire due holds). */
async function storedCredits(userId: string): Promise<number | undefined> {
  return (await balances(db, userId))?.freeCredits;
}

async function expectLedgerSound() {
  expect(await ledgerMismatches(db)).toEqual([]);
  const result = await verifyLedger(db);
  expect(result.violations).toEqual([]);
}

describe('holdCredits', () => {
  it('takes the amount from the balance now, and reports it as held', async () => {
    const u = await createUser(db);
    const hold = await holdCredits(db, { userId: u.id, amount: 4, featureType: doc });
    expect(hold.balance).toBe(6);
    expect(hold.transaction).toMatchObject({ operation: 'hold', amount: 4, holdId: null });
    expect(await getCreditBalance(db, u.id)).toEqual({
      freeCredits: 6,
      freeChatMessages: 20,
      heldCredits: 4,
      heldChatMessages: 0,
      plan: { plan: 'free', unlimited: false, until: null },
      grants: expect.any(Array),
    });
  });

  it('expires after 10 minutes by default, on the server clock', async () => {
    const u = await createUser(db);
    const before = Date.now();
    const hold = await holdCredits(db, { userId: u.id, amount: 1, featureType: doc });
    const after = Date.now();
    expect(hold.expiresAt.getTime()).toBeGreaterThanOrEqual(before + DEFAULT_HOLD_EXPIRY_MS - 1000);
    expect(hold.expiresAt.getTime()).toBeLessThanOrEqual(after + DEFAULT_HOLD_EXPIRY_MS + 1000);
    expect(hold.expiresAt).toEqual(hold.transaction.holdExpiresAt);
  });

  it('refuses an expiry shorter than a second or longer than a day, and writes nothing', async () => {
    const u = await createUser(db);
    for (const expiresInMs of [999, 86_400_001, 1.5, -1]) {
      const error = await holdCredits(db, {
        userId: u.id,
        amount: 1,
        featureType: doc,
        expiresInMs,
      }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(InvalidInputError);
      expect((error as InvalidInputError).field).toBe('expiresInMs');
    }
    expect(await trailSize(db, u.id)).toBe(0);
  });

  it('cannot hold more than the balance: InsufficientCreditsError, nothing written', async () => {
    const u = await createUser(db, { freeCredits: 3 });
    await holdCredits(db, { userId: u.id, amount: 2, featureType: doc });
    await expect(holdCredits(db, { userId: u.id, amount: 2, featureType: doc })).rejects.toThrow(
      InsufficientCreditsError,
    );
    expect(await trailSize(db, u.id)).toBe(1);
  });

  it('holds chat messages from their own balance', async () => {
    const u = await createUser(db);
    await holdCredits(db, { userId: u.id, amount: 5, featureType: 'chat_message' });
    expect(await getCreditBalance(db, u.id)).toMatchObject({
      freeCredits: 10,
      freeChatMessages: 15,
      heldChatMessages: 5,
    });
  });

  it('with an idempotency key, a retry returns the first hold', async () => {
    const u = await createUser(db);
    const input = { userId: u.id, amount: 2, featureType: doc, idempotencyKey: 'req-1' };
    const first = await holdCredits(db, input);
    const again = await holdCredits(db, input);
    expect(again.replayed).toBe(true);
    expect(again.holdId).toBe(first.holdId);
    expect(await storedCredits(u.id)).toBe(8);
  });
});

describe('settleCreditHold', () => {
  it('charges the whole hold by default: the balance stays, the hold is closed', async () => {
    const u = await createUser(db);
    const hold = await holdCredits(db, { userId: u.id, amount: 4, featureType: doc });
    const settled = await settleCreditHold(db, { holdId: hold.holdId, userId: u.id });
    expect(settled).toMatchObject({ balance: 6, replayed: false });
    expect(settled.transaction).toMatchObject({
      operation: 'settle',
      amount: 4,
      holdId: hold.holdId,
    });
    expect(await getCreditBalance(db, u.id)).toMatchObject({ freeCredits: 6, heldCredits: 0 });
  });

  it('charges part of the hold and gives the rest back, in one row linked to it', async () => {
    const u = await createUser(db);
    const hold = await holdCredits(db, { userId: u.id, amount: 5, featureType: doc });
    const settled = await settleCreditHold(db, {
      holdId: hold.holdId,
      amount: 2,
      metadata: { tokens: 812 },
    });
    expect(settled.balance).toBe(8);
    expect(
      (await trail(u.id)).map((r) => [r.operation, r.amount, r.balance_after, r.hold_id]),
    ).toEqual([
      ['hold', 5, 5, null],
      ['settle', 2, 8, hold.holdId],
    ]);
    expect(settled.transaction.metadata).toEqual({ tokens: 812 });
    await expectLedgerSound();
  });

  it('a retry of the same settlement returns the first result and writes nothing', async () => {
    const u = await createUser(db);
    const hold = await holdCredits(db, { userId: u.id, amount: 5, featureType: doc });
    const first = await settleCreditHold(db, { holdId: hold.holdId, amount: 3 });
    const again = await settleCreditHold(db, { holdId: hold.holdId, amount: 3 });
    expect(again.replayed).toBe(true);
    expect(again.transaction.id).toBe(first.transaction.id);
    expect(await trailSize(db, u.id)).toBe(2);
  });

  it('a settlement for another amount after the first throws HOLD_ALREADY_SETTLED', async () => {
    const u = await createUser(db);
    const hold = await holdCredits(db, { userId: u.id, amount: 5, featureType: doc });
    const first = await settleCreditHold(db, { holdId: hold.holdId, amount: 3 });
    const error = await settleCreditHold(db, { holdId: hold.holdId }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HoldAlreadySettledError);
    expect(error).toMatchObject({
      code: 'HOLD_ALREADY_SETTLED',
      closedBy: first.transaction.id,
      charged: 3,
    });
    expect(await trailSize(db, u.id)).toBe(2);
  });

  it('refuses more than the hold holds (SETTLE_EXCEEDS_HOLD) and zero, and writes nothing', async () => {
    const u = await createUser(db);
    const hold = await holdCredits(db, { userId: u.id, amount: 2, featureType: doc });
    const more = await settleCreditHold(db, { holdId: hold.holdId, amount: 3 }).catch((e) => e);
    expect(more).toBeInstanceOf(HoldAmountError);
    expect(more).toMatchObject({ code: 'SETTLE_EXCEEDS_HOLD', held: 2, requested: 3 });
    const zero = await settleCreditHold(db, { holdId: hold.holdId, amount: 0 }).catch((e) => e);
    expect(zero).toBeInstanceOf(InvalidInputError);
    expect(zero).toMatchObject({ field: 'amount' });
    expect(await trailSize(db, u.id)).toBe(1);
    expect(await getCreditBalance(db, u.id)).toMatchObject({ freeCredits: 8, heldCredits: 2 });
  });

  it('refuses an unknown hold, another user’s hold and a row that is not a hold (HOLD_NOT_FOUND)', async () => {
    const u = await createUser(db);
    const other = await createUser(db);
    const hold = await holdCredits(db, { userId: other.id, amount: 2, featureType: doc });
    const deduction = await deductCredits(db, { userId: u.id, amount: 1, featureType: doc });
    const cases = [
      [{ holdId: crypto.randomUUID() }, 'not_found'],
      [{ holdId: hold.holdId, userId: u.id }, 'other_user'],
      [{ holdId: deduction.transaction.id }, 'not_a_hold'],
    ] as const;
    for (const [input, reason] of cases) {
      const error = await settleCreditHold(db, input).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(HoldNotFoundError);
      expect(error).toMatchObject({ code: 'HOLD_NOT_FOUND', reason });
      expect(await voidCreditHold(db, input).catch((e: unknown) => e)).toMatchObject({ reason });
    }
    expect(await trailSize(db, u.id)).toBe(1);
    expect(await trailSize(db, other.id)).toBe(1);
  });

  it('refuses a hold past its expiry (HOLD_EXPIRED) and writes nothing, not even the expiry', async () => {
    const u = await createUser(db);
    const hold = await shortHold(u.id, 2);
    await sleep(1100);
    const error = await settleCreditHold(db, { holdId: hold.holdId }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HoldExpiredError);
    expect(error).toMatchObject({ code: 'HOLD_EXPIRED', expiresAt: hold.expiresAt });
    expect(await trailSize(db, u.id)).toBe(1);
  });
});

describe('voidCreditHold', () => {
  it('gives the whole hold back, with its reason, linked to the hold', async () => {
    const u = await createUser(db);
    const hold = await holdCredits(db, { userId: u.id, amount: 4, featureType: doc });
    const voided = await voidCreditHold(db, { holdId: hold.holdId, reason: 'user cancelled' });
    expect(voided.balance).toBe(10);
    expect(voided.transaction).toMatchObject({
      operation: 'void',
      amount: 4,
      holdId: hold.holdId,
      metadata: { reason: 'user cancelled' },
    });
    await expectLedgerSound();
  });

  it('after a void, a second void and a settlement throw HOLD_ALREADY_VOIDED and write nothing', async () => {
    const u = await createUser(db);
    const hold = await holdCredits(db, { userId: u.id, amount: 4, featureType: doc });
    await voidCreditHold(db, { holdId: hold.holdId });
    await expect(voidCreditHold(db, { holdId: hold.holdId })).rejects.toThrow(
      HoldAlreadyVoidedError,
    );
    await expect(settleCreditHold(db, { holdId: hold.holdId })).rejects.toThrow(
      HoldAlreadyVoidedError,
    );
    expect(await trailSize(db, u.id)).toBe(2);
    expect(await storedCredits(u.id)).toBe(10);
  });

  it('after a settlement, a void throws HOLD_ALREADY_SETTLED and writes nothing', async () => {
    const u = await createUser(db);
    const hold = await holdCredits(db, { userId: u.id, amount: 4, featureType: doc });
    await settleCreditHold(db, { holdId: hold.holdId, amount: 1 });
    await expect(voidCreditHold(db, { holdId: hold.holdId })).rejects.toThrow(
      HoldAlreadySettledError,
    );
    expect(await trailSize(db, u.id)).toBe(2);
    expect(await storedCredits(u.id)).toBe(9);
  });
});

describe('expiry, exactly once', () => {
  it('a balance read gives a due hold back, with one expire row linked to it', async () => {
    const u = await createUser(db);
    const hold = await shortHold(u.id, 3);
    await sleep(1100);
    expect(await storedCredits(u.id)).toBe(7);
    expect(await getCreditBalance(db, u.id)).toMatchObject({ freeCredits: 10, heldCredits: 0 });
    expect(await getCreditBalance(db, u.id)).toMatchObject({ freeCredits: 10, heldCredits: 0 });
    const rows = await trail(u.id);
    expect(rows.map((r) => [r.operation, r.amount, r.hold_id])).toEqual([
      ['hold', 3, null],
      ['expire', 3, hold.holdId],
    ]);
    await expectLedgerSound();
  });

  it('any ledger write of the user gives due holds back first, before its own row', async () => {
    const u = await createUser(db);
    const hold = await shortHold(u.id, 9);
    await sleep(1100);
    // 1 credit left before the expiry: the deduction of 5 is covered only by the hold's return.
    const deduction = await deductCredits(db, { userId: u.id, amount: 5, featureType: doc });
    expect(deduction.balance).toBe(5);
    expect((await trail(u.id)).map((r) => [r.operation, r.amount, r.balance_after])).toEqual([
      ['hold', 9, 1],
      ['expire', 9, 10],
      ['deduct', 5, 5],
    ]);
    expect((await trail(u.id))[1]?.hold_id).toBe(hold.holdId);
  });

  it('expireCreditHolds gives back every due hold of every user, once, and leaves the rest', async () => {
    const a = await createUser(db);
    const b = await createUser(db);
    const due = [
      await shortHold(a.id, 1),
      await shortHold(a.id, 2),
      await shortHold(b.id, 3, 'chat_message'),
    ];
    const open = await holdCredits(db, { userId: b.id, amount: 4, featureType: doc });
    await sleep(1100);
    const { expired } = await expireCreditHolds(db, { limit: 100 });
    const mine = expired.filter((r) => r.userId === a.id || r.userId === b.id);
    expect(mine.map((r) => r.holdId).sort()).toEqual(due.map((h) => h.holdId).sort());
    expect(mine.every((r) => r.operation === 'expire')).toBe(true);
    expect((await expireCreditHolds(db)).expired).toEqual([]);
    expect(await balances(db, a.id)).toMatchObject({ freeCredits: 10 });
    expect(await balances(db, b.id)).toMatchObject({ freeCredits: 6, freeChatMessages: 20 });
    expect(await getCreditBalance(db, b.id)).toMatchObject({
      heldCredits: open.transaction.amount,
    });
    await expectLedgerSound();
  });

  it('a balance read in a read-only transaction (a replica) reports a due hold as held, writing nothing', async () => {
    const u = await createUser(db);
    await shortHold(u.id, 3);
    await sleep(1100);
    const balance = await db.transaction((tx) => getCreditBalance(tx, u.id), {
      accessMode: 'read only',
    });
    expect(balance).toMatchObject({ freeCredits: 7, heldCredits: 3 });
    expect(await trailSize(db, u.id)).toBe(1);
  });

  it('expireCreditHolds stops at its limit', async () => {
    const u = await createUser(db);
    for (let i = 0; i < 3; i++) await shortHold(u.id, 1);
    await sleep(1100);
    expect((await expireCreditHolds(db, { limit: 2, userId: u.id })).expired).toHaveLength(2);
    expect((await expireCreditHolds(db, { limit: 2, userId: u.id })).expired).toHaveLength(1);
  });

  it('pnpm credits:expire-holds prints each hold it gave back and a summary', async () => {
    const u = await createUser(db);
    const hold = await shortHold(u.id, 2);
    await sleep(1100);
    const result = await runScript('scripts/credits-expire-holds.ts', [], {
      env: { DATABASE_URL: database().url },
    });
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(
      `expired hold ${hold.holdId} of user ${u.id}: 2 credits back (trail seq 4)`,
    );
    expect(result.stdout).toMatch(
      /credits:expire-holds: .+: expired \d+ holds? \(\d+ credits and \d+ chat messages given back\) in \d+ ms\./,
    );
    expect(await balances(db, u.id)).toMatchObject({ freeCredits: 10 });
  });
});

/** Starts reservation-child.ts and kills it with SIGKILL once its work has started. */
async function killedMidWork(userId: string): Promise<string> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', 'test/credits/reservation-child.ts', database().url, userId, '1000'],
    { cwd: packageDir, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const holdId = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const match = /working (\S+)\n/.exec(out);
      if (match?.[1]) resolve(match[1]);
    });
    child.on('exit', (code) => reject(new Error(`the child exited (${code}) before its work`)));
  });
  const exited = new Promise((resolve) => child.on('exit', (_, signal) => resolve(signal)));
  child.kill('SIGKILL');
  expect(await exited).toBe('SIGKILL');
  return holdId;
}

describe('a process killed in the middle of withCreditReservation', () => {
  it("its hold expires: the user's next balance read shows the credits back, with one linked expire row", async () => {
    const u = await createUser(db);
    const holdId = await killedMidWork(u.id);
    expect(await storedCredits(u.id)).toBe(7);
    await sleep(1100);
    expect(await getCreditBalance(db, u.id)).toMatchObject({ freeCredits: 10, heldCredits: 0 });
    const rows = await trail(u.id);
    expect(rows.map((r) => [r.operation, r.amount, r.hold_id])).toEqual([
      ['hold', 3, null],
      ['expire', 3, holdId],
    ]);
    await expectLedgerSound();
  });

  it('with no activity of the user, expireCreditHolds alone brings the credits back', async () => {
    const u = await createUser(db);
    const holdId = await killedMidWork(u.id);
    await sleep(1100);
    expect(await storedCredits(u.id)).toBe(7);
    const { expired } = await expireCreditHolds(db);
    expect(expired.filter((r) => r.holdId === holdId)).toHaveLength(1);
    expect(await storedCredits(u.id)).toBe(10);
    expect((await trail(u.id)).filter((r) => r.hold_id === holdId)).toHaveLength(1);
    await expectLedgerSound();
  });
});

describe('withCreditReservation', () => {
  it('settles for what the work reports it used, and gives the rest back', async () => {
    const u = await createUser(db);
    const out = await withCreditReservation(
      db,
      { userId: u.id, amount: 5, featureType: doc },
      async (reservation) => {
        expect(reservation.balance).toBe(5);
        reservation.use(2);
        return 'done';
      },
    );
    expect(out).toBe('done');
    expect((await trail(u.id)).map((r) => [r.operation, r.amount, r.balance_after])).toEqual([
      ['hold', 5, 5],
      ['settle', 2, 8],
    ]);
  });

  it('voids the hold when the work reports it used nothing', async () => {
    const u = await createUser(db);
    await withCreditReservation(db, { userId: u.id, amount: 5, featureType: doc }, async (r) => {
      r.use(0);
    });
    expect((await trail(u.id)).map((r) => [r.operation, r.metadata])).toEqual([
      ['hold', null],
      ['void', { reason: 'unused' }],
    ]);
  });

  it('refuses a used amount above the hold inside the work', async () => {
    const u = await createUser(db);
    const error = await withCreditReservation(
      db,
      { userId: u.id, amount: 2, featureType: doc },
      async (r) => r.use(3),
    ).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidInputError);
    // The work threw, so its hold was given back.
    expect(await storedCredits(u.id)).toBe(10);
  });

  it('throws HOLD_EXPIRED when the work outlived its hold; the credits are back', async () => {
    const u = await createUser(db);
    const error = await withCreditReservation(
      db,
      { userId: u.id, amount: 2, featureType: doc },
      () => sleep(1100),
      { expiresInMs: 1000 },
    ).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HoldExpiredError);
    expect(await getCreditBalance(db, u.id)).toMatchObject({ freeCredits: 10, heldCredits: 0 });
  });

  for (const isolationLevel of ['read committed', 'repeatable read', 'serializable'] as const) {
    describe(`inside a caller's ${isolationLevel} transaction`, () => {
      it('settles with the transaction', async () => {
        const u = await createUser(db);
        await db.transaction(
          async (tx) => {
            await withCreditReservation(
              tx,
              { userId: u.id, amount: 3, featureType: doc },
              async (r) => r.use(1),
            );
          },
          { isolationLevel },
        );
        expect((await trail(u.id)).map((r) => r.operation)).toEqual(['hold', 'settle']);
        expect(await storedCredits(u.id)).toBe(9);
      });

      it('voids when the work throws, and the transaction stays usable', async () => {
        const u = await createUser(db);
        const failure = new Error('the LLM failed');
        await db.transaction(
          async (tx: Transaction) => {
            await expect(
              withCreditReservation(tx, { userId: u.id, amount: 3, featureType: doc }, async () => {
                throw failure;
              }),
            ).rejects.toBe(failure);
            await grantCredits(tx, { userId: u.id, amount: 1, featureType: doc });
          },
          { isolationLevel },
        );
        expect((await trail(u.id)).map((r) => r.operation)).toEqual(['hold', 'void', 'grant']);
        expect(await storedCredits(u.id)).toBe(11);
        await expectLedgerSound();
      });
    });
  }
});

describe('a hold seen by a second connection', () => {
  it('is settled by a process other than the one that took it', async () => {
    const u = await createUser(db);
    const hold = await holdCredits(db, { userId: u.id, amount: 3, featureType: doc });
    const other = createDatabase(database().url, { max: 1 });
    try {
      await settleCreditHold(other.db, { holdId: hold.holdId, userId: u.id, amount: 1 });
    } finally {
      await other.close();
    }
    expect(await storedCredits(u.id)).toBe(9);
  });
});
