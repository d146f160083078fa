import { readFileSync } from 'node:fs';
import { createTestDatabase } from '@bragdoc/test-postgres';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type Database } from '../../src/client.js';
import {
  deductCredits,
  getCreditBalance,
  getUserPlan,
  grantCredits,
  holdCredits,
  IdempotencyConflictError,
  InsufficientCreditsError,
  InvalidInputError,
  InvalidRefundTargetError,
  listPlanChanges,
  PlanNotFoundError,
  refundCredits,
  settleCreditHold,
  setUserPlan,
  UserNotFoundError,
  verifyLedger,
  voidCreditHold,
  withCreditReservation,
} from '../../src/credits/index.js';
import { rowsOf } from '../../src/credits/prepared.js';
import { balances, createUser, ledgerMismatches } from './fixtures.js';

let db: Database;
let close: () => Promise<void>;
beforeAll(async () => {
  ({ db, close } = await createTestDatabase({
    connect: (url) => createDatabase(url, { max: 12 }),
  }));
});
afterAll(() => close());

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const doc = 'document_generation' as const;
const inMs = (ms: number) => new Date(Date.now() + ms);

async function expectVerified(userId?: string) {
  const result = await verifyLedger(db, userId ? { userId } : {});
  expect(result.violations).toEqual([]);
  expect(await ledgerMismatches(db)).toEqual([]);
}

describe('plans as ledger data', () => {
  it('a new user is on the default plan, free: 10 credits and 20 chat messages it spends', async () => {
    const u = await createUser(db);
    expect(await getUserPlan(db, u.id)).toEqual({ plan: 'free', unlimited: false, until: null });
    const spent = await deductCredits(db, { userId: u.id, amount: 4, featureType: doc });
    expect(spent.balance).toBe(6);
    expect(spent.transaction.coveredByPlan).toBeNull();
    const chat = await deductCredits(db, { userId: u.id, amount: 1, featureType: 'chat_message' });
    expect(chat.balance).toBe(19);
    await expect(
      deductCredits(db, { userId: u.id, amount: 7, featureType: doc }),
    ).rejects.toBeInstanceOf(InsufficientCreditsError);
    const balance = await getCreditBalance(db, u.id);
    expect(balance).toMatchObject({ freeCredits: 6, freeChatMessages: 19 });
    expect(balance.plan).toEqual({ plan: 'free', unlimited: false, until: null });
    await expectVerified(u.id);
  });

  it('a paid user is unlimited: every use is recorded with its cost, and no balance moves', async () => {
    const u = await createUser(db);
    const { change } = await setUserPlan(db, {
      userId: u.id,
      plan: 'paid',
      reason: 'Stripe invoice in_1 paid',
      actor: 'stripe-webhook',
    });
    expect(change).toMatchObject({ fromPlan: 'free', plan: 'paid', seq: 1, until: null });
    const uses = [];
    for (let i = 0; i < 30; i++)
      uses.push(await deductCredits(db, { userId: u.id, amount: 5, featureType: doc }));
    expect(uses.every((r) => r.transaction.coveredByPlan === 'paid')).toBe(true);
    expect(uses.every((r) => r.balance === 10 && r.transaction.amount === 5)).toBe(true);
    const chats = await deductCredits(db, {
      userId: u.id,
      amount: 1,
      featureType: 'chat_message',
    });
    expect(chats).toMatchObject({ balance: 20, transaction: { coveredByPlan: 'paid' } });
    expect(await balances(db, u.id)).toEqual({ freeCredits: 10, freeChatMessages: 20 });
    const [usage] = rowsOf(
      await db.execute(sql`
        select count(*)::int as uses, sum(amount)::int as cost from "CreditTransaction"
         where user_id = ${u.id} and operation = 'deduct' and covered_by_plan = 'paid'`),
    );
    expect(usage).toEqual({ uses: 31, cost: 151 });
    expect((await getCreditBalance(db, u.id)).plan).toEqual({
      plan: 'paid',
      unlimited: true,
      until: null,
    });
    await expectVerified(u.id);
  });

  it('a demo user is unlimited too, and its holds and reservations move no balance', async () => {
    const u = await createUser(db);
    await setUserPlan(db, { userId: u.id, plan: 'demo' });
    const hold = await holdCredits(db, { userId: u.id, amount: 500, featureType: doc });
    expect(hold).toMatchObject({ balance: 10, transaction: { coveredByPlan: 'demo' } });
    expect(await getCreditBalance(db, u.id)).toMatchObject({ freeCredits: 10, heldCredits: 0 });
    const settled = await settleCreditHold(db, { holdId: hold.holdId, amount: 120 });
    expect(settled).toMatchObject({ balance: 10, transaction: { coveredByPlan: 'demo' } });
    const voided = await holdCredits(db, { userId: u.id, amount: 3, featureType: 'chat_message' });
    expect((await voidCreditHold(db, { holdId: voided.holdId })).balance).toBe(20);
    const answer = await withCreditReservation(
      db,
      { userId: u.id, amount: 40, featureType: doc },
      async (reservation) => {
        reservation.use(25);
        return 'generated';
      },
    );
    expect(answer).toBe('generated');
    expect(await balances(db, u.id)).toEqual({ freeCredits: 10, freeChatMessages: 20 });
    await expectVerified(u.id);
  });

  it('a yearly plan lapses at its end, on its own: the next deduction is metered, after a lapse row', async () => {
    const u = await createUser(db);
    // A year, shortened: the ledger treats any `until` alike.
    await setUserPlan(db, { userId: u.id, plan: 'paid', until: inMs(1500), reason: 'yearly' });
    const covered = await deductCredits(db, { userId: u.id, amount: 3, featureType: doc });
    expect(covered.transaction.coveredByPlan).toBe('paid');
    await sleep(1700);
    // Read without writing: the plan has ended, the lapse is not recorded yet.
    expect(await getUserPlan(db, u.id)).toEqual({ plan: 'free', unlimited: false, until: null });
    expect(await listPlanChanges(db, u.id)).toHaveLength(1);
    const metered = await deductCredits(db, { userId: u.id, amount: 3, featureType: doc });
    expect(metered).toMatchObject({ balance: 7, transaction: { coveredByPlan: null } });
    const [lapse, first] = await listPlanChanges(db, u.id);
    expect(lapse).toMatchObject({
      seq: 2,
      fromPlan: 'paid',
      plan: 'free',
      reason: 'lapsed',
      actor: null,
    });
    expect(first?.until?.getTime()).toBeLessThanOrEqual(lapse?.createdAt.getTime() ?? 0);
    // The lapse came before the metered row in the user's order.
    expect(lapse?.trailSeq).toBe(metered.transaction.seq - 1);
    await expectVerified(u.id);
  });

  it('a plan change after a plan ended records the lapse first', async () => {
    const u = await createUser(db);
    await setUserPlan(db, { userId: u.id, plan: 'demo', until: inMs(1000) });
    await sleep(1200);
    await setUserPlan(db, { userId: u.id, plan: 'paid', actor: 'support@example.com' });
    const changes = (await listPlanChanges(db, u.id)).reverse();
    expect(changes.map((c) => [c.fromPlan, c.plan, c.reason])).toEqual([
      ['free', 'demo', null],
      ['demo', 'free', 'lapsed'],
      ['free', 'paid', null],
    ]);
    await expectVerified(u.id);
  });

  it('a downgrade takes effect at once: the next use spends credits', async () => {
    const u = await createUser(db);
    await setUserPlan(db, { userId: u.id, plan: 'paid' });
    await deductCredits(db, { userId: u.id, amount: 8, featureType: doc });
    await setUserPlan(db, { userId: u.id, plan: 'free', reason: 'subscription cancelled' });
    const after = await deductCredits(db, { userId: u.id, amount: 8, featureType: doc });
    expect(after).toMatchObject({ balance: 2, transaction: { coveredByPlan: null } });
    await expectVerified(u.id);
  });

  it('a downgrade racing deductions: each one is entirely before it (covered) or after it (metered)', async () => {
    for (let round = 0; round < 5; round++) {
      const u = await createUser(db);
      await grantCredits(db, { userId: u.id, amount: 90, featureType: doc });
      await setUserPlan(db, { userId: u.id, plan: 'paid' });
      const results = await Promise.allSettled([
        ...Array.from({ length: 10 }, () =>
          deductCredits(db, { userId: u.id, amount: 1, featureType: doc }),
        ),
        setUserPlan(db, { userId: u.id, plan: 'free', reason: 'downgrade' }),
        ...Array.from({ length: 10 }, () =>
          deductCredits(db, { userId: u.id, amount: 1, featureType: doc }),
        ),
      ]);
      expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
      const [downgrade] = await listPlanChanges(db, u.id);
      const rows = rowsOf<{ seq: string; covered_by_plan: string | null }>(
        await db.execute(sql`
          select seq, covered_by_plan from "CreditTransaction"
           where user_id = ${u.id} and operation = 'deduct' order by seq`),
      );
      expect(rows).toHaveLength(20);
      for (const row of rows)
        expect(row.covered_by_plan).toBe(
          Number(row.seq) <= (downgrade?.trailSeq ?? 0) ? 'paid' : null,
        );
      const metered = rows.filter((r) => r.covered_by_plan === null).length;
      expect((await balances(db, u.id))?.freeCredits).toBe(100 - metered);
      await expectVerified(u.id);
    }
  });

  it('a refund of a covered use is refused: it took nothing', async () => {
    const u = await createUser(db);
    await setUserPlan(db, { userId: u.id, plan: 'paid' });
    const use = await deductCredits(db, { userId: u.id, amount: 5, featureType: doc });
    const refused = await refundCredits(db, {
      userId: u.id,
      amount: 5,
      featureType: doc,
      refundOf: use.transaction.id,
    }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(InvalidRefundTargetError);
    expect((refused as InvalidRefundTargetError).reason).toBe('covered_by_plan');
    expect(await balances(db, u.id)).toEqual({ freeCredits: 10, freeChatMessages: 20 });
  });

  it('an unknown plan, a past end or an end on the default plan is refused, and nothing is written', async () => {
    const u = await createUser(db);
    const unknown = await setUserPlan(db, { userId: u.id, plan: 'platinum' }).catch(
      (e: unknown) => e,
    );
    expect(unknown).toBeInstanceOf(PlanNotFoundError);
    expect((unknown as PlanNotFoundError).plans).toEqual(['demo', 'free', 'paid']);
    await expect(
      setUserPlan(db, { userId: u.id, plan: 'paid', until: new Date(Date.now() - 1000) }),
    ).rejects.toMatchObject({ code: 'INVALID_INPUT', field: 'until' });
    await expect(
      setUserPlan(db, { userId: u.id, plan: 'free', until: inMs(60_000) }),
    ).rejects.toBeInstanceOf(InvalidInputError);
    await expect(setUserPlan(db, { userId: u.id, plan: 'Paid!' })).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      field: 'plan',
    });
    await expect(
      setUserPlan(db, { userId: '00000000-0000-4000-8000-000000000000', plan: 'paid' }),
    ).rejects.toBeInstanceOf(UserNotFoundError);
    expect(await listPlanChanges(db, u.id)).toEqual([]);
  });

  it('a retried plan change with its key changes the plan once; other arguments under the key conflict', async () => {
    const u = await createUser(db);
    const input = { userId: u.id, plan: 'paid', idempotencyKey: 'invoice-1', actor: 'webhook' };
    const results = await Promise.all(Array.from({ length: 8 }, () => setUserPlan(db, input)));
    expect(results.filter((r) => !r.replayed)).toHaveLength(1);
    expect(new Set(results.map((r) => r.change.id)).size).toBe(1);
    expect(await listPlanChanges(db, u.id)).toHaveLength(1);
    await expect(setUserPlan(db, { ...input, plan: 'demo' })).rejects.toBeInstanceOf(
      IdempotencyConflictError,
    );
    await expectVerified(u.id);
  });

  it('who made a change is stored on its row: plan changes and credit changes alike', async () => {
    const u = await createUser(db);
    const grant = await grantCredits(db, {
      userId: u.id,
      amount: 5,
      featureType: doc,
      actor: 'support@example.com',
    });
    expect(grant.transaction.actor).toBe('support@example.com');
    const hold = await holdCredits(db, { userId: u.id, amount: 2, featureType: doc });
    const voided = await voidCreditHold(db, { holdId: hold.holdId, actor: 'support@example.com' });
    expect(voided.transaction.actor).toBe('support@example.com');
    await expect(
      grantCredits(db, { userId: u.id, amount: 1, featureType: doc, actor: '' }),
    ).rejects.toMatchObject({ code: 'INVALID_INPUT', field: 'actor' });
    await expectVerified(u.id);
  });

  it("an app's own plan column moves into the ledger with the README's statement, one change per user", async () => {
    const readme = readFileSync(new URL('../../../../README.md', import.meta.url), 'utf8');
    const statement = /moves it in once[\s\S]*?```sql\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(statement).toContain('INSERT INTO "CreditPlanChange"');
    await db.execute(sql`alter table "User" add column plan text not null default 'free',
                           add column plan_expires_at timestamptz`);
    const yearly = await createUser(db);
    const demo = await createUser(db);
    const lapsed = await createUser(db);
    const free = await createUser(db);
    const inAYear = inMs(365 * 24 * 3600 * 1000);
    await db.execute(
      sql`update "User" set plan = 'paid', plan_expires_at = ${inAYear.toISOString()}::timestamptz where id = ${yearly.id}`,
    );
    await db.execute(sql`update "User" set plan = 'demo' where id = ${demo.id}`);
    await db.execute(
      sql`update "User" set plan = 'paid', plan_expires_at = now() - interval '1 day' where id = ${lapsed.id}`,
    );
    await db.execute(sql.raw(statement ?? ''));
    expect(await getUserPlan(db, yearly.id)).toEqual({
      plan: 'paid',
      unlimited: true,
      until: inAYear,
    });
    expect(await getUserPlan(db, demo.id)).toEqual({ plan: 'demo', unlimited: true, until: null });
    expect((await getUserPlan(db, lapsed.id)).plan).toBe('free');
    expect((await getUserPlan(db, free.id)).plan).toBe('free');
    const [moved] = await listPlanChanges(db, yearly.id);
    expect(moved).toMatchObject({
      fromPlan: 'free',
      reason: 'moved from "User".plan',
      actor: 'migration',
    });
    await expectVerified();
  });
});
