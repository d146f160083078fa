import { sql } from 'drizzle-orm';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type Database, type DatabaseHandle } from '../../src/client.js';
import {
  CreditsError,
  deductCredits,
  expireCreditHolds,
  getCreditBalance,
  grantCredits,
  HoldClosedError,
  holdCredits,
  refundCredits,
  settleCreditHold,
  verifyLedger,
  voidCreditHold,
} from '../../src/credits/index.js';
import { useMigratedDatabase } from '../support.js';
import { createUser, ledgerMismatches, trailSize } from './fixtures.js';

const database = useMigratedDatabase();
let db: Database;

beforeAll(() => {
  db = database().db;
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const HOUR = 60 * 60 * 1000;

type Row = Record<string, unknown>;
const rows = async (query: ReturnType<typeof sql>) => (await db.execute(query)) as unknown as Row[];

/** How the trail closed the hold (settle, void, expire), or null while it is open. */
async function closingOf(holdId: string): Promise<{ operation: string; amount: number } | null> {
  const [row] = await rows(
    sql`select operation::text, amount from "CreditTransaction" where hold_id = ${holdId}`,
  );
  return row ? { operation: String(row.operation), amount: Number(row.amount) } : null;
}

/** The sums of the user's open holds as the trail tells them: hold rows nothing closed. */
async function openHoldSums(userId: string) {
  const [row] = await rows(sql`
    select coalesce(sum(h.amount) filter (where h.feature_type <> 'chat_message'), 0)::int as credits,
           coalesce(sum(h.amount) filter (where h.feature_type = 'chat_message'), 0)::int as chats
      from "CreditTransaction" h
     where h.user_id = ${userId} and h.operation = 'hold'
       and not exists (select 1 from "CreditTransaction" c where c.hold_id = h.id)`);
  return { credits: Number(row?.credits), chats: Number(row?.chats) };
}

async function userRow(userId: string) {
  const [row] = await rows(
    sql`select free_credits, free_chat_messages from "User" where id = ${userId}`,
  );
  return { credits: Number(row?.free_credits), chats: Number(row?.free_chat_messages) };
}

/** The server's clock, as epoch milliseconds and as text PostgreSQL reads back exactly. */
async function serverNow(): Promise<{ ms: number; at: string }> {
  const [row] = await rows(
    sql`select (extract(epoch from clock_timestamp()) * 1000)::float8 as ms, clock_timestamp()::text as at`,
  );
  return { ms: Number(row?.ms), at: String(row?.at) };
}

/** The balance as a replica would read it: in a read-only transaction, which expires nothing. */
const readOnlyBalance = (userId: string) =>
  db.transaction((tx) => getCreditBalance(tx, userId), { accessMode: 'read only' });

const CLOSED_CODE: Record<string, string> = {
  settle: 'HOLD_ALREADY_SETTLED',
  void: 'HOLD_ALREADY_VOIDED',
  expire: 'HOLD_EXPIRED',
};

describe('property: holds mixed with every other credit operation keep the ledger explained', () => {
  const who = fc.constantFrom(0, 1);
  const step = fc.oneof(
    {
      weight: 4,
      arbitrary: fc.record({
        op: fc.constant('hold' as const),
        who,
        amount: fc.integer({ min: 1, max: 8 }),
        chat: fc.boolean(),
        short: fc.boolean(),
      }),
    },
    {
      weight: 3,
      arbitrary: fc.record({
        op: fc.constant('settle' as const),
        pick: fc.nat(),
        charge: fc.constantFrom('all', 'part', 'exact', 'over'),
      }),
    },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('void' as const), pick: fc.nat() }) },
    {
      weight: 1,
      arbitrary: fc.record({
        op: fc.constant('expire' as const),
        who: fc.option(who, { nil: undefined }),
      }),
    },
    {
      weight: 3,
      arbitrary: fc.record({
        op: fc.constantFrom('deduct' as const, 'refund' as const, 'grant' as const),
        who,
        amount: fc.integer({ min: 1, max: 12 }),
        chat: fc.boolean(),
      }),
    },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('balance' as const), who }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('wait' as const) }) },
  );

  it('after every step: balances equal their trails, held amounts equal the open holds, and the ledger verifies', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 16 }), async (steps) => {
        const users = [(await createUser(db)).id, (await createUser(db)).id];
        const holds: { id: string; userId: string; amount: number; expiresAt: Date }[] = [];
        const deductions = new Map<string, string>();
        let waited = false;

        for (const s of steps) {
          const trailBefore = await trailSize(db);
          let wrote = true;
          try {
            switch (s.op) {
              case 'hold': {
                const userId = users[s.who] ?? '';
                const r = await holdCredits(db, {
                  userId,
                  amount: s.amount,
                  featureType: s.chat ? 'chat_message' : 'chat_tool_call',
                  expiresInMs: s.short ? 1000 : HOUR,
                });
                holds.push({ id: r.holdId, userId, amount: s.amount, expiresAt: r.expiresAt });
                break;
              }
              case 'settle':
              case 'void': {
                const target = holds[s.pick % Math.max(holds.length, 1)];
                if (!target) {
                  wrote = false;
                  break;
                }
                const closedBefore = await closingOf(target.id);
                const msToExpiry = target.expiresAt.getTime() - (await serverNow()).ms;
                const amount =
                  s.op === 'void'
                    ? undefined
                    : {
                        all: undefined,
                        part: Math.max(1, target.amount - 1),
                        exact: target.amount,
                        over: target.amount + 1,
                      }[s.charge];
                const outcome = await (s.op === 'void'
                  ? voidCreditHold(db, { holdId: target.id, reason: 'property' })
                  : settleCreditHold(db, { holdId: target.id, amount })
                ).then(
                  (r) => ({ ok: true as const, replayed: r.replayed }),
                  (error: unknown) => ({ ok: false as const, error }),
                );
                if (outcome.ok) {
                  wrote = !outcome.replayed;
                  // Only an open hold before its expiry closes; only a settlement of the same
                  // amount replays.
                  if (outcome.replayed) expect(closedBefore?.operation).toBe('settle');
                  else
                    expect({ closedBefore, due: msToExpiry < -250 }).toEqual({
                      closedBefore: null,
                      due: false,
                    });
                  break;
                }
                const error = outcome.error;
                if (!(error instanceof CreditsError)) throw error;
                wrote = false;
                if (closedBefore) {
                  expect(error.code).toBe(CLOSED_CODE[closedBefore.operation]);
                } else if (msToExpiry < -250) {
                  expect(error.code).toBe('HOLD_EXPIRED');
                } else if (msToExpiry > 250) {
                  expect(error.code).toBe('SETTLE_EXCEEDS_HOLD');
                } else {
                  // Within the clock's margin of its expiry: either answer is right.
                  expect(['HOLD_EXPIRED', 'SETTLE_EXCEEDS_HOLD']).toContain(error.code);
                }
                break;
              }
              case 'expire': {
                const userId = s.who === undefined ? undefined : users[s.who];
                const r = await expireCreditHolds(db, userId ? { userId } : {});
                wrote = r.expired.length > 0;
                for (const row of r.expired) {
                  const expired = holds.find((h) => h.id === row.holdId);
                  // Other properties' runs share the database: only this run's holds are known.
                  if (expired) {
                    expect(row.amount).toBe(expired.amount);
                    expect(row.createdAt.getTime()).toBeGreaterThanOrEqual(
                      expired.expiresAt.getTime(),
                    );
                  }
                }
                break;
              }
              case 'deduct':
              case 'refund':
              case 'grant': {
                const userId = users[s.who] ?? '';
                const featureType = s.chat ? 'chat_message' : 'chat_tool_call';
                const input = { userId, amount: s.amount, featureType } as const;
                if (s.op === 'deduct') {
                  const r = await deductCredits(db, input);
                  deductions.set(`${userId}/${featureType}`, r.transaction.id);
                } else if (s.op === 'grant') {
                  await grantCredits(db, input);
                } else {
                  const refundOf = deductions.get(`${userId}/${featureType}`);
                  await refundCredits(db, { ...input, ...(refundOf ? { refundOf } : {}) });
                }
                break;
              }
              case 'balance': {
                const userId = users[s.who] ?? '';
                const started = await serverNow();
                const balance = await getCreditBalance(db, userId);
                // The read gave back every hold of the user that was due when it started.
                const [due] = await rows(sql`
                  select count(*)::int as n from "CreditHold"
                   where user_id = ${userId} and expires_at <= ${started.at}::timestamptz`);
                expect(due?.n).toBe(0);
                const open = await openHoldSums(userId);
                expect([balance.heldCredits, balance.heldChatMessages]).toEqual([
                  open.credits,
                  open.chats,
                ]);
                wrote = false;
                break;
              }
              case 'wait': {
                wrote = false;
                const now = Date.now();
                // Waiting costs a second: only once a run, and only when a short hold is open.
                if (waited || !holds.some((h) => h.expiresAt.getTime() - now < 1500)) break;
                waited = true;
                await sleep(1100);
                break;
              }
            }
          } catch (error) {
            if (!(error instanceof CreditsError)) throw error;
            wrote = false;
            // Insufficient credits, a refund past its deduction, a balance out of range:
            // typed, and nothing written.
            expect(error).not.toBeInstanceOf(HoldClosedError);
          }
          if (!wrote && s.op !== 'balance') {
            // A refused call writes nothing (any expiry it made is undone with it).
            expect(await trailSize(db)).toBe(trailBefore);
          }

          expect(await ledgerMismatches(db)).toEqual([]);
          for (const userId of users) {
            const balance = await readOnlyBalance(userId);
            const open = await openHoldSums(userId);
            const row = await userRow(userId);
            expect(balance).toEqual({
              freeCredits: row.credits,
              freeChatMessages: row.chats,
              heldCredits: open.credits,
              heldChatMessages: open.chats,
              plan: { plan: 'free', unlimited: false, until: null },
              grants: expect.any(Array),
            });
            // Each balance is the sum of what remains of its live grants.
            const live = (name: string) =>
              balance.grants
                .filter((g) => g.balance === name)
                .reduce((sum, g) => sum + g.remaining, 0);
            expect(live('free_credits')).toBe(balance.freeCredits);
            expect(live('free_chat_messages')).toBe(balance.freeChatMessages);
          }
          expect((await verifyLedger(db)).violations).toEqual([]);
        }
      }),
      { numRuns: 20 },
    );
  }, 120_000);
});

describe('race: 50 concurrent settlements, voids, expiries and sweeps of one hold', () => {
  let pools: DatabaseHandle[] = [];
  beforeAll(() => {
    pools = [
      createDatabase(database().url, { max: 10 }),
      createDatabase(database().url, { max: 10 }),
    ];
  });
  afterAll(async () => {
    await Promise.all(pools.map((p) => p.close()));
  });

  const KINDS = ['settle-all', 'settle-part', 'void', 'expire', 'sweep'] as const;

  /** 50 calls, ten of each kind, spread over 20 connections, all started at once. */
  async function race(holdId: string, userId: string) {
    return Promise.all(
      Array.from({ length: 50 }, async (_, i) => {
        const kind = KINDS[i % KINDS.length] ?? 'void';
        const on = pools[i % pools.length]?.db ?? db;
        const run = async () => {
          switch (kind) {
            case 'settle-all':
              return { closed: !(await settleCreditHold(on, { holdId })).replayed };
            case 'settle-part':
              return { closed: !(await settleCreditHold(on, { holdId, amount: 3 })).replayed };
            case 'void':
              return { closed: !(await voidCreditHold(on, { holdId })).replayed };
            case 'expire':
              return {
                closed: (await expireCreditHolds(on, { userId })).expired.some(
                  (r) => r.holdId === holdId,
                ),
              };
            case 'sweep':
              return {
                closed: (await expireCreditHolds(on)).expired.some((r) => r.holdId === holdId),
              };
          }
        };
        return run().then(
          (r) => ({ kind, ...r, code: undefined as string | undefined }),
          (error: unknown) => {
            if (!(error instanceof CreditsError)) throw error;
            return { kind, closed: false, code: error.code as string | undefined };
          },
        );
      }),
    );
  }

  async function given(userId: string) {
    return (await userRow(userId)).credits;
  }

  it('on a hold that is not due: exactly one settlement or void wins, the rest are told it is closed', async () => {
    const userId = (await createUser(db)).id;
    const { holdId } = await holdCredits(db, {
      userId,
      amount: 10,
      featureType: 'chat_tool_call',
      expiresInMs: HOUR,
    });
    const outcomes = await race(holdId, userId);
    const winners = outcomes.filter((o) => o.closed);
    expect(winners).toHaveLength(1);
    expect(['settle-all', 'settle-part', 'void']).toContain(winners[0]?.kind);
    const closing = await closingOf(holdId);
    const codes = new Set(outcomes.filter((o) => o.code).map((o) => o.code));
    const expected = closing?.operation === 'void' ? 'HOLD_ALREADY_VOIDED' : 'HOLD_ALREADY_SETTLED';
    expect([...codes]).toEqual([expected]);
    // Expiries and sweeps find nothing due; only settlements of the winning amount replay.
    const replaying = winners[0]?.kind === 'void' ? [] : [winners[0]?.kind];
    for (const o of outcomes.filter((o) => !o.closed && !o.code)) {
      expect(['expire', 'sweep', ...replaying]).toContain(o.kind);
    }
    const charged = closing?.operation === 'settle' ? (closing.amount ?? 0) : 0;
    expect(await given(userId)).toBe(10 - charged);
    expect(await trailSize(db, userId)).toBe(2);
    expect((await verifyLedger(db, { userId })).violations).toEqual([]);
  });

  it('on a due hold: exactly one expiry gives it back, settlements and voids are told it expired', async () => {
    const userId = (await createUser(db)).id;
    const { holdId } = await holdCredits(db, {
      userId,
      amount: 10,
      featureType: 'chat_tool_call',
      expiresInMs: 1000,
    });
    await sleep(1100);
    const outcomes = await race(holdId, userId);
    const winners = outcomes.filter((o) => o.closed);
    expect(winners).toHaveLength(1);
    expect(['expire', 'sweep']).toContain(winners[0]?.kind);
    for (const o of outcomes.filter((o) => o.kind !== 'expire' && o.kind !== 'sweep')) {
      expect(o.code).toBe('HOLD_EXPIRED');
    }
    for (const o of outcomes.filter((o) => o.kind === 'expire' || o.kind === 'sweep')) {
      expect(o.code).toBeUndefined();
    }
    expect(await closingOf(holdId)).toEqual({ operation: 'expire', amount: 10 });
    expect(await given(userId)).toBe(10);
    expect(await trailSize(db, userId)).toBe(2);
    expect((await verifyLedger(db, { userId })).violations).toEqual([]);
  });
});
