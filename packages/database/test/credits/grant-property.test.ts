import { sql } from 'drizzle-orm';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/client.js';
import {
  type CreditBalance,
  CreditsError,
  deductCredits,
  expireCreditGrants,
  getCreditBalance,
  grantCredits,
  holdCredits,
  refundCredits,
  settleCreditHold,
  setUserPlan,
  verifyLedger,
  voidCreditHold,
} from '../../src/credits/index.js';
import { rowsOf } from '../../src/credits/prepared.js';
import { useMigratedDatabase } from '../support.js';
import { createUser, ledgerMismatches } from './fixtures.js';

// Random interleavings of grants (some expiring within a second), plan changes (some ending
// within a second), deductions, holds and their closings, refunds, sweeps and waits past
// those ends, on two users. After every step, each balance is the sum of what remains of its
// live grants, as a read-only connection computes it and as a writing one finds it, and
// credits:verify finds nothing. The ledger's clock is the server's: short expiries and waits
// cross the boundaries, and no setting moves time.

const database = useMigratedDatabase();
let db: Database;
beforeAll(() => {
  db = database().db;
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const HOUR = 60 * 60 * 1000;

const live = (balance: CreditBalance, name: 'free_credits' | 'free_chat_messages') =>
  balance.grants.filter((g) => g.balance === name).reduce((sum, g) => sum + g.remaining, 0);

function expectExplained(balance: CreditBalance) {
  expect(live(balance, 'free_credits')).toBe(balance.freeCredits);
  expect(live(balance, 'free_chat_messages')).toBe(balance.freeChatMessages);
  // Only live grants are listed.
  for (const g of balance.grants) {
    expect(g.remaining).toBeGreaterThan(0);
    expect(g.remaining).toBeLessThanOrEqual(g.amount);
  }
}

describe('property: grants, expiries, plans, spending and refunds keep every balance the sum of its live grants', () => {
  const who = fc.constantFrom(0, 1);
  const chat = fc.boolean();
  const step = fc.oneof(
    {
      weight: 3,
      arbitrary: fc.record({
        op: fc.constant('grant' as const),
        who,
        chat,
        amount: fc.integer({ min: 1, max: 9 }),
        source: fc.constantFrom('purchase' as const, 'promotional' as const, 'support' as const),
        expiry: fc.constantFrom('never', 'soon', 'later'),
      }),
    },
    {
      weight: 4,
      arbitrary: fc.record({
        op: fc.constantFrom('deduct' as const, 'hold' as const),
        who,
        chat,
        amount: fc.integer({ min: 1, max: 12 }),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        op: fc.constantFrom('settle' as const, 'void' as const),
        pick: fc.nat(),
        part: fc.boolean(),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        op: fc.constant('refund' as const),
        pick: fc.nat(),
        part: fc.boolean(),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        op: fc.constant('plan' as const),
        who,
        plan: fc.constantFrom('free', 'paid', 'demo'),
        soon: fc.boolean(),
      }),
    },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('sweep' as const) }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('wait' as const) }) },
  );

  it('after every step: balances equal their live grants, read-only and read-write, and the ledger verifies', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 14 }), async (steps) => {
        const users = [(await createUser(db)).id, (await createUser(db)).id];
        const holds: string[] = [];
        const deductions: { id: string; userId: string; amount: number; featureType: string }[] =
          [];
        let waited = false;
        for (const s of steps) {
          try {
            switch (s.op) {
              case 'grant': {
                const ms = { never: undefined, soon: 900, later: HOUR }[s.expiry];
                await grantCredits(db, {
                  userId: users[s.who] ?? '',
                  amount: s.amount,
                  source: s.source,
                  ...(s.chat ? { featureType: 'chat_message' as const } : {}),
                  ...(ms === undefined ? {} : { expiresAt: new Date(Date.now() + ms) }),
                });
                break;
              }
              case 'deduct': {
                const featureType = s.chat ? 'chat_message' : 'chat_tool_call';
                const r = await deductCredits(db, {
                  userId: users[s.who] ?? '',
                  amount: s.amount,
                  featureType,
                });
                deductions.push({
                  id: r.transaction.id,
                  userId: r.transaction.userId,
                  amount: s.amount,
                  featureType,
                });
                break;
              }
              case 'hold': {
                const r = await holdCredits(db, {
                  userId: users[s.who] ?? '',
                  amount: s.amount,
                  featureType: s.chat ? 'chat_message' : 'chat_tool_call',
                  expiresInMs: HOUR,
                });
                holds.push(r.holdId);
                break;
              }
              case 'settle':
              case 'void': {
                const holdId = holds.splice(s.pick % Math.max(holds.length, 1), 1)[0];
                if (!holdId) break;
                if (s.op === 'void') await voidCreditHold(db, { holdId });
                else await settleCreditHold(db, { holdId, ...(s.part ? { amount: 1 } : {}) });
                break;
              }
              case 'refund': {
                const d = deductions[s.pick % Math.max(deductions.length, 1)];
                if (!d) break;
                await refundCredits(db, {
                  userId: d.userId,
                  amount: s.part ? 1 : d.amount,
                  featureType: d.featureType as 'chat_tool_call',
                  refundOf: d.id,
                });
                break;
              }
              case 'plan': {
                await setUserPlan(db, {
                  userId: users[s.who] ?? '',
                  plan: s.plan,
                  ...(s.plan !== 'free' && s.soon ? { until: new Date(Date.now() + 900) } : {}),
                });
                break;
              }
              case 'sweep': {
                await expireCreditGrants(db, { limit: 100 });
                break;
              }
              case 'wait': {
                // Past every "soon" end once a run, so that expiries and lapses are crossed.
                if (waited) break;
                waited = true;
                await sleep(1000);
                break;
              }
            }
          } catch (error) {
            // Insufficient credits, a refund past its deduction or of a covered use, a balance
            // out of range: typed, and nothing written (checked below by the ledger).
            if (!(error instanceof CreditsError)) throw error;
          }

          for (const userId of users) {
            const readOnly = await db.transaction((tx) => getCreditBalance(tx, userId), {
              accessMode: 'read only',
            });
            expectExplained(readOnly);
          }
          expect(await ledgerMismatches(db)).toEqual([]);
          expect((await verifyLedger(db)).violations).toEqual([]);
        }
        for (const userId of users) {
          const [before] = rowsOf<{ at: string }>(
            await db.execute(sql`select clock_timestamp()::text as at`),
          );
          const balance = await getCreditBalance(db, userId);
          expectExplained(balance);
          // A read that can write leaves behind no grant that was due when it began.
          const [due] = rowsOf<{ n: number }>(
            await db.execute(sql`
              select count(*)::int as n from credit_ledger.credit_grant
               where user_id = ${userId} and remaining > 0 and expires_at <= ${before?.at ?? ''}::timestamptz`),
          );
          expect(due?.n).toBe(0);
        }
      }),
      {
        numRuns: 15,
        // One run that crosses every boundary, whatever the random ones do: a grant and a
        // plan that end within a second, spending on both sides of the wait, a refund
        // after its grant expired, a settlement and a sweep.
        examples: [
          [
            [
              {
                op: 'grant',
                who: 0,
                chat: false,
                amount: 5,
                source: 'promotional',
                expiry: 'soon',
              },
              { op: 'grant', who: 1, chat: true, amount: 3, source: 'support', expiry: 'soon' },
              { op: 'plan', who: 1, plan: 'paid', soon: true },
              { op: 'deduct', who: 0, chat: false, amount: 7 },
              { op: 'deduct', who: 1, chat: false, amount: 4 },
              { op: 'hold', who: 0, chat: false, amount: 2 },
              { op: 'wait' },
              { op: 'refund', pick: 0, part: false },
              { op: 'deduct', who: 1, chat: false, amount: 4 },
              { op: 'settle', pick: 0, part: true },
              { op: 'sweep' },
            ],
          ],
        ],
      },
    );
    // The boundaries were crossed: expiries, a give-back to an expired grant, a lapse, covered uses.
    const [seen] = rowsOf<Record<string, number>>(
      await db.execute(sql`
        select count(*) filter (where operation = 'expire_grant')::int as expiries,
               count(*) filter (where operation = 'refund' and allocations is not null)::int as refunds,
               count(*) filter (where covered_by_plan is not null)::int as covered,
               (select count(*)::int from "CreditPlanChange" where reason = 'lapsed') as lapses
          from "CreditTransaction"`),
    );
    expect(seen?.expiries).toBeGreaterThan(0);
    expect(seen?.refunds).toBeGreaterThan(0);
    expect(seen?.covered).toBeGreaterThan(0);
    expect(seen?.lapses).toBeGreaterThan(0);
  }, 600_000);
});
