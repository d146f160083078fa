import { TransactionRollbackError } from 'drizzle-orm';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type Database, type Transaction } from '../../src/client.js';
import {
  type CreditChangeResult,
  CreditsError,
  deductCredits,
  grantCredits,
  refundCredits,
  verifyLedger,
  withCreditReservation,
} from '../../src/credits/index.js';
import { featureTypeValues } from '../../src/schema.js';
import { useMigratedDatabase } from '../support.js';
import { balances, createUser, ledgerMismatches, trailSize } from './fixtures.js';

const database = useMigratedDatabase();
let db: Database;

beforeAll(async () => {
  db = database().db;
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

describe('property: operations interleaved from several sessions keep every trail explaining its balances', () => {
  // Each step runs one script per session at the same time; a script is a few operations,
  // maybe inside a transaction that commits or rolls back at its end. Sessions contend for
  // the same two users, so they wait on each other's locks, race refunds of one deduction
  // and replay each other's keys. After every step, credits:verify finds nothing.
  const SESSIONS = 3;
  const op = fc.record({
    kind: fc.constantFrom('deduct', 'grant', 'refund'),
    amount: fc.integer({ min: 1, max: 6 }),
    chat: fc.boolean(),
    key: fc.option(fc.constantFrom('k1', 'k2', 'k3'), { nil: undefined }),
  });
  // One user per script: a transaction holding two users' locks could deadlock with
  // another, which PostgreSQL resolves only after deadlock_timeout (1 s), every time.
  const script = fc.record({
    user: fc.constantFrom(0, 1),
    ops: fc.array(op, { minLength: 1, maxLength: 4 }),
    transaction: fc.constantFrom('none', 'commit', 'rollback'),
  });
  const step = fc.array(script, { minLength: SESSIONS, maxLength: SESSIONS });
  type Op = typeof op extends fc.Arbitrary<infer T> ? T : never;

  let sessions: { db: Database; close: () => Promise<void> }[] = [];
  beforeAll(() => {
    sessions = Array.from({ length: SESSIONS }, () => createDatabase(database().url, { max: 1 }));
  });
  afterAll(async () => {
    await Promise.all(sessions.map((s) => s.close()));
  });

  it('holds for random interleavings', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 5 }), async (steps) => {
        const users = [(await createUser(db)).id, (await createUser(db)).id];
        const deductions: string[][] = [[], []];
        const runOp = async (tx: Database | Transaction, who: number, o: Op) => {
          const featureType = o.chat ? 'chat_message' : 'chat_tool_call';
          const input = {
            userId: users[who] ?? '',
            amount: o.amount,
            featureType,
            ...(o.key ? { idempotencyKey: `${o.kind}-${o.key}` } : {}),
          } as const;
          try {
            if (o.kind === 'deduct') {
              const r = await deductCredits(tx, input);
              if (!r.replayed) deductions[who]?.push(r.transaction.id);
            } else if (o.kind === 'grant') {
              await grantCredits(tx, input);
            } else {
              const refundOf = deductions[who]?.at(-1);
              await refundCredits(tx, { ...input, ...(refundOf ? { refundOf } : {}) });
            }
          } catch (error) {
            if (!(error instanceof CreditsError)) throw error;
          }
        };
        for (const scripts of steps) {
          await Promise.all(
            scripts.map(async (s, i) => {
              const session = sessions[i]?.db;
              if (!session) return;
              if (s.transaction === 'none') {
                for (const o of s.ops) await runOp(session, s.user, o);
                return;
              }
              await session
                .transaction(async (tx) => {
                  for (const o of s.ops) await runOp(tx, s.user, o);
                  if (s.transaction === 'rollback') tx.rollback();
                })
                .catch((error: unknown) => {
                  // A rollback asked for, or PostgreSQL ending one of two transactions that
                  // wait on each other's users (40P01): both leave nothing behind.
                  const code = (error as { cause?: { code?: string } }).cause?.code;
                  if (!(error instanceof TransactionRollbackError) && code !== '40P01') throw error;
                });
            }),
          );
          const verification = await verifyLedger(db);
          expect(verification.violations).toEqual([]);
          expect(await ledgerMismatches(db)).toEqual([]);
        }
      }),
      { numRuns: 25 },
    );
  }, 180_000);
});
