import { createTestDatabase } from '@bragdoc/test-postgres';
import postgres from 'postgres';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { createDatabase, type DatabaseHandle } from '../../src/client.js';
import {
  deductCredits,
  ForeignLedgerTriggerError,
  holdCredits,
  settleCreditHold,
  verifyLedger,
} from '../../src/credits/index.js';
import { createLedgerRoles, type LedgerRoles } from './roles.js';

// `GRANT ALL ON ALL TABLES` (hosted platforms grant it to their API roles) includes the
// TRIGGER privilege: an app role can then attach a trigger of its own to the ledger's tables,
// with a function it wrote, and have it run inside every ledger write, after the rules were
// checked. These tests are that attack: the ledger must refuse to write while such a trigger
// is there, and let the owner's own triggers be.

let admin: postgres.Sql;
let adminDb: DatabaseHandle;
let roles: LedgerRoles;
let app: postgres.Sql;
let owner: postgres.Sql;
let appDb: DatabaseHandle;
let closeDatabase: () => Promise<void>;
const FEATURE = 'chat_tool_call';

beforeAll(async () => {
  const database = await createTestDatabase();
  closeDatabase = database.close;
  roles = await createLedgerRoles(database.url, inject('testPostgres')?.serverUrl ?? '');
  admin = postgres(database.url, { max: 1, onnotice: () => {} });
  adminDb = createDatabase(database.url, { max: 2 });
  const appRole = new URL(roles.url('app')).username;
  await admin.unsafe(`grant all on all tables in schema public to ${appRole}`);
  await admin.unsafe(`grant create on schema public to ${appRole}`);
  app = postgres(roles.url('app'), { max: 1, onnotice: () => {} });
  owner = postgres(roles.url('owner'), { max: 1, onnotice: () => {} });
  appDb = createDatabase(roles.url('app'), { max: 2 });
  await app.unsafe(`
    create function public.mint() returns trigger language plpgsql as $$
    begin
      if TG_TABLE_NAME = 'User' and TG_LEVEL = 'ROW' then NEW.free_credits := 1000000; end if;
      if TG_TABLE_NAME = 'CreditTransaction' and TG_LEVEL = 'ROW' then NEW.amount := 1; end if;
      return NEW;
    end $$`);
}, 60_000);

afterAll(async () => {
  await Promise.all([app.end(), owner.end(), appDb.close(), adminDb.close()]);
  await admin.end();
  await closeDatabase();
  await roles.drop();
});

// The app role cannot drop what it attached (only a table's owner can): the owner does.
const attached: { name: string; table: string }[] = [];
afterEach(async () => {
  for (const { name, table } of attached.splice(0))
    await owner.unsafe(`drop trigger if exists ${name} on ${table}`);
});

async function attach(as: postgres.Sql, name: string, table: string, definition: string) {
  await as.unsafe(`create trigger ${name} ${definition.replace('$TABLE', table)}`);
  attached.push({ name, table });
}

async function newUser(credits = 10): Promise<string> {
  const [row] = await admin<{ id: string }[]>`
    insert into "User" (email, free_credits) values (${`${crypto.randomUUID()}@example.com`}, ${credits})
    returning id`;
  return row?.id ?? '';
}

async function state(userId: string) {
  const [row] = await admin<{ credits: number; rows: number }[]>`
    select free_credits as credits,
      (select count(*)::int from "CreditTransaction" where user_id = ${userId}) as rows
    from "User" where id = ${userId}`;
  return row;
}

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
    const error = await deductCredits(appDb.db, { userId, amount: 1, featureType: FEATURE }).catch(
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
      deductCredits(appDb.db, { userId, amount: 1, featureType: FEATURE }),
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
      deductCredits(appDb.db, { userId, amount: 5, featureType: FEATURE }),
    ).rejects.toMatchObject({ code: 'FOREIGN_LEDGER_TRIGGER' });
    expect(await state(userId)).toEqual(before);
  });

  it('on "CreditHold", any trigger refuses the writes of holds (and every other ledger write)', async () => {
    const userId = await newUser();
    const { holdId } = await holdCredits(adminDb.db, { userId, amount: 3, featureType: FEATURE });
    await attach(
      app,
      'zzz_hold',
      '"CreditHold"',
      'after delete on $TABLE for each statement execute function public.mint()',
    );
    await expect(settleCreditHold(appDb.db, { holdId, amount: 1 })).rejects.toMatchObject({
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
      deductCredits(appDb.db, { userId, amount: 1, featureType: FEATURE }),
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
    const result = await deductCredits(appDb.db, { userId, amount: 1, featureType: FEATURE });
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
    const result = await deductCredits(appDb.db, { userId, amount: 2, featureType: FEATURE });
    expect(result.balance).toBe(8);
    expect(await state(userId)).toEqual({ credits: 8, rows: 3 }); // two opening rows and the deduction
    const [named] = await admin`select name from "User" where id = ${userId}`;
    expect(named?.name).toBe('touched');
    await owner.unsafe('drop trigger touch_user on "User"');
    attached.length = 0;
    expect((await verifyLedger(adminDb.db, { userId })).violations).toEqual([]);
  });
});
