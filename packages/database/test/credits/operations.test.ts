import { sql } from 'drizzle-orm';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/client.js';
import {
  BalanceOutOfRangeError,
  deductCredits,
  getCreditBalance,
  grantCredits,
  IdempotencyConflictError,
  InsufficientCreditsError,
  InvalidRefundTargetError,
  RefundExceedsDeductionError,
  ReservationRefundError,
  refundCredits,
  UnsupportedIsolationError,
  UserNotFoundError,
  withCreditReservation,
} from '../../src/credits/index.js';
import { useMigratedDatabase } from '../support.js';
import { balances, createUser, trailSize } from './fixtures.js';

const database = useMigratedDatabase();
let db: Database;
beforeAll(async () => {
  db = database().db;
});

const unknownUser = '00000000-0000-4000-8000-000000000001';

describe('deductCredits', () => {
  it('spends free_credits for a feature other than chat_message and records the audit row', async () => {
    const u = await createUser(db);
    const { transaction, balance, replayed } = await deductCredits(db, {
      userId: u.id,
      amount: 3,
      featureType: 'document_generation',
      metadata: { model: 'gpt-x', tokens: 812 },
    });
    expect(balance).toBe(7);
    expect(replayed).toBe(false);
    expect(transaction).toMatchObject({
      userId: u.id,
      amount: 3,
      operation: 'deduct',
      featureType: 'document_generation',
      metadata: { model: 'gpt-x', tokens: 812 },
      balanceAfter: 7,
      refundOf: null,
    });
    expect(await balances(db, u.id)).toEqual({ freeCredits: 7, freeChatMessages: 20 });
  });

  it('spends free_chat_messages for chat_message', async () => {
    const u = await createUser(db);
    const { balance } = await deductCredits(db, {
      userId: u.id,
      amount: 1,
      featureType: 'chat_message',
    });
    expect(balance).toBe(19);
    expect(await balances(db, u.id)).toEqual({ freeCredits: 10, freeChatMessages: 19 });
  });

  it('spends the whole balance down to exactly 0', async () => {
    const u = await createUser(db);
    expect(
      (await deductCredits(db, { userId: u.id, amount: 10, featureType: 'chat_tool_call' }))
        .balance,
    ).toBe(0);
  });

  it('throws InsufficientCreditsError with required and available, writing nothing', async () => {
    const u = await createUser(db);
    const error = await deductCredits(db, {
      userId: u.id,
      amount: 11,
      featureType: 'workstream_clustering',
    }).catch((e) => e);
    expect(error).toBeInstanceOf(InsufficientCreditsError);
    expect(error).toMatchObject({
      code: 'INSUFFICIENT_CREDITS',
      required: 11,
      available: 10,
      balance: 'free_credits',
    });
    expect(await balances(db, u.id)).toEqual({ freeCredits: 10, freeChatMessages: 20 });
    expect(await trailSize(db, u.id)).toBe(0);
  });

  it('throws UserNotFoundError for a user that does not exist, writing nothing', async () => {
    const before = await trailSize(db);
    const error = await deductCredits(db, {
      userId: unknownUser,
      amount: 1,
      featureType: 'chat_tool_call',
    }).catch((e) => e);
    expect(error).toBeInstanceOf(UserNotFoundError);
    expect(error).toMatchObject({ code: 'USER_NOT_FOUND', userId: unknownUser });
    expect(await trailSize(db)).toBe(before);
  });

  it("inside a caller's transaction, a refused deduction leaves the transaction usable", async () => {
    const u = await createUser(db);
    await db.transaction(async (tx) => {
      await deductCredits(tx, { userId: u.id, amount: 4, featureType: 'chat_tool_call' });
      await expect(
        deductCredits(tx, { userId: u.id, amount: 100, featureType: 'chat_tool_call' }),
      ).rejects.toThrow(InsufficientCreditsError);
      await deductCredits(tx, { userId: u.id, amount: 1, featureType: 'chat_tool_call' });
    });
    expect(await balances(db, u.id)).toMatchObject({ freeCredits: 5 });
    expect(await trailSize(db, u.id)).toBe(2);
  });

  it("inside a caller's transaction that rolls back, leaves neither balance change nor audit row", async () => {
    const u = await createUser(db);
    await db
      .transaction(async (tx) => {
        await deductCredits(tx, { userId: u.id, amount: 4, featureType: 'chat_tool_call' });
        throw new Error('the request failed later');
      })
      .catch(() => {});
    expect(await balances(db, u.id)).toMatchObject({ freeCredits: 10 });
    expect(await trailSize(db, u.id)).toBe(0);
  });
});

describe('idempotency', () => {
  it('a retry with the same key applies once and returns the first result', async () => {
    const u = await createUser(db);
    const input = {
      userId: u.id,
      amount: 2,
      featureType: 'chat_tool_call' as const,
      idempotencyKey: 'req-1',
    };
    const first = await deductCredits(db, input);
    const retry = await deductCredits(db, input);
    expect(retry.replayed).toBe(true);
    expect(retry.transaction).toEqual(first.transaction);
    expect(retry.balance).toBe(8);
    expect(await balances(db, u.id)).toMatchObject({ freeCredits: 8 });
    expect(await trailSize(db, u.id)).toBe(1);
  });

  it('the same key with different arguments throws IdempotencyConflictError, writing nothing', async () => {
    const u = await createUser(db);
    await deductCredits(db, {
      userId: u.id,
      amount: 2,
      featureType: 'chat_tool_call',
      idempotencyKey: 'req-2',
    });
    for (const changed of [
      () =>
        deductCredits(db, {
          userId: u.id,
          amount: 3,
          featureType: 'chat_tool_call',
          idempotencyKey: 'req-2',
        }),
      () =>
        deductCredits(db, {
          userId: u.id,
          amount: 2,
          featureType: 'chat_message',
          idempotencyKey: 'req-2',
        }),
      () =>
        grantCredits(db, {
          userId: u.id,
          amount: 2,
          featureType: 'chat_tool_call',
          idempotencyKey: 'req-2',
        }),
      () =>
        deductCredits(db, {
          userId: u.id,
          amount: 2,
          featureType: 'chat_tool_call',
          idempotencyKey: 'req-2',
          metadata: { other: true },
        }),
    ]) {
      const error = await changed().catch((e) => e);
      expect(error).toBeInstanceOf(IdempotencyConflictError);
      expect(error).toMatchObject({ code: 'IDEMPOTENCY_CONFLICT', idempotencyKey: 'req-2' });
    }
    expect(await trailSize(db, u.id)).toBe(1);
    expect(await balances(db, u.id)).toMatchObject({ freeCredits: 8 });
  });

  it('metadata with the same content in another key order is the same request', async () => {
    const u = await createUser(db);
    const base = {
      userId: u.id,
      amount: 1,
      featureType: 'chat_tool_call' as const,
      idempotencyKey: 'req-3',
    };
    await deductCredits(db, { ...base, metadata: { a: 1, b: [1, 2] } });
    expect((await deductCredits(db, { ...base, metadata: { b: [1, 2], a: 1 } })).replayed).toBe(
      true,
    );
  });

  it('keys are per user: two users may use the same key', async () => {
    const [a, b] = [await createUser(db), await createUser(db)];
    await deductCredits(db, {
      userId: a.id,
      amount: 1,
      featureType: 'chat_tool_call',
      idempotencyKey: 'same',
    });
    const other = await deductCredits(db, {
      userId: b.id,
      amount: 1,
      featureType: 'chat_tool_call',
      idempotencyKey: 'same',
    });
    expect(other.replayed).toBe(false);
  });

  it('a retry of a deduction that spent the whole balance is a replay, not insufficient credits', async () => {
    const u = await createUser(db);
    const input = {
      userId: u.id,
      amount: 10,
      featureType: 'chat_tool_call' as const,
      idempotencyKey: 'all',
    };
    const first = await deductCredits(db, input);
    const retry = await deductCredits(db, input);
    expect(retry).toMatchObject({
      replayed: true,
      balance: 0,
      transaction: { id: first.transaction.id },
    });
  });

  it('a retry of a refund that used up its deduction is a replay, not an excess refund', async () => {
    const u = await createUser(db);
    const d = await deductCredits(db, { userId: u.id, amount: 3, featureType: 'chat_tool_call' });
    const input = {
      userId: u.id,
      amount: 3,
      featureType: 'chat_tool_call' as const,
      refundOf: d.transaction.id,
      idempotencyKey: 'refund-all',
    };
    await refundCredits(db, input);
    expect((await refundCredits(db, input)).replayed).toBe(true);
  });

  it('a key whose first attempt failed can be used again', async () => {
    const u = await createUser(db);
    const input = {
      userId: u.id,
      amount: 15,
      featureType: 'chat_tool_call' as const,
      idempotencyKey: 'req-4',
    };
    await expect(deductCredits(db, input)).rejects.toThrow(InsufficientCreditsError);
    await grantCredits(db, { userId: u.id, amount: 5, featureType: 'chat_tool_call' });
    expect((await deductCredits(db, input)).balance).toBe(0);
  });

  it("a replay inside a caller's transaction leaves it usable", async () => {
    const u = await createUser(db);
    const input = {
      userId: u.id,
      amount: 1,
      featureType: 'chat_tool_call' as const,
      idempotencyKey: 'req-5',
    };
    await deductCredits(db, input);
    await db.transaction(async (tx) => {
      expect((await deductCredits(tx, input)).replayed).toBe(true);
      await grantCredits(tx, { userId: u.id, amount: 1, featureType: 'chat_tool_call' });
    });
    expect(await balances(db, u.id)).toMatchObject({ freeCredits: 10 });
  });
});

describe('refundCredits', () => {
  it('gives back to the balance the feature spends', async () => {
    const u = await createUser(db);
    await deductCredits(db, { userId: u.id, amount: 3, featureType: 'chat_message' });
    const { balance, transaction } = await refundCredits(db, {
      userId: u.id,
      amount: 3,
      featureType: 'chat_message',
    });
    expect(balance).toBe(20);
    expect(transaction.operation).toBe('refund');
  });

  it('with refundOf, records the link and caps the refunds at the deduction', async () => {
    const u = await createUser(db);
    const deduction = await deductCredits(db, {
      userId: u.id,
      amount: 5,
      featureType: 'document_generation',
    });
    const refundOf = deduction.transaction.id;
    const first = await refundCredits(db, {
      userId: u.id,
      amount: 3,
      featureType: 'document_generation',
      refundOf,
    });
    expect(first.transaction.refundOf).toBe(refundOf);
    await refundCredits(db, {
      userId: u.id,
      amount: 2,
      featureType: 'document_generation',
      refundOf,
    });
    const error = await refundCredits(db, {
      userId: u.id,
      amount: 1,
      featureType: 'document_generation',
      refundOf,
    }).catch((e) => e);
    expect(error).toBeInstanceOf(RefundExceedsDeductionError);
    expect(error).toMatchObject({ deducted: 5, refunded: 5, requested: 1 });
    expect(await balances(db, u.id)).toMatchObject({ freeCredits: 10 });
    expect(await trailSize(db, u.id)).toBe(3);
  });

  it.each([
    ["another user's deduction", 'other_user'],
    ['a grant', 'not_a_deduction'],
    ['a deduction of another balance', 'other_feature'],
    ['a transaction that does not exist', 'not_found'],
  ] as const)('refuses refundOf naming %s', async (_, reason) => {
    const u = await createUser(db);
    const other = await createUser(db);
    const target = {
      other_user: async () =>
        (await deductCredits(db, { userId: other.id, amount: 1, featureType: 'chat_tool_call' }))
          .transaction.id,
      not_a_deduction: async () =>
        (await grantCredits(db, { userId: u.id, amount: 1, featureType: 'chat_tool_call' }))
          .transaction.id,
      other_feature: async () =>
        (await deductCredits(db, { userId: u.id, amount: 1, featureType: 'chat_message' }))
          .transaction.id,
      not_found: async () => '00000000-0000-4000-8000-0000000000ff',
    }[reason];
    const refundOf = await target();
    const before = await trailSize(db);
    const error = await refundCredits(db, {
      userId: u.id,
      amount: 1,
      featureType: 'chat_tool_call',
      refundOf,
    }).catch((e) => e);
    expect(error).toBeInstanceOf(InvalidRefundTargetError);
    expect(error).toMatchObject({ code: 'INVALID_REFUND_TARGET', reason, refundOf });
    expect(await trailSize(db)).toBe(before);
  });

  it('refuses a capped refund under REPEATABLE READ, where the cap could not be checked safely', async () => {
    const u = await createUser(db);
    const deduction = await deductCredits(db, {
      userId: u.id,
      amount: 2,
      featureType: 'chat_tool_call',
    });
    const error = await db
      .transaction(
        (tx) =>
          refundCredits(tx, {
            userId: u.id,
            amount: 1,
            featureType: 'chat_tool_call',
            refundOf: deduction.transaction.id,
          }),
        { isolationLevel: 'repeatable read' },
      )
      .catch((e) => e);
    expect(error).toBeInstanceOf(UnsupportedIsolationError);
  });
});

describe('grantCredits', () => {
  it('adds to the balance', async () => {
    const u = await createUser(db);
    const { balance, transaction } = await grantCredits(db, {
      userId: u.id,
      amount: 100,
      featureType: 'document_generation',
      metadata: { reason: 'monthly top-up' },
    });
    expect(balance).toBe(110);
    expect(transaction.operation).toBe('grant');
  });

  it('throws BalanceOutOfRangeError past the largest integer, writing nothing', async () => {
    const u = await createUser(db);
    const error = await grantCredits(db, {
      userId: u.id,
      amount: 2_147_483_647,
      featureType: 'chat_tool_call',
    }).catch((e) => e);
    expect(error).toBeInstanceOf(BalanceOutOfRangeError);
    expect(await trailSize(db, u.id)).toBe(0);
  });

  it('throws UserNotFoundError for a user that does not exist', async () => {
    await expect(
      grantCredits(db, { userId: unknownUser, amount: 1, featureType: 'chat_tool_call' }),
    ).rejects.toThrow(UserNotFoundError);
  });
});

describe('withCreditReservation', () => {
  it('settles the whole hold when the work succeeds, and returns its result', async () => {
    const u = await createUser(db);
    const out = await withCreditReservation(
      db,
      { userId: u.id, amount: 2, featureType: 'document_generation' },
      async (r) => {
        expect(r.balance).toBe(8);
        return 'a brag doc';
      },
    );
    expect(out).toBe('a brag doc');
    expect(await balances(db, u.id)).toMatchObject({ freeCredits: 8 });
  });

  it('voids the hold, linked to it, when the work throws, and rethrows', async () => {
    const u = await createUser(db);
    const failure = new Error('LLM timed out');
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
    const rows = (await db.execute(
      sql`select id, operation, hold_id, metadata from "CreditTransaction" where user_id = ${u.id} and seq > 2 order by seq`,
    )) as unknown as {
      id: string;
      operation: string;
      hold_id: string | null;
      metadata: Record<string, unknown>;
    }[];
    expect(rows.map((r) => r.operation)).toEqual(['hold', 'void']);
    expect(rows[1]?.hold_id).toBe(rows[0]?.id);
    expect(rows[1]?.metadata).toMatchObject({
      reason: 'reservation_failed',
      error: 'LLM timed out',
    });
  });

  it("inside a caller's transaction that the work aborted, rethrows the work's error (the rollback undoes the reservation)", async () => {
    const u = await createUser(db);
    const error = await db
      .transaction(async (tx) =>
        withCreditReservation(
          tx,
          { userId: u.id, amount: 2, featureType: 'chat_tool_call' },
          async () => {
            await tx.execute(sql`select 1/0`); // the work's own SQL fails and aborts the transaction
          },
        ),
      )
      .catch((e) => e);
    expect(error).not.toBeInstanceOf(ReservationRefundError);
    expect(String(error.cause?.message ?? error.message)).toContain('division by zero');
    expect(await balances(db, u.id)).toMatchObject({ freeCredits: 10 });
    expect(await trailSize(db, u.id)).toBe(0);
  });

  it('does not run the work when the reservation cannot be made', async () => {
    const u = await createUser(db);
    let ran = false;
    await expect(
      withCreditReservation(
        db,
        { userId: u.id, amount: 50, featureType: 'document_generation' },
        async () => {
          ran = true;
        },
      ),
    ).rejects.toThrow(InsufficientCreditsError);
    expect(ran).toBe(false);
  });
});

describe('getCreditBalance', () => {
  it('returns both balances', async () => {
    const u = await createUser(db, { freeCredits: 3, freeChatMessages: 4 });
    expect(await getCreditBalance(db, u.id)).toEqual({
      freeCredits: 3,
      freeChatMessages: 4,
      heldCredits: 0,
      heldChatMessages: 0,
      plan: { plan: 'free', unlimited: false, until: null },
      grants: expect.any(Array),
    });
  });

  it('throws UserNotFoundError for a user that does not exist', async () => {
    await expect(getCreditBalance(db, unknownUser)).rejects.toThrow(UserNotFoundError);
  });
});
