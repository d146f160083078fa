import type postgres from 'postgres';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/client.js';
import {
  deductCredits,
  expireCreditHolds,
  getCreditBalance,
  grantCredits,
  holdCredits,
  verifyLedger,
} from '../../src/credits/index.js';
import { refusalOf } from '../support.js';
import { useAttackEnvironment } from './attack-env.js';

// The ledger's functions call each other by name. When they lived in "public", a role with
// CREATE there (PUBLIC has it on PostgreSQL 14 and earlier; hosted setups grant it) could add
// an overload that was a better match for a call than the ledger's own, which then ran as the
// owner inside every write; or one with a defaulted extra argument, which made every call
// ambiguous. They now live in credit_ledger, where only the owner can create anything, and
// every call names exact argument types.

const env = useAttackEnvironment();
let app: postgres.Sql;
let owner: postgres.Sql;
let appDb: Database;
const FEATURE = 'chat_tool_call';

beforeAll(async () => {
  await env.grantAllToApp();
  app = env.session('app');
  owner = env.session('owner');
  appDb = env.packageAs('app');
  // The app role's own log of what its functions were asked, readable by anyone.
  await app.unsafe(`
    create table public.called (fn text);
    grant insert, select on public.called to public;
    create schema app_own;`);
});

// Each test's overloads go again, as the role that made them.
const made: { as: postgres.Sql; signature: string }[] = [];
afterEach(async () => {
  for (const { as, signature } of made.splice(0))
    await as.unsafe(`drop function if exists ${signature}`);
  await env.admin()`delete from public.called`;
});

async function overload(as: postgres.Sql, signature: string, definition: string) {
  await as.unsafe(`create function ${signature} ${definition}`);
  made.push({ as, signature: signature.replace(/ default [^,)]+/g, '') });
}

const mintingOverload = (fn: string) => `returns boolean language plpgsql as $$
  begin
    insert into public.called values ('${fn}');
    update public."User" set free_credits = 1000000;
    return true;
  end $$`;

async function calls() {
  return (await env.admin()<{ fn: string }[]>`select fn from public.called`).map((r) => r.fn);
}

describe('overloads of the ledger functions', () => {
  it('the app role cannot create anything in credit_ledger', async () => {
    const refusal = await refusalOf(
      app.unsafe(
        `create function credit_ledger.credit_tx_is_trail(oid) returns boolean language sql as 'select true'`,
      ),
    );
    expect(refusal.code).toBe('42501');
  });

  it("an (oid) overload of credit_tx_is_trail in public, the exact match for a trigger's TG_RELID, never runs inside a write", async () => {
    const userId = await env.newUser();
    await overload(
      app,
      'public.credit_tx_is_trail(oid)',
      mintingOverload('public.credit_tx_is_trail(oid)'),
    );
    const { balance } = await deductCredits(appDb, { userId, amount: 3, featureType: FEATURE });
    expect(balance).toBe(7);
    expect(await calls()).toEqual([]);
    expect(await env.state(userId)).toMatchObject({ credits: 7 });
  });

  it('the same overload in a schema of the app role put first on its search_path never runs either', async () => {
    const userId = await env.newUser();
    await overload(
      app,
      'app_own.credit_tx_is_trail(oid)',
      mintingOverload('app_own.credit_tx_is_trail(oid)'),
    );
    await overload(
      app,
      'app_own.credit_tx_hash(text, uuid, uuid, bigint, public.operation_type, public.feature_type, integer, integer, timestamptz, text, uuid, jsonb, uuid, timestamptz, jsonb)',
      `returns text language plpgsql as $$ begin insert into public.called values ('hash'); return 'x'; end $$`,
    );
    const session = env.session('app');
    await session.unsafe('set search_path = app_own, public, pg_catalog');
    await session`insert into "CreditTransaction" (user_id, amount, operation, feature_type)
                  values (${userId}, 2, 'deduct', ${FEATURE})`;
    expect(await calls()).toEqual([]);
    expect(await env.state(userId)).toMatchObject({ credits: 8 });
  });

  it('overloads with a defaulted extra argument, in public and in a schema of the app role, make no call ambiguous: writes, user creation, holds and the sweeper go on', async () => {
    const userId = await env.newUser();
    for (const schema of ['public', 'app_own']) {
      await overload(
        app,
        `${schema}.credit_tx_is_trail(regclass, extra integer default 0)`,
        mintingOverload(`${schema}.credit_tx_is_trail`),
      );
      await overload(
        app,
        `${schema}.credit_holds_expire(max_rows integer, only_user uuid default null, extra integer default 0)`,
        `returns setof public."CreditTransaction" language sql as 'select * from public."CreditTransaction" where false'`,
      );
    }
    await grantCredits(appDb, { userId, amount: 5, featureType: FEATURE });
    const hold = await holdCredits(appDb, {
      userId,
      amount: 2,
      featureType: FEATURE,
      expiresInMs: 1000,
    });
    expect(hold.balance).toBe(13);
    const created = await env.newUser(4);
    expect(await env.state(created)).toMatchObject({ credits: 4, rows: 2 });
    await expect(getCreditBalance(appDb, userId)).resolves.toMatchObject({ heldCredits: 2 });
    await env.admin()`select pg_sleep(1.1)`;
    const { expired } = await expireCreditHolds(appDb, { limit: 10, userId });
    expect(expired.map((row) => row.holdId)).toEqual([hold.holdId]);
    expect(await calls()).toEqual([]);
  });

  it('credits:verify reports an overload of a ledger function, wherever it is, and a stranger in credit_ledger', async () => {
    await overload(app, 'public.credit_tx_is_trail(oid)', mintingOverload('x'));
    // The owner can create in its own schema; verify still says so.
    await overload(
      owner,
      'credit_ledger.credit_tx_prepare(integer)',
      `returns integer language sql as 'select 1'`,
    );
    await overload(owner, 'credit_ledger.helper()', `returns integer language sql as 'select 1'`);
    const result = await verifyLedger(env.adminDb());
    const found = result.violations
      .filter((v) => v.userId === null)
      .map((v) => `${v.kind}: ${v.detail}`)
      .sort();
    expect(found).toEqual([
      "function_overload: function credit_ledger.credit_tx_prepare(integer) has the name of a ledger function: a call could resolve to it instead of the ledger's, or become ambiguous",
      "function_overload: function public.credit_tx_is_trail(oid) has the name of a ledger function: a call could resolve to it instead of the ledger's, or become ambiguous",
      "function_unexpected: function credit_ledger.helper() is in the ledger's schema but is not one of the ledger's",
    ]);
  });
});
