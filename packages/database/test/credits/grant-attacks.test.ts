import { afterEach, describe, expect, it } from 'vitest';
import { deductCredits, grantCredits, verifyLedger } from '../../src/credits/index.js';
import { refusalOf } from '../support.js';
import { useAttackEnvironment } from './attack-env.js';

// Each attack on credit grants (migrations 0014–0015) tried as the app role with the broad
// grants and as the owner. What remains of each grant, and when it expires, is money: only the
// ledger changes it, spending always takes the soonest-expiring credits first, an expiry takes
// off exactly what remains of one due grant, and credits:verify catches the owner's edits.

const env = useAttackEnvironment();
const FEATURE = 'chat_tool_call';
const HOUR = 60 * 60 * 1000;

/** A user with a purchased pack of 100 (never expires) and a promotion of 5 (expires in an hour). */
async function userWithGrants() {
  const userId = await env.newUser(0);
  const pack = await grantCredits(env.adminDb(), { userId, amount: 100, source: 'purchase' });
  const promo = await grantCredits(env.adminDb(), {
    userId,
    amount: 5,
    source: 'promotional',
    expiresAt: new Date(Date.now() + HOUR),
  });
  return { userId, pack: pack.transaction.id, promo: promo.transaction.id };
}

async function remaining(grantId: string): Promise<number | undefined> {
  const [row] = await env.admin()<{ remaining: number }[]>`
    select remaining from credit_ledger.credit_grant where id = ${grantId}`;
  return row?.remaining;
}

async function findings(userId: string): Promise<string[]> {
  const result = await verifyLedger(env.adminDb(), { userId });
  return [...new Set(result.violations.map((v) => v.kind))].sort();
}

const doomed: string[] = [];
afterEach(async () => {
  for (const id of doomed.splice(0)) await env.admin()`delete from "User" where id = ${id}`;
});

describe.each(['app', 'owner'] as const)('as the %s role', (role) => {
  it('the grant operations work with its grants', async () => {
    const db = env.packageAs(role);
    const userId = await env.newUser(0);
    await grantCredits(db, { userId, amount: 3, source: 'support', actor: role });
    const use = await deductCredits(db, { userId, amount: 2, featureType: FEATURE });
    expect(Object.values(use.transaction.allocations ?? {})).toEqual([2]);
    await env.expectLedgerVerifies();
  });

  it('cannot choose which grants its deduction takes from: the soonest-expiring go first', async () => {
    const sql = env.session(role);
    const { userId, pack, promo } = await userWithGrants();
    const [row] = await sql<{ allocations: Record<string, number> }[]>`
      insert into "CreditTransaction" (user_id, amount, operation, feature_type, allocations)
      values (${userId}, 3, 'deduct', ${FEATURE}, ${sql.json({ [pack]: 3 })}) returning allocations`;
    expect(row?.allocations).toEqual({ [promo]: 3 });
    expect(await remaining(pack)).toBe(100);
    await env.expectLedgerVerifies();
  });

  it('cannot expire a grant that is not due, part of one, or another user’s', async () => {
    const sql = env.session(role);
    const { userId, pack, promo } = await userWithGrants();
    const other = await userWithGrants();
    const expire = (user: string, amount: number, allocations: unknown) => sql`
      insert into "CreditTransaction" (user_id, amount, operation, feature_type, allocations)
      values (${user}, ${amount}, 'expire_grant', 'none', ${sql.json(allocations as never)})`;
    for (const statement of [
      expire(userId, 5, { [promo]: 5 }),
      expire(userId, 100, { [pack]: 100 }),
      expire(userId, 2, { [promo]: 2 }),
      expire(userId, 5, { [other.promo]: 5 }),
      expire(userId, 5, [promo]),
      expire(userId, 5, { [promo]: 5, [pack]: 0 }),
    ]) {
      expect((await refusalOf(statement)).code).toBe('BC024');
    }
    expect(await remaining(promo)).toBe(5);
    await env.expectLedgerVerifies();
  });

  it('cannot give a grant a source the ledger sets, nor a source or expiry to another row', async () => {
    const sql = env.session(role);
    const { userId } = await userWithGrants();
    for (const statement of [
      sql`insert into "CreditTransaction" (user_id, amount, operation, feature_type, source)
          values (${userId}, 9, 'grant', 'none', 'carried_over')`,
      sql`insert into "CreditTransaction" (user_id, amount, operation, feature_type, source)
          values (${userId}, 9, 'grant', 'none', 'opening')`,
      sql`insert into "CreditTransaction" (user_id, amount, operation, feature_type, source)
          values (${userId}, 1, 'deduct', ${FEATURE}, 'purchase')`,
      sql`insert into "CreditTransaction" (user_id, amount, operation, feature_type, grant_expires_at)
          values (${userId}, 1, 'refund', ${FEATURE}, now() + interval '1 day')`,
      sql`insert into "CreditTransaction" (user_id, amount, operation, feature_type, grant_expires_at)
          values (${userId}, 9, 'grant', 'none', now() - interval '1 day')`,
      sql`insert into "CreditTransaction" (user_id, amount, operation, feature_type, grant_expires_at)
          values (${userId}, 9, 'grant', 'none', 'infinity')`,
    ]) {
      expect((await refusalOf(statement)).code).toBe('BC016');
    }
    await env.expectLedgerVerifies();
  });
});

describe('as the app role', () => {
  it('cannot change what remains of a grant, its expiry, or remove it', async () => {
    const sql = env.session('app');
    const { promo } = await userWithGrants();
    for (const statement of [
      sql`update credit_ledger.credit_grant set remaining = 1000 where id = ${promo}`,
      sql`update credit_ledger.credit_grant set expires_at = null where id = ${promo}`,
      sql`delete from credit_ledger.credit_grant where id = ${promo}`,
      sql`insert into credit_ledger.credit_grant (id, user_id, chat, source, amount, remaining, created_at, created_seq)
          values (gen_random_uuid(), gen_random_uuid(), false, 'purchase', 9, 9, now(), 1)`,
    ]) {
      expect((await refusalOf(statement)).code).toBe('42501');
    }
    expect(await remaining(promo)).toBe(5);
  });
});

describe("the owner's edits of grants are found by verifyLedger", () => {
  it('what remains of a grant, edited by hand', async () => {
    const { userId, promo } = await userWithGrants();
    doomed.push(userId);
    await env.session(
      'owner',
    )`update credit_ledger.credit_grant set remaining = 4 where id = ${promo}`;
    expect(await findings(userId)).toEqual(['grant_remaining', 'grants_balance']);
  });

  it("a grant's expiry moved, with what remains and the balance kept", async () => {
    const { userId, promo } = await userWithGrants();
    doomed.push(userId);
    await env.session(
      'owner',
    )`update credit_ledger.credit_grant set expires_at = null where id = ${promo}`;
    expect(await findings(userId)).toEqual(['grant_origin']);
  });

  it('credits moved from one grant to another, the sum kept', async () => {
    const { userId, pack, promo } = await userWithGrants();
    doomed.push(userId);
    // 3 of the promotion spent, then put back by hand and taken off the pack instead.
    await deductCredits(env.adminDb(), { userId, amount: 3, featureType: FEATURE });
    const owner = env.session('owner');
    await owner`update credit_ledger.credit_grant set remaining = remaining + 3 where id = ${promo}`;
    await owner`update credit_ledger.credit_grant set remaining = remaining - 3 where id = ${pack}`;
    expect(await findings(userId)).toEqual(['grant_remaining']);
  });

  it('a grant removed', async () => {
    const { userId, promo } = await userWithGrants();
    doomed.push(userId);
    await env.session('owner')`delete from credit_ledger.credit_grant where id = ${promo}`;
    expect(await findings(userId)).toEqual(['grant_origin', 'grants_balance']);
  });
});
