import type postgres from 'postgres';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  deductCredits,
  UnsafeTriggerPrivilegeError,
  verifyLedger,
} from '../../src/credits/index.js';
import { useAttackEnvironment } from './attack-env.js';

// Review of migration 0005: an app role granted ALL on the tables (TRIGGER included) and
// CREATE on the schema, trying to run code of its own inside a ledger write in ways the
// BC017 check does not see; and writes that must expire every due hold of their user.

const env = useAttackEnvironment();
let app: postgres.Sql;
let app2: postgres.Sql;
const FEATURE = 'chat_tool_call';

beforeAll(async () => {
  await env.grantAllToApp();
  app = env.session('app');
  app2 = env.session('app');
});
afterEach(() => env.dropAttachedTriggers());

const attach = env.attachTrigger;
const newUser = env.newUser;
const credits = async (userId: string) => (await env.state(userId))?.credits;

describe('code of the app role inside a ledger write', () => {
  // Under REPEATABLE READ and SERIALIZABLE the check reads pg_trigger with the transaction's
  // snapshot, while the executor fires the triggers the catalog has now: a trigger created
  // after the snapshot was taken would not be seen. So while a role other than the owner
  // holds TRIGGER on the ledger's tables, writes under those levels refuse.
  it('a trigger on "User" created after a REPEATABLE READ snapshot was taken never runs inside a write: the write refuses while the app role holds TRIGGER', async () => {
    const userId = await newUser();
    const outcome = await app
      .begin('isolation level repeatable read', async (tx) => {
        await tx`select 1`; // the snapshot
        await attach(
          app2,
          'zzz_mint_rr',
          '"User"',
          'before update on $TABLE for each row execute function public.mint()',
        );
        await tx`insert into "CreditTransaction" (user_id, amount, operation, feature_type)
                 values (${userId}, 1, 'deduct', ${FEATURE})`;
        return 'written';
      })
      .catch((e: { code?: string }) => e.code);
    expect(outcome).toBe('BC018');
    expect(await credits(userId)).toBe(10);
  });

  it('the package names the roles holding TRIGGER and what to do (UNSAFE_TRIGGER_PRIVILEGE), under SERIALIZABLE too', async () => {
    const userId = await newUser();
    const appDb = env.packageAs('app', 1);
    const error = await appDb
      .transaction((tx) => deductCredits(tx, { userId, amount: 1, featureType: FEATURE }), {
        isolationLevel: 'serializable',
      })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UnsafeTriggerPrivilegeError);
    expect((error as UnsafeTriggerPrivilegeError).roles).toContain(env.roleName('app'));
    expect((error as Error).message).toMatch(/READ COMMITTED|REVOKE TRIGGER/);
  });

  it('at READ COMMITTED the same grants are fine, and under REPEATABLE READ once TRIGGER is revoked', async () => {
    const userId = await newUser();
    const appRole = env.roleName('app');
    const appDb = env.packageAs('app', 1);
    try {
      expect(
        (await deductCredits(appDb, { userId, amount: 1, featureType: FEATURE })).balance,
      ).toBe(9);
      await env
        .admin()
        .unsafe(`revoke trigger on "User", "CreditTransaction", "CreditHold" from ${appRole}`);
      const result = await appDb.transaction(
        (tx) => deductCredits(tx, { userId, amount: 1, featureType: FEATURE }),
        { isolationLevel: 'repeatable read' },
      );
      expect(result.balance).toBe(8);
    } finally {
      await env
        .admin()
        .unsafe(`grant trigger on "User", "CreditTransaction", "CreditHold" to ${appRole}`);
    }
  });

  it('a trigger on "User" created while a write waits after the check (on a refund_of row lock) is still refused', async () => {
    const userId = await newUser();
    const [deduct] = await env.admin()<{ id: string }[]>`
      insert into "CreditTransaction" (user_id, amount, operation, feature_type)
      values (${userId}, 2, 'deduct', ${FEATURE}) returning id`;
    const blocker = env.session('app');
    try {
      let release: () => void = () => {};
      const released = new Promise<void>((r) => {
        release = r;
      });
      const holding = blocker.begin(async (tx) => {
        await tx`select id from "CreditTransaction" where id = ${deduct?.id ?? ''} for update`;
        await released;
      });
      await new Promise((r) => setTimeout(r, 100));
      const write = app`
        insert into "CreditTransaction" (user_id, amount, operation, feature_type, refund_of)
        values (${userId}, 1, 'refund', ${FEATURE}, ${deduct?.id ?? ''})`.then(
        () => 'written',
        (e: { code?: string }) => e.code,
      );
      await new Promise((r) => setTimeout(r, 300));
      // Not awaited: with the write's table lock it waits for the write's transaction to end.
      const attaching = attach(
        app2,
        'zzz_mint_wait',
        '"User"',
        'before update on $TABLE for each row execute function public.mint()',
      );
      await new Promise((r) => setTimeout(r, 300));
      release();
      await holding;
      const outcome = await write;
      await attaching;
      // Either the write saw the trigger and refused, or the trigger came only after it.
      expect(['written', 'BC017']).toContain(outcome);
      expect(await credits(userId)).toBe(outcome === 'written' ? 9 : 8);
      const { violations } = await verifyLedger(env.adminDb(), { userId });
      expect(violations.filter((v) => v.kind !== 'trigger_unexpected')).toEqual([]);
    } finally {
      await blocker.end();
    }
  });

  it('a BEFORE INSERT trigger on "User" cannot create a user whose balance has no opening rows', async () => {
    await attach(
      app,
      'zzz_mint_insert',
      '"User"',
      'before insert on $TABLE for each row execute function public.mint()',
    );
    const email = `${crypto.randomUUID()}@example.com`;
    const outcome = await app`
      insert into "User" (email, free_credits) values (${email}, 10) returning id`.then(
      () => 'created',
      (e: { code?: string }) => e.code,
    );
    expect(outcome).toBe('BC017');
    expect(await env.admin()`select 1 from "User" where email = ${email}`).toHaveLength(0);
  });
});

describe('a write expires every hold of its user due at the time it is dated', () => {
  it('a hold that falls due while the write expires many others is expired too, not left open behind the write', async () => {
    const userId = await newUser(1000);
    const [{ t0 } = { t0: '' }] = await env.admin()<{ t0: string }[]>`
      select (date_trunc('milliseconds', clock_timestamp()) + interval '2 seconds')::text as t0`;
    // 95 holds due at t0 (fewer than the 100 a write gives back at once; expiring them takes
    // over 20 ms even on a fast server), one due 10 ms later, all taken before t0.
    await env.admin().unsafe(`
      do $$ begin
        for i in 1..95 loop
          insert into "CreditTransaction" (user_id, amount, operation, feature_type, hold_expires_at)
          values ('${userId}', 1, 'hold', '${FEATURE}', '${t0}'::timestamptz);
        end loop;
        insert into "CreditTransaction" (user_id, amount, operation, feature_type, hold_expires_at)
        values ('${userId}', 1, 'hold', '${FEATURE}', '${t0}'::timestamptz + interval '10 milliseconds');
      end $$`);
    await env.admin().unsafe(`
      do $$ begin
        perform pg_sleep(extract(epoch from ('${t0}'::timestamptz + interval '2 milliseconds' - clock_timestamp())));
        insert into "CreditTransaction" (user_id, amount, operation, feature_type)
        values ('${userId}', 1, 'deduct', '${FEATURE}');
      end $$`);
    const late = await env.admin()<{ expires_at: string; written_at: string }[]>`
      select h.expires_at::text, d.created_at::text as written_at
        from "CreditHold" h, "CreditTransaction" d
       where h.user_id = ${userId} and d.user_id = ${userId} and d.operation = 'deduct'
         and h.expires_at <= d.created_at`;
    expect(late).toEqual([]);
  });
});
