import { afterEach, describe, expect, it } from 'vitest';
import {
  deductCredits,
  getCreditBalance,
  setUserPlan,
  verifyLedger,
} from '../../src/credits/index.js';
import { refusalOf } from '../support.js';
import { useAttackEnvironment } from './attack-env.js';

// Each attack on plans (migrations 0012–0013) tried the way an outsider would: as an app role
// with the broad grants and as the role that owns the tables. A user's plan is worth money (an
// unlimited plan spends nothing): it must change only through a recorded plan change, the
// plans themselves only by the owner with an audit row, and credits:verify must catch what the
// owner can still do by hand.

const env = useAttackEnvironment();
const FEATURE = 'chat_tool_call';

/** A user on `plan`, set through the package. */
async function userOn(plan: string): Promise<string> {
  const userId = await env.newUser();
  if (plan !== 'free') await setUserPlan(env.adminDb(), { userId, plan });
  return userId;
}

async function currentPlan(userId: string) {
  return (await getCreditBalance(env.adminDb(), userId)).plan.plan;
}

/** The kinds verifyLedger reports for one user. */
async function findings(userId: string): Promise<string[]> {
  const result = await verifyLedger(env.adminDb(), { userId });
  return [...new Set(result.violations.map((v) => v.kind))].sort();
}

// An owner's edit that verify must report is made on a user of its own, deleted afterwards
// (with its plan changes and trail), so every later test's whole-database check is its own.
const doomed: string[] = [];
afterEach(async () => {
  await env.dropAttachedTriggers();
  for (const id of doomed.splice(0)) await env.admin()`delete from "User" where id = ${id}`;
});

describe.each(['app', 'owner'] as const)('as the %s role', (role) => {
  it('the plan operations work with its grants', async () => {
    const db = env.packageAs(role);
    const userId = await env.newUser();
    await setUserPlan(db, { userId, plan: 'paid', actor: role });
    const use = await deductCredits(db, { userId, amount: 7, featureType: FEATURE });
    expect(use.transaction.coveredByPlan).toBe('paid');
    expect((await getCreditBalance(db, userId)).plan).toMatchObject({ plan: 'paid' });
    expect(await env.state(userId)).toMatchObject({ credits: 10 });
    await env.expectLedgerVerifies();
  });

  it('cannot update, delete or truncate a plan change', async () => {
    const sql = env.session(role);
    const userId = await userOn('paid');
    for (const statement of [
      sql`update "CreditPlanChange" set plan = 'demo' where user_id = ${userId}`,
      sql`update "CreditPlanChange" set until = now() + interval '1 year' where user_id = ${userId}`,
      sql`delete from "CreditPlanChange" where user_id = ${userId}`,
      sql`truncate "CreditPlanChange"`,
    ]) {
      // The trigger refuses the owner; the app role has no TRUNCATE at all.
      expect(['BC005', '42501']).toContain((await refusalOf(statement)).code);
    }
    expect(await currentPlan(userId)).toBe('paid');
    await env.expectLedgerVerifies();
  });

  it('cannot choose the columns the ledger sets on a plan change', async () => {
    const sql = env.session(role);
    const userId = await env.newUser();
    const [row] = await sql<
      { from_plan: string; seq: string; trail_seq: string; hash: string; created_at: Date }[]
    >`
      insert into "CreditPlanChange" (user_id, plan, from_plan, seq, trail_seq, hash, created_at)
      values (${userId}, 'paid', 'demo', 41, 99, 'forged', '2000-01-01')
      returning from_plan, seq, trail_seq, hash, created_at`;
    expect(row).toMatchObject({ from_plan: 'free', seq: '1', trail_seq: '2' });
    expect(row?.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(row?.created_at.getUTCFullYear()).toBeGreaterThan(2000);
    await env.expectLedgerVerifies();
  });

  it('cannot mark its own use as covered by a plan, nor a covered use as metered', async () => {
    const sql = env.session(role);
    const free = await env.newUser();
    await sql`
      insert into "CreditTransaction" (user_id, amount, operation, feature_type, covered_by_plan)
      values (${free}, 5, 'deduct', ${FEATURE}, 'paid')`;
    expect(await env.state(free)).toMatchObject({ credits: 5 });
    const paid = await userOn('paid');
    const [row] = await sql<{ covered_by_plan: string | null }[]>`
      insert into "CreditTransaction" (user_id, amount, operation, feature_type, covered_by_plan)
      values (${paid}, 5, 'deduct', ${FEATURE}, null) returning covered_by_plan`;
    expect(row?.covered_by_plan).toBe('paid');
    await env.expectLedgerVerifies();
  });

  it('cannot end a plan in the past, nor keep a plan past its end', async () => {
    const sql = env.session(role);
    const userId = await env.newUser();
    const refused = await refusalOf(
      sql`insert into "CreditPlanChange" (user_id, plan, until)
          values (${userId}, 'paid', now() - interval '1 second')`,
    );
    expect(refused.code).toBe('BC023');
    await sql`insert into "CreditPlanChange" (user_id, plan, until)
              values (${userId}, 'paid', clock_timestamp() + interval '300 milliseconds')`;
    await new Promise((resolve) => setTimeout(resolve, 400));
    // A use after the end is metered, whoever writes it, and the lapse is recorded first.
    const [use] = await sql<{ covered_by_plan: string | null }[]>`
      insert into "CreditTransaction" (user_id, amount, operation, feature_type)
      values (${userId}, 1, 'deduct', ${FEATURE}) returning covered_by_plan`;
    expect(use?.covered_by_plan).toBeNull();
    const changes = await env.admin()<{ plan: string; reason: string | null }[]>`
      select plan, reason from "CreditPlanChange" where user_id = ${userId} order by seq`;
    expect(changes).toEqual([
      { plan: 'paid', reason: null },
      { plan: 'free', reason: 'lapsed' },
    ]);
    await env.expectLedgerVerifies();
  });
});

describe('as the app role', () => {
  it("cannot write a user's current plan, nor a plan", async () => {
    const sql = env.session('app');
    const userId = await userOn('demo');
    for (const statement of [
      sql`update credit_ledger.user_plan set plan = 'paid' where user_id = ${userId}`,
      sql`update credit_ledger.user_plan set until = null where user_id = ${userId}`,
      sql`delete from credit_ledger.user_plan where user_id = ${userId}`,
      sql`insert into credit_ledger.user_plan (user_id, plan, seq, hash) values (gen_random_uuid(), 'paid', 1, 'x')`,
      sql`update credit_ledger.credit_plan set unlimited = true where plan = 'free'`,
      sql`insert into credit_ledger.credit_plan (plan, unlimited) values ('mine', true)`,
      sql`delete from credit_ledger.credit_plan_audit`,
    ]) {
      expect((await refusalOf(statement)).code).toBe('42501');
    }
    expect(await currentPlan(userId)).toBe('demo');
  });

  it("cannot skip a user's allowance, nor have one granted twice", async () => {
    await env.admin()`
      insert into credit_ledger.credit_plan (plan, allowance_credits, allowance_period)
      values ('allowance_month', 7, 'month') on conflict do nothing`;
    const sql = env.session('app');
    const userId = await userOn('allowance_month');
    for (const statement of [
      sql`insert into credit_ledger.user_allowance (user_id, period_start, plan) values (${userId}, now() + interval '1 year', 'allowance_month')`,
      sql`update credit_ledger.user_allowance set period_start = now() + interval '1 year'`,
      sql`delete from credit_ledger.user_allowance`,
    ]) {
      expect((await refusalOf(statement)).code).toBe('42501');
    }
    // A grant of its own that passes for the allowance is refused, before and after it.
    const forged = (starts: string) => sql`
      insert into "CreditTransaction" (user_id, amount, operation, feature_type, source, grant_expires_at, metadata)
      values (${userId}, 7, 'grant', 'none', 'allowance',
              date_trunc('month', now(), 'UTC') + interval '1 month',
              jsonb_build_object('allowance', jsonb_build_object('plan', 'allowance_month', 'period', 'month', 'starts', ${starts}::text)))`;
    const thisMonth = new Date().toISOString().slice(0, 7);
    expect((await refusalOf(forged(`${thisMonth}-01T00:00:00Z`))).code).toBe('BC016');
    await sql`select credit_ledger.credit_allowance_apply(${userId})`;
    expect((await refusalOf(forged(`${thisMonth}-01T00:00:00Z`))).code).toBe('BC016');
    await sql`select credit_ledger.credit_allowance_apply(${userId})`;
    const rows = await env.admin()<{ amount: number }[]>`
      select amount from "CreditTransaction"
       where user_id = ${userId} and source = 'allowance' and grant_expires_at is not null`;
    expect(rows).toEqual([{ amount: 7 }]);
    await env.expectLedgerVerifies();
  });

  it('cannot run a trigger of its own inside a plan change, even with TRIGGER on every table', async () => {
    await env.grantAllToApp();
    const sql = env.session('app');
    await sql.unsafe(`
      create or replace function public.upgrade() returns trigger language plpgsql as $$
      begin NEW.plan := 'paid'; return NEW; end $$`);
    await env.attachTrigger(
      sql,
      'zz_upgrade',
      '"CreditPlanChange"',
      'before insert on $TABLE for each row execute function public.upgrade()',
    );
    const userId = await env.newUser();
    const refusal = await refusalOf(setUserPlan(env.packageAs('app'), { userId, plan: 'demo' }));
    expect(refusal.message).toMatch(/zz_upgrade/);
    expect(await currentPlan(userId)).toBe('free');
  });
  it("cannot have a trigger of its own run as the owner inside the ledger's own inserts", async () => {
    // TRIGGER on every table of public: granted by the test before (grantAllToApp).
    const sql = env.session('app');
    await env.admin()`
      insert into credit_ledger.credit_plan (plan, allowance_credits, allowance_period)
      values ('allowance_week', 3, 'week') on conflict do nothing`;
    await sql.unsafe(`
      create table if not exists public.ran_as (role text);
      create or replace function public.skip_as_owner() returns trigger language plpgsql as $$
      begin
        if current_user <> session_user then
          insert into public.ran_as values (current_user);
          return null;
        end if;
        return coalesce(NEW, OLD);
      end $$`);
    const lapsing = await env.newUser();
    await setUserPlan(env.adminDb(), {
      userId: lapsing,
      plan: 'paid',
      until: new Date(Date.now() + 300),
    });
    const weekly = await userOn('allowance_week');
    const victim = await env.newUser();
    for (const table of ['"CreditTransaction"', '"CreditPlanChange"'])
      await env.attachTrigger(
        sql,
        'a_skip',
        table,
        'before insert or delete on $TABLE for each row execute function public.skip_as_owner()',
      );
    await new Promise((resolve) => setTimeout(resolve, 400));
    for (const statement of [
      // The opening rows of a user it creates.
      sql`insert into "User" (email, free_credits) values (${`${crypto.randomUUID()}@example.com`}, 1000000)`,
      // An allowance granted for a balance read.
      sql`select credit_ledger.credit_allowance_apply(${weekly})`,
      // A lapse written before a deduction (the deduction itself is its own, and refused).
      sql`insert into "CreditTransaction" (user_id, amount, operation, feature_type) values (${lapsing}, 1, 'deduct', ${FEATURE})`,
      // The cascades of a user's deletion.
      sql`delete from "User" where id = ${victim}`,
    ]) {
      expect((await refusalOf(statement)).code).toBe('BC017');
    }
    // A user's deletion by the owner's own role is refused too, while the trigger exists.
    expect((await refusalOf(env.admin()`delete from "User" where id = ${victim}`)).code).toBe(
      'BC017',
    );
    await env.dropAttachedTriggers();
    expect(await env.admin()`select role from public.ran_as`).toEqual([]);
    await env.expectLedgerVerifies();
  });
});

describe("the owner's edits that cannot be prevented are found by verifyLedger", () => {
  it("a user's current plan written by hand is reported", async () => {
    const userId = await userOn('demo');
    doomed.push(userId);
    await env.session(
      'owner',
    )`update credit_ledger.user_plan set plan = 'paid' where user_id = ${userId}`;
    expect(await findings(userId)).toEqual(['plan_head_mismatch']);
  });

  it('a current plan made up for a user without plan changes is reported', async () => {
    const userId = await env.newUser();
    doomed.push(userId);
    await env.session('owner')`
      insert into credit_ledger.user_plan (user_id, plan, seq, hash) values (${userId}, 'paid', 1, 'x')`;
    expect(await findings(userId)).toEqual(['plan_head_mismatch']);
  });

  it('a plan change edited with the triggers disabled is reported', async () => {
    const userId = await userOn('demo');
    doomed.push(userId);
    await env.session('owner').begin(async (tx) => {
      await tx`alter table "CreditPlanChange" disable trigger user`;
      await tx`update "CreditPlanChange" set plan = 'paid' where user_id = ${userId}`;
      await tx`update credit_ledger.user_plan set plan = 'paid' where user_id = ${userId}`;
      await tx`alter table "CreditPlanChange" enable trigger user`;
    });
    expect(await findings(userId)).toEqual(['plan_hash_mismatch']);
  });

  it('the last plan change deleted with the triggers disabled is reported', async () => {
    const userId = await userOn('demo');
    doomed.push(userId);
    await setUserPlan(env.adminDb(), { userId, plan: 'free', reason: 'cancelled' });
    await env.session('owner').begin(async (tx) => {
      await tx`alter table "CreditPlanChange" disable trigger user`;
      await tx`delete from "CreditPlanChange" where user_id = ${userId} and seq = 2`;
      await tx`alter table "CreditPlanChange" enable trigger user`;
    });
    expect(await findings(userId)).toEqual(['plan_head_mismatch']);
  });

  it('a covered use rewritten as metered (or the reverse), its hash recomputed, is reported', async () => {
    const userId = await userOn('paid');
    doomed.push(userId);
    const use = await deductCredits(env.adminDb(), { userId, amount: 3, featureType: FEATURE });
    await env.session('owner').begin(async (tx) => {
      await tx`alter table "CreditTransaction" disable trigger user`;
      await tx`alter table "User" disable trigger user`;
      await tx`update "CreditTransaction" t set covered_by_plan = 'demo',
                 hash = credit_ledger.credit_tx_hash(p.hash, t.id, t.user_id, t.seq, t.operation,
                   t.feature_type, t.amount, t.balance_after, t.created_at, t.idempotency_key,
                   t.refund_of, t.metadata, t.hold_id, t.hold_expires_at,
                   jsonb_build_object('covered_by_plan', 'demo'))
               from "CreditTransaction" p
               where t.id = ${use.transaction.id} and p.user_id = t.user_id and p.seq = t.seq - 1`;
      await tx`update "User" u set ledger_hash = t.hash from "CreditTransaction" t
               where t.id = ${use.transaction.id} and u.id = t.user_id`;
      await tx`alter table "CreditTransaction" enable trigger user`;
      await tx`alter table "User" enable trigger user`;
    });
    expect(await findings(userId)).toEqual(['covered_plan_mismatch']);
  });

  it('an allowance period recorded as not granted is reported, and not granted again', async () => {
    await env.admin()`
      insert into credit_ledger.credit_plan (plan, allowance_credits, allowance_period)
      values ('allowance_day', 2, 'day') on conflict do nothing`;
    const userId = await userOn('allowance_day');
    doomed.push(userId);
    await env.admin()`select credit_ledger.credit_allowance_apply(${userId})`;
    await env.session('owner')`delete from credit_ledger.user_allowance where user_id = ${userId}`;
    // The period's allowance is not granted again: the rule finds it in the trail.
    expect(
      (await refusalOf(env.admin()`select credit_ledger.credit_allowance_apply(${userId})`)).code,
    ).toBe('BC016');
    expect(await findings(userId)).toEqual(['allowance_record']);
  });

  it('an allowance period recorded as granted ahead of time, to skip the ones until then, is reported', async () => {
    await env.admin()`
      insert into credit_ledger.credit_plan (plan, allowance_credits, allowance_period)
      values ('allowance_day', 2, 'day') on conflict do nothing`;
    const userId = await userOn('allowance_day');
    doomed.push(userId);
    await env.session('owner')`
      insert into credit_ledger.user_allowance (user_id, period_start, plan) values (${userId}, '2100-01-01', 'allowance_day')`;
    expect(await findings(userId)).toEqual(['allowance_record']);
  });

  it('a plan made unlimited for a moment covers the uses of that moment, as its audit shows; with the audit erased, they are reported', async () => {
    const userId = await env.newUser();
    doomed.push(userId);
    const owner = env.session('owner');
    const [mark] = await owner<{ id: string }[]>`
      select coalesce(max(id), 0)::text as id from credit_ledger.credit_plan_audit`;
    await owner`update credit_ledger.credit_plan set unlimited = true where plan = 'free'`;
    try {
      const use = await deductCredits(env.adminDb(), { userId, amount: 2, featureType: FEATURE });
      expect(use.transaction.coveredByPlan).toBe('free');
    } finally {
      await owner`update credit_ledger.credit_plan set unlimited = false where plan = 'free'`;
    }
    expect(await findings(userId)).toEqual([]);
    await owner`delete from credit_ledger.credit_plan_audit where id > ${mark?.id ?? '0'}::bigint`;
    expect(await findings(userId)).toEqual(['covered_plan_not_unlimited']);
  });

  it('a change of a plan is recorded in the audit, with the role that made it', async () => {
    const owner = env.session('owner');
    await owner`update credit_ledger.credit_plan set description = 'changed by hand' where plan = 'demo'`;
    const [audit] = await env.admin()<
      {
        session_role: string;
        operation: string;
        old_row: { description: string };
        new_row: { description: string };
      }[]
    >`select session_role, operation, old_row, new_row from credit_ledger.credit_plan_audit order by id desc limit 1`;
    expect(audit).toMatchObject({
      session_role: env.roleName('owner'),
      operation: 'UPDATE',
      new_row: { description: 'changed by hand' },
    });
    expect(audit?.old_row.description).not.toBe('changed by hand');
  });
});
