import type postgres from 'postgres';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/client.js';
import {
  deductCredits,
  ForeignLedgerTriggerError,
  holdCredits,
  settleCreditHold,
  verifyLedger,
} from '../../src/credits/index.js';
import { useAttackEnvironment } from './attack-env.js';

// `GRANT ALL ON ALL TABLES` (hosted platforms grant it to their API roles) includes the
// TRIGGER privilege: an app role can then attach a trigger of its own to the ledger's tables,
// with a function it wrote, and have it run inside every ledger write, after the rules were
// checked. These tests are that attack: the ledger must refuse to write while such a trigger
// is there, and let the owner's own triggers be.

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
});
afterEach(() => env.dropAttachedTriggers());

const attach = env.attachTrigger;
const newUser = env.newUser;
const state = env.state;

describe('a trigger of the app role on a ledger table', () => {
  it('on "User", run BEFORE UPDATE after the guard to set the balance: the write refuses, naming it, and nothing changes', async () => {
    const userId = await newUser();
    const before = await state(userId);
    await attach(
      app,
      'zzz_mint',
      '"User"',
      'before update on $TABLE for each row execute function public.mint()',
    );
    const error = await deductCredits(appDb, { userId, amount: 1, featureType: FEATURE }).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ForeignLedgerTriggerError);
    expect(error).toMatchObject({ code: 'FOREIGN_LEDGER_TRIGGER' });
    expect((error as ForeignLedgerTriggerError).triggers).toContain('zzz_mint on public."User"');
    expect(await state(userId)).toEqual(before);
  });

  it('on "User", a statement-level trigger AFTER UPDATE (it could create one that does) refuses writes too', async () => {
    const userId = await newUser();
    await attach(
      app,
      'zzz_after',
      '"User"',
      'after update on $TABLE for each statement execute function public.mint()',
    );
    await expect(
      deductCredits(appDb, { userId, amount: 1, featureType: FEATURE }),
    ).rejects.toMatchObject({ code: 'FOREIGN_LEDGER_TRIGGER' });
  });

  it('on "CreditTransaction", BEFORE INSERT after the ledger checked the row, to change its amount: refused', async () => {
    const userId = await newUser();
    const before = await state(userId);
    await attach(
      app,
      'zzz_amount',
      '"CreditTransaction"',
      'before insert on $TABLE for each row execute function public.mint()',
    );
    await expect(
      deductCredits(appDb, { userId, amount: 5, featureType: FEATURE }),
    ).rejects.toMatchObject({ code: 'FOREIGN_LEDGER_TRIGGER' });
    expect(await state(userId)).toEqual(before);
  });

  it('on "CreditHold", any trigger refuses the writes of holds (and every other ledger write)', async () => {
    const userId = await newUser();
    const { holdId } = await holdCredits(env.adminDb(), {
      userId,
      amount: 3,
      featureType: FEATURE,
    });
    await attach(
      app,
      'zzz_hold',
      '"CreditHold"',
      'after delete on $TABLE for each statement execute function public.mint()',
    );
    await expect(settleCreditHold(appDb, { holdId, amount: 1 })).rejects.toMatchObject({
      code: 'FOREIGN_LEDGER_TRIGGER',
    });
  });

  it('with a built-in function (pg_catalog), which nobody answers for: refused', async () => {
    const userId = await newUser();
    await attach(
      app,
      'zzz_builtin',
      '"User"',
      'before update on $TABLE for each row execute function suppress_redundant_updates_trigger()',
    );
    await expect(
      deductCredits(appDb, { userId, amount: 1, featureType: FEATURE }),
    ).rejects.toMatchObject({ code: 'FOREIGN_LEDGER_TRIGGER' });
  });

  it('on "User", firing only on INSERT, runs inside no ledger write: writes go on', async () => {
    const userId = await newUser();
    await attach(
      app,
      'zzz_on_insert',
      '"User"',
      'before insert on $TABLE for each row execute function public.mint()',
    );
    const result = await deductCredits(appDb, { userId, amount: 1, featureType: FEATURE });
    expect(result.balance).toBe(9);
  });
});

describe("the owner's own trigger on a ledger table", () => {
  it('does not stop ledger writes, which still apply exactly their rows', async () => {
    const userId = await newUser();
    await owner.unsafe(`
      create or replace function public.touch_user() returns trigger language plpgsql as $$
      begin NEW.name := coalesce(NEW.name, 'touched'); return NEW; end $$`);
    await attach(
      owner,
      'touch_user',
      '"User"',
      'before update on $TABLE for each row execute function public.touch_user()',
    );
    const result = await deductCredits(appDb, { userId, amount: 2, featureType: FEATURE });
    expect(result.balance).toBe(8);
    expect(await state(userId)).toMatchObject({ credits: 8, rows: 3 }); // two opening rows and the deduction
    const [named] = await env.admin()`select name from "User" where id = ${userId}`;
    expect(named?.name).toBe('touched');
    await env.dropAttachedTriggers();
    expect((await verifyLedger(env.adminDb(), { userId })).violations).toEqual([]);
  });
});
