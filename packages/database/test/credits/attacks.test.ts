import { createTestDatabase } from '@bragdoc/test-postgres';
import { sql } from 'drizzle-orm';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createDatabase, type Database, type DatabaseHandle } from '../../src/client.js';
import {
  deductCredits,
  grantCredits,
  ledgerFingerprint,
  ledgerHeads,
  listCreditTransactions,
  refundCredits,
  verifyLedger,
} from '../../src/credits/index.js';
import { refusalOf } from '../support.js';
import { type AttackerRole, createLedgerRoles, type LedgerRoles } from './roles.js';

// Each attack the ledger must stop, tried the way an outsider would, as an app role with the
// broad grants and as the role that owns the tables (README: "What the database guarantees,
// and against whom"). After each, the trail must still explain every balance: verifyLedger.

let admin: postgres.Sql;
let adminDb: DatabaseHandle;
let roles: LedgerRoles;
let closeDatabase: () => Promise<void>;
const sessions: postgres.Sql[] = [];
const handles: DatabaseHandle[] = [];

beforeAll(async () => {
  const database = await createTestDatabase();
  closeDatabase = database.close;
  const serverUrl = inject('testPostgres')?.serverUrl ?? '';
  roles = await createLedgerRoles(database.url, serverUrl);
  admin = postgres(database.url, { max: 2, onnotice: () => {} });
  adminDb = createDatabase(database.url, { max: 2 });
}, 60_000);

afterAll(async () => {
  await Promise.all([...sessions.map((s) => s.end()), ...handles.map((h) => h.close())]);
  await admin.end();
  await adminDb.close();
  await closeDatabase();
  await roles.drop();
});

/** A connection of its own as the role (a session: TEMP objects and settings stay on it). */
function session(role: AttackerRole): postgres.Sql {
  const sql = postgres(roles.url(role), { max: 1, onnotice: () => {} });
  sessions.push(sql);
  return sql;
}

function packageAs(role: AttackerRole): Database {
  const handle = createDatabase(roles.url(role), { max: 2 });
  handles.push(handle);
  return handle.db;
}

async function newUser(credits = 10): Promise<string> {
  const [row] = await admin<{ id: string }[]>`
    insert into "User" (email, free_credits) values (${`${crypto.randomUUID()}@example.com`}, ${credits})
    returning id`;
  return row?.id ?? '';
}

async function state(userId: string) {
  const [row] = await admin<{ credits: number; chats: number; rows: number }[]>`
    select free_credits as credits, free_chat_messages as chats,
      (select count(*)::int from "CreditTransaction" where user_id = ${userId}) as rows
    from "User" where id = ${userId}`;
  return row;
}

async function expectLedgerVerifies() {
  const result = await verifyLedger(adminDb.db);
  expect(result.violations).toEqual([]);
}

describe.each(['app', 'owner'] as const)('as the %s role', (role) => {
  it('the ledger works with its grants', async () => {
    const db = packageAs(role);
    const userId = await newUser();
    const d = await deductCredits(db, { userId, amount: 3, featureType: 'chat_tool_call' });
    await refundCredits(db, {
      userId,
      amount: 1,
      featureType: 'chat_tool_call',
      refundOf: d.transaction.id,
    });
    expect(
      (await grantCredits(db, { userId, amount: 5, featureType: 'chat_tool_call' })).balance,
    ).toBe(13);
    await expectLedgerVerifies();
  });

  it('1. a trigger of its own on a TEMP table, with the old flag set, cannot update a balance', async () => {
    const sql = session(role);
    const userId = await newUser();
    await sql.unsafe(`
      create temp table poke (id int);
      create function pg_temp.poke() returns trigger language plpgsql as $$
      begin
        update public."User" set free_credits = 1000000 where id = '${userId}';
        return new;
      end $$;
      create trigger poke before insert on pg_temp.poke for each row execute function pg_temp.poke();
      set bragdoc.ledger_write = on`);
    const error = await refusalOf(sql`insert into poke values (1)`);
    expect(error.code).toBe('BC006');
    expect(await state(userId)).toMatchObject({ credits: 10, rows: 2 });
    await expectLedgerVerifies();
  });

  it('2. a TEMP table named "User" does not let it delete the trail of a real user', async () => {
    const sql = session(role);
    const userId = await newUser();
    await sql`create temp table "User" (id uuid)`;
    const error = await refusalOf(
      sql`delete from public."CreditTransaction" where user_id = ${userId}`,
    );
    expect(['BC005', '42501']).toContain(error.code);
    expect(await state(userId)).toMatchObject({ rows: 2 });
    await expectLedgerVerifies();
  });

  it('3. a TEMP "User" with a fake balance is not what a deduction reads', async () => {
    const sql = session(role);
    const userId = await newUser();
    await sql`create temp table "User" (id uuid, free_credits int, free_chat_messages int, ledger_seq bigint, ledger_hash text)`;
    await sql`insert into "User" values (${userId}, 100000, 100000, 0, null)`;
    const error = await refusalOf(sql`
      insert into "CreditTransaction" (user_id, amount, operation, feature_type, balance_after)
      values (${userId}, 500, 'deduct', 'chat_tool_call', 99500)`);
    expect(error.code).toBe('BC001');
    expect(await state(userId)).toMatchObject({ credits: 10, rows: 2 });
    await expectLedgerVerifies();
  });

  it('4. a TEMP "CreditTransaction" with a fake deduction does not lift a refund cap', async () => {
    const sql = session(role);
    const userId = await newUser();
    const { transaction } = await deductCredits(adminDb.db, {
      userId,
      amount: 2,
      featureType: 'chat_tool_call',
    });
    await sql`create temp table "CreditTransaction" (like public."CreditTransaction")`;
    await sql`
      insert into "CreditTransaction" (id, user_id, amount, operation, feature_type, balance_after, seq, hash, created_at)
      values (${transaction.id}, ${userId}, 1000, 'deduct', 'chat_tool_call', 0, 1, 'x', now())`;
    const error = await refusalOf(sql`
      insert into public."CreditTransaction" (user_id, amount, operation, feature_type, refund_of)
      values (${userId}, 500, 'refund', 'chat_tool_call', ${transaction.id})`);
    expect(error.code).toBe('BC003');
    expect(await state(userId)).toMatchObject({ credits: 8, rows: 3 });
    await expectLedgerVerifies();
  });

  it('4b. with a TEMP "CreditTransaction", ON CONFLICT DO NOTHING on a used key changes nothing', async () => {
    const sql = session(role);
    const userId = await newUser();
    await deductCredits(adminDb.db, {
      userId,
      amount: 3,
      featureType: 'chat_tool_call',
      idempotencyKey: 'used',
    });
    await sql`create temp table "CreditTransaction" (like public."CreditTransaction")`;
    const rows = await sql`
      insert into public."CreditTransaction" (user_id, amount, operation, feature_type, idempotency_key)
      values (${userId}, 3, 'deduct', 'chat_tool_call', 'used') on conflict do nothing returning id`;
    expect(rows).toHaveLength(0);
    expect(await state(userId)).toMatchObject({ credits: 7, rows: 3 });
    await expectLedgerVerifies();
  });

  it('5. an ON CONFLICT DO NOTHING racing an uncommitted row with the same id takes nothing', async () => {
    const a = session(role);
    const b = session(role);
    const [u1, u2] = [await newUser(), await newUser()];
    const id = crypto.randomUUID();
    let release: () => void = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    let inserted: () => void = () => {};
    const aInserted = new Promise<void>((resolve) => {
      inserted = resolve;
    });
    const first = a.begin(async (tx) => {
      await tx`insert into "CreditTransaction" (id, user_id, amount, operation, feature_type)
               values (${id}, ${u1}, 5, 'deduct', 'chat_tool_call')`;
      inserted();
      await held;
    });
    await aInserted;
    const second = b`
      insert into "CreditTransaction" (id, user_id, amount, operation, feature_type)
      values (${id}, ${u2}, 5, 'deduct', 'chat_tool_call') on conflict do nothing returning id`;
    await new Promise((resolve) => setTimeout(resolve, 200));
    release();
    await first;
    expect(await second).toHaveLength(0);
    expect(await state(u1)).toMatchObject({ credits: 5, rows: 3 });
    expect(await state(u2)).toMatchObject({ credits: 10, rows: 2 });
    await expectLedgerVerifies();
  });

  it("6. moving a user's id cannot take its trail away", async () => {
    const sql = session(role);
    const userId = await newUser();
    await deductCredits(adminDb.db, { userId, amount: 1, featureType: 'chat_tool_call' });
    const error = await refusalOf(sql`
      with m as (update "User" set id = gen_random_uuid() where id = ${userId} returning 1)
      delete from "CreditTransaction" where user_id = ${userId} and exists (select 1 from m)`);
    expect(['BC006', 'BC005']).toContain(error.code);
    expect(await state(userId)).toMatchObject({ credits: 9, rows: 3 });
    await expectLedgerVerifies();
  });

  it('7. a pg_trigger_depth() of its own, first in search_path, does not open the guard', async () => {
    const sql = session(role);
    const userId = await newUser();
    const schema = `s_${role}`;
    await sql.unsafe(`
      create schema ${schema};
      create function ${schema}.pg_trigger_depth() returns int language sql as 'select 9';
      set search_path = ${schema}, pg_catalog, public;
      set bragdoc.ledger_write = on`);
    const error = await refusalOf(
      sql`update "User" set free_credits = 1000000 where id = ${userId}`,
    );
    expect(error.code).toBe('BC006');
    expect(await state(userId)).toMatchObject({ credits: 10 });
    await expectLedgerVerifies();
  });

  it('cannot move the head (ledger_seq, ledger_hash) or a balance with it', async () => {
    const sql = session(role);
    const userId = await newUser();
    for (const statement of [
      sql`update "User" set ledger_seq = ledger_seq + 1, free_credits = 1000 where id = ${userId}`,
      sql`update "User" set ledger_hash = 'forged' where id = ${userId}`,
      sql`update "User" set ledger_seq = 0, ledger_hash = null where id = ${userId}`,
    ]) {
      expect((await refusalOf(statement)).code).toBe('BC006');
    }
    await expectLedgerVerifies();
  });

  it('a trail row and a matching balance update in one statement still leave one consistent change', async () => {
    const sql = session(role);
    const userId = await newUser();
    // The CTE's UPDATE sees the row the INSERT wrote, so the guard lets it through; then the
    // ledger's own apply finds the user already moved on, and the whole statement fails.
    const error = await refusalOf(sql`
      with t as (
        insert into "CreditTransaction" (user_id, amount, operation, feature_type)
        values (${userId}, 4, 'grant', 'chat_tool_call') returning seq, hash, balance_after)
      update "User" u set free_credits = t.balance_after, ledger_seq = t.seq, ledger_hash = t.hash
      from t where u.id = ${userId}`);
    expect(['BC006', 'BC008']).toContain(error.code);
    expect(await state(userId)).toMatchObject({ credits: 10, rows: 2 });
    await expectLedgerVerifies();
  });

  it('chooses none of balance_after, created_at, seq and hash, and cannot date a row past what the history reads', async () => {
    const sql = session(role);
    const userId = await newUser();
    for (const at of ['infinity', '20000-01-01', '1999-01-01']) {
      await sql`
        insert into "CreditTransaction" (user_id, amount, operation, feature_type, balance_after, seq, hash, created_at)
        values (${userId}, 1, 'grant', 'chat_tool_call', 12345, 99, 'mine', ${at}::text::timestamptz)`;
    }
    const rows = await admin`
      select seq::int, balance_after, hash, created_at > now() - interval '1 minute' as now
      from "CreditTransaction" where user_id = ${userId} order by seq`;
    expect(rows.map((r) => [r.seq, r.balance_after, r.now])).toEqual([
      [1, 10, true],
      [2, 20, true],
      [3, 11, true],
      [4, 12, true],
      [5, 13, true],
    ]);
    expect(rows.every((r) => /^[0-9a-f]{64}$/.test(r.hash))).toBe(true);
    const page = await listCreditTransactions(adminDb.db, { userId });
    expect(page.items.map((r) => r.seq)).toEqual([5, 4, 3, 2, 1]);
    await expectLedgerVerifies();
  });

  it('a user it creates, with any balances, gets opening rows that explain them', async () => {
    const sql = session(role);
    const [user] = await sql<{ id: string; ledger_seq: string }[]>`
      insert into "User" (email, free_credits, free_chat_messages, ledger_seq, ledger_hash)
      values (${`${crypto.randomUUID()}@example.com`}, 777, 3, 50, 'forged') returning id, ledger_seq`;
    const rows = await admin`
      select seq::int, operation, feature_type, amount, balance_after, metadata
      from "CreditTransaction" where user_id = ${user?.id ?? ''} order by seq`;
    expect(rows).toEqual([
      {
        seq: 1,
        operation: 'grant',
        feature_type: 'none',
        amount: 777,
        balance_after: 777,
        metadata: { reason: 'opening_balance' },
      },
      {
        seq: 2,
        operation: 'grant',
        feature_type: 'chat_message',
        amount: 3,
        balance_after: 3,
        metadata: { reason: 'opening_balance' },
      },
    ]);
    await expectLedgerVerifies();
  });

  it('cannot write a credit change of a new user in the statement that creates it', async () => {
    const sql = session(role);
    const error = await refusalOf(sql`
      with u as (insert into "User" (email) values (${`${crypto.randomUUID()}@example.com`}) returning id)
      insert into "CreditTransaction" (user_id, amount, operation, feature_type)
      select id, 1000, 'grant', 'chat_tool_call' from u`);
    expect(error.code).toBe('BC008');
    await expectLedgerVerifies();
  });

  it('COPY into the trail goes through the ledger like an INSERT', async () => {
    const sql = session(role);
    const userId = await newUser();
    const copy =
      await sql`copy "CreditTransaction" (user_id, amount, operation, feature_type, balance_after) from stdin`.writable();
    await new Promise<void>((resolve, reject) => {
      copy.on('error', reject);
      copy.on('finish', resolve);
      copy.end(`${userId}\t4\tdeduct\tchat_tool_call\t9999\n`);
    });
    expect(await state(userId)).toMatchObject({ credits: 6, rows: 3 });
    await expectLedgerVerifies();
  });

  it('two rows of one user in one INSERT are refused whole', async () => {
    const sql = session(role);
    const userId = await newUser();
    const error = await refusalOf(sql`
      insert into "CreditTransaction" (user_id, amount, operation, feature_type)
      values (${userId}, 1, 'deduct', 'chat_tool_call'), (${userId}, 1, 'deduct', 'chat_tool_call')`);
    expect(['23505', 'BC008']).toContain(error.code);
    expect(await state(userId)).toMatchObject({ credits: 10, rows: 2 });
    await expectLedgerVerifies();
  });

  it('cannot UPDATE, DELETE or TRUNCATE the trail, nor TRUNCATE "User" with it', async () => {
    const sql = session(role);
    const userId = await newUser();
    for (const statement of [
      sql`update "CreditTransaction" set amount = 1 where user_id = ${userId}`,
      sql`delete from "CreditTransaction" where user_id = ${userId}`,
      sql`truncate "CreditTransaction" cascade`,
      sql`truncate "User" cascade`,
      sql`truncate "CreditHold"`,
    ]) {
      // The owner is refused by the trail's triggers; the app role has no TRUNCATE at all.
      expect(['BC005', '42501']).toContain((await refusalOf(statement)).code);
    }
    expect(await state(userId)).toMatchObject({ rows: 2 });
    await expectLedgerVerifies();
  });

  it('cannot turn the triggers off for its session (session_replication_role)', async () => {
    const sql = session(role);
    expect((await refusalOf(sql`set session_replication_role = replica`)).code).toBe('42501');
  });

  it("cannot run the ledger's apply as a trigger of its own TEMP table", async () => {
    const sql = session(role);
    const userId = await newUser();
    await sql`create temp table fake (user_id uuid, feature_type text, balance_after int, seq bigint, hash text)`;
    const attach = sql`create trigger f after insert on fake for each row execute function credit_ledger.credit_tx_apply()`;
    if (role === 'app') {
      // EXECUTE is revoked from PUBLIC: only the owner may even attach it.
      expect((await refusalOf(attach)).code).toBe('42501');
    } else {
      await attach;
      const error = await refusalOf(
        sql`insert into fake values (${userId}, 'document_generation', 1000000, 3, 'forged')`,
      );
      expect(error.code).toBe('BC010');
    }
    expect(await state(userId)).toMatchObject({ credits: 10, rows: 2 });
    await expectLedgerVerifies();
  });

  it('cannot delete a user and create it again in the statement that wrote it a row', async () => {
    const sql = session(role);
    for (const credits of [10, 0]) {
      const userId = await newUser(credits);
      const before = await state(userId);
      await sql.unsafe(`
        create or replace function pg_temp.kill(u uuid) returns boolean language plpgsql as
        $$ begin delete from public."User" where id = u; return true; end $$`);
      const error = await refusalOf(sql`
        with t as (
          insert into "CreditTransaction" (user_id, amount, operation, feature_type)
          values (${userId}, 5000, 'grant', 'document_generation') returning user_id)
        insert into "User" (id, email, free_credits, free_chat_messages)
        select user_id, ${`${crypto.randomUUID()}@example.com`}, 0, 5 from t where pg_temp.kill(user_id)`);
      expect(error.code).toBe('BC008');
      expect(await state(userId)).toEqual(before);
    }
    await expectLedgerVerifies();
  });

  it('cannot move the head to a row of its own before that row is applied, then delete and create the user again', async () => {
    const sql = session(role);
    await sql.unsafe(`
      create or replace function pg_temp.swap(u uuid, credits int, chats int) returns int language plpgsql as $$ begin
        update public."User" set free_credits = t.balance_after, ledger_seq = t.seq, ledger_hash = t.hash
          from public."CreditTransaction" t
         where t.user_id = u and t.seq = public."User".ledger_seq + 1 and public."User".id = u;
        delete from public."User" where id = u;
        insert into public."User" (id, email, free_credits, free_chat_messages)
          values (u, gen_random_uuid()::text || '@example.com', credits, chats);
        return 1; end $$`);
    for (const [credits, chats] of [
      [10, 20],
      [0, 0],
    ]) {
      const userId = await newUser(credits ?? 0);
      const before = await state(userId);
      const error = await refusalOf(sql`
        with r as (
          insert into "CreditTransaction" (user_id, amount, operation, feature_type)
          values (${userId}, 1000, 'grant', 'document_generation') returning user_id)
        select pg_temp.swap(user_id, ${credits ?? 0}, ${chats ?? 0}) from r`);
      expect(error.code).toBe('BC006');
      expect(await state(userId)).toEqual(before);
    }
    await expectLedgerVerifies();
  });

  it("cannot apply a new user's opening row twice and skip the next one", async () => {
    const sql = session(role);
    await sql.unsafe(`
      create or replace function pg_temp.dbl(u uuid) returns boolean language plpgsql as $$ begin
        with t as (insert into public."CreditTransaction" (user_id, amount, operation, feature_type)
                   select u, free_credits, 'grant', 'document_generation' from public."User" where id = u
                   returning hash, balance_after)
        update public."User" set ledger_seq = -1, ledger_hash = t.hash, free_credits = t.balance_after
          from t where id = u;
        return true; end $$`);
    const email = `${crypto.randomUUID()}@example.com`;
    const error = await refusalOf(sql`
      with u as (insert into "User" (email, free_credits, free_chat_messages) values (${email}, 10, 20) returning id)
      select pg_temp.dbl(id) from u`);
    expect(['BC006', 'BC008']).toContain(error.code);
    expect(await admin`select 1 from "User" where email = ${email}`).toHaveLength(0);
    await expectLedgerVerifies();
  });

  it("cannot write a new user's opening rows itself under another feature or label", async () => {
    const sql = session(role);
    await sql.unsafe(`
      create or replace function pg_temp.open_as(u uuid) returns boolean language plpgsql as $$ begin
        insert into public."CreditTransaction" (user_id, amount, operation, feature_type, metadata)
          select u, free_credits, 'grant', 'chat_tool_call', '{"reason": "whatever"}' from public."User" where id = u;
        return true; end $$`);
    const email = `${crypto.randomUUID()}@example.com`;
    const error = await refusalOf(sql`
      with u as (insert into "User" (email, free_credits, free_chat_messages) values (${email}, 10, 0) returning id)
      select pg_temp.open_as(id) from u`);
    expect(error.code).toBe('BC008');
    expect(await admin`select 1 from "User" where email = ${email}`).toHaveLength(0);
  });

  it('cannot label a grant of its own as an opening row', async () => {
    const sql = session(role);
    const userId = await newUser();
    const error = await refusalOf(sql`
      insert into "CreditTransaction" (user_id, amount, operation, feature_type, metadata)
      values (${userId}, 5, 'grant', 'document_generation', '{"reason": "opening_balance"}')`);
    expect(error.code).toBe('BC008');
    expect(await state(userId)).toMatchObject({ credits: 10, rows: 2 });
  });
});

describe('the owner DDL that cannot be prevented is detected', () => {
  // A database of its own: these tests leave the ledger broken on purpose.
  let owner: postgres.Sql;
  let handle: DatabaseHandle;
  let ddlRoles: LedgerRoles;
  let dropDatabase: () => Promise<void>;
  beforeAll(async () => {
    const database = await createTestDatabase();
    dropDatabase = database.close;
    ddlRoles = await createLedgerRoles(database.url, inject('testPostgres')?.serverUrl ?? '');
    owner = postgres(ddlRoles.url('owner'), { max: 1, onnotice: () => {} });
    handle = createDatabase(database.url, { max: 2 });
  }, 60_000);
  afterAll(async () => {
    await owner.end();
    await handle.close();
    await dropDatabase();
    await ddlRoles.drop();
  });

  it('a row edited with the triggers disabled, balances fixed to match, is found by verifyLedger', async () => {
    const [user] = await owner<{ id: string }[]>`
      insert into "User" (email) values (${`${crypto.randomUUID()}@example.com`}) returning id`;
    const userId = user?.id ?? '';
    await deductCredits(handle.db, { userId, amount: 4, featureType: 'chat_tool_call' });
    expect((await verifyLedger(handle.db, { userId })).ok).toBe(true);
    await owner.begin(async (tx) => {
      await tx`alter table "CreditTransaction" disable trigger user`;
      await tx`alter table "User" disable trigger user`;
      await tx`update "CreditTransaction" set amount = 1, balance_after = 9 where user_id = ${userId} and seq = 3`;
      await tx`update "User" set free_credits = 9 where id = ${userId}`;
      await tx`alter table "CreditTransaction" enable trigger user`;
      await tx`alter table "User" enable trigger user`;
    });
    const result = await verifyLedger(handle.db, { userId });
    expect(result.ok).toBe(false);
    // The chain breaks at the row; the grants it took from still say 4 were taken.
    expect(result.violations.map((v) => [v.kind, v.seq]).sort()).toEqual([
      ['allocations_sum', 3],
      ['grants_balance', null],
      ['hash_mismatch', 3],
    ]);
  });

  it('a ledger trigger made to skip every row (WHEN false) is as good as missing: writes refuse to run', async () => {
    const [user] = await owner<{ id: string }[]>`
      insert into "User" (email, free_credits, free_chat_messages) values (${`${crypto.randomUUID()}@example.com`}, 10, 0) returning id`;
    await owner
      .begin(async (tx) => {
        await tx`drop trigger credit_tx_apply on "CreditTransaction"`;
        await tx`create trigger credit_tx_apply after insert on "CreditTransaction" for each row
               when (false) execute function credit_ledger.credit_tx_apply()`;
        const error = await refusalOf(tx`
        insert into "CreditTransaction" (user_id, amount, operation, feature_type)
        values (${user?.id ?? ''}, 5, 'deduct', 'chat_tool_call')`);
        expect(error.code).toBe('BC009');
        throw new Error('roll back');
      })
      .catch((error: Error) => {
        if (error.message !== 'roll back') throw error;
      });
  });

  it('a rewrite that recomputes the whole chain and the head passes the chain check, but not heads saved before it', async () => {
    const [user] = await owner<{ id: string }[]>`
      insert into "User" (email) values (${`${crypto.randomUUID()}@example.com`}) returning id`;
    const userId = user?.id ?? '';
    await deductCredits(handle.db, { userId, amount: 7, featureType: 'chat_tool_call' });
    const anchors = (await ledgerHeads(handle.db)).filter((a) => a.userId === userId);
    expect(anchors).toEqual([{ userId, seq: 3, hash: expect.stringMatching(/^[0-9a-f]{64}$/) }]);
    await owner.begin(async (tx) => {
      await tx`alter table "CreditTransaction" disable trigger user`;
      await tx`alter table "User" disable trigger user`;
      // The whole story rewritten: the row, what it took from the grant, the grant, the hash.
      await tx`update "CreditTransaction" t set amount = 1, balance_after = 9,
                 allocations = jsonb_build_object(g.id, 1),
                 hash = credit_ledger.credit_tx_hash(p.hash, t.id, t.user_id, t.seq, t.operation, t.feature_type, 1, 9,
                   t.created_at, t.idempotency_key, t.refund_of, t.metadata, t.hold_id, t.hold_expires_at,
                   jsonb_build_object('allocations', jsonb_build_object(g.id, 1)))
               from "CreditTransaction" p, credit_ledger.credit_grant g
               where t.user_id = ${userId} and t.seq = 3 and p.user_id = t.user_id and p.seq = 2
                 and g.user_id = t.user_id and not g.chat`;
      await tx`update credit_ledger.credit_grant set remaining = 9 where user_id = ${userId} and not chat`;
      await tx`update "User" u set free_credits = 9, ledger_hash = t.hash
               from "CreditTransaction" t where u.id = ${userId} and t.user_id = u.id and t.seq = 3`;
      await tx`alter table "CreditTransaction" enable trigger user`;
      await tx`alter table "User" enable trigger user`;
    });
    expect((await verifyLedger(handle.db, { userId })).violations).toEqual([]);
    const anchored = await verifyLedger(handle.db, { userId, anchors });
    expect(anchored.violations).toEqual([
      expect.objectContaining({ userId, seq: 3, kind: 'anchor_mismatch' }),
    ]);
  });

  it('DDL done and undone in one transaction, after heads were saved, is reported with them', async () => {
    const fingerprint = await ledgerFingerprint(handle.db);
    const anchors = await ledgerHeads(handle.db);
    // (This database already holds the row edited by the first test of this block.)
    const before = await verifyLedger(handle.db, { anchors, fingerprint });
    expect(before.violations.map((v) => v.kind)).not.toContain('ledger_altered');
    for (const undone of [
      [
        'alter table "User" disable trigger user_ledger_guard',
        'alter table "User" enable trigger user_ledger_guard',
      ],
      ['alter table "User" rename to "User_hidden"', 'alter table "User_hidden" rename to "User"'],
    ]) {
      const now = await ledgerFingerprint(handle.db);
      await owner.begin(async (tx) => {
        for (const statement of undone) await tx.unsafe(statement);
      });
      const after = await verifyLedger(handle.db, { anchors, fingerprint: now });
      expect(after.violations.map((v) => v.kind)).toEqual([
        'ledger_altered',
        ...before.violations.map((v) => v.kind),
      ]);
    }
  });

  it('a row dated by hand before the row ahead of it is reported', async () => {
    const [user] = await owner<{ id: string }[]>`
      insert into "User" (email) values (${`${crypto.randomUUID()}@example.com`}) returning id`;
    const userId = user?.id ?? '';
    await owner.begin(async (tx) => {
      await tx.unsafe(`
        create function public.zz_backdate() returns trigger language plpgsql as $$ begin
          NEW.created_at := '2020-01-01'; NEW.hash := credit_ledger.credit_tx_hash(
            (select ledger_hash from public."User" where id = NEW.user_id), NEW.id, NEW.user_id, NEW.seq,
            NEW.operation, NEW.feature_type, NEW.amount, NEW.balance_after, NEW.created_at,
            NEW.idempotency_key, NEW.refund_of, NEW.metadata, NEW.hold_id, NEW.hold_expires_at,
            jsonb_build_object('source', NEW.source));
          return NEW; end $$;
        create trigger credit_tx_prepare_zz before insert on "CreditTransaction" for each row execute function public.zz_backdate()`);
      await tx`insert into "CreditTransaction" (user_id, amount, operation, feature_type) values (${userId}, 5, 'grant', 'chat_tool_call')`;
      await tx.unsafe(
        'drop trigger credit_tx_prepare_zz on "CreditTransaction"; drop function public.zz_backdate()',
      );
    });
    const result = await verifyLedger(handle.db, { userId });
    expect(result.violations).toEqual([
      expect.objectContaining({ userId, seq: 3, kind: 'created_at_order' }),
    ]);
  });

  it('a disabled trigger, a replaced function and an extra trigger are each reported', async () => {
    await owner`alter table "User" disable trigger user_ledger_guard`;
    await owner.unsafe(`
      create or replace function credit_ledger.credit_tx_append_only() returns trigger
      language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
      begin return old; end $$`);
    await owner.unsafe(`
      create function public.sneaky() returns trigger language plpgsql as $$ begin return new; end $$;
      create trigger sneaky before insert on "CreditTransaction" for each row execute function public.sneaky()`);
    const result = await verifyLedger(handle.db);
    const ledger = result.violations.filter((v) => v.userId === null);
    expect(ledger.map((v) => `${v.kind}: ${v.detail}`).sort()).toEqual([
      'function_changed: function credit_ledger.credit_tx_append_only is not the one the migrations define (body, language, volatility, STRICT, SECURITY or SET differs)',
      'trigger_disabled: trigger user_ledger_guard on "User" is disabled',
      'trigger_unexpected: trigger sneaky on "CreditTransaction" is not one of the ledger\'s',
    ]);
  });

  it('verifying as a role whose search_path puts operators of its own first still finds them', async () => {
    const app = postgres(ddlRoles.url('app'), { max: 1, onnotice: () => {} });
    const asApp = createDatabase(ddlRoles.url('app'), { max: 1 });
    try {
      await app.unsafe(`
        create schema evil;
        create function evil.t(text, text) returns bool language sql as 'select true';
        create operator evil.= (leftarg = text, rightarg = text, function = evil.t);
        create function evil.f(bigint, bigint) returns bool language sql as 'select false';
        create operator evil.<> (leftarg = bigint, rightarg = bigint, function = evil.f);`);
      await app.unsafe(
        `alter role ${new URL(ddlRoles.url('app')).username} set search_path = evil, pg_catalog, public`,
      );
      const [path] = (await asApp.db.execute(sql`show search_path`)) as unknown as {
        search_path: string;
      }[];
      expect(path?.search_path).toBe('evil, pg_catalog, public');
      const result = await verifyLedger(asApp.db);
      expect(result.ok).toBe(false);
      expect(result.violations.map((v) => v.kind)).toContain('trigger_disabled');
    } finally {
      await app.end();
      await asApp.close();
    }
  });

  it('a WHEN clause on a ledger trigger, a table inheriting from the trail, forced row security and a weakened CHECK are each reported', async () => {
    await owner.unsafe(`
      drop trigger credit_tx_append_only on "CreditTransaction";
      create trigger credit_tx_append_only before update or delete on "CreditTransaction" for each row
        when (pg_catalog.current_setting('x.bypass', true) is distinct from 'on')
        execute function credit_ledger.credit_tx_append_only();
      create table public.ct_archive () inherits ("CreditTransaction");
      alter table "User" force row level security;
      alter table "CreditTransaction" drop constraint credit_tx_amount_positive;
      alter table "CreditTransaction" add constraint credit_tx_amount_positive check (amount > -1000);`);
    const result = await verifyLedger(handle.db);
    const kinds = result.violations.filter((v) => v.userId === null).map((v) => v.detail);
    expect(kinds).toEqual(
      expect.arrayContaining([
        'trigger credit_tx_append_only on "CreditTransaction" is not the one the migrations create',
        '"CreditTransaction" has tables inheriting from it: their rows bypass the ledger',
        '"User" forces row-level security on its owner: rows could be hidden from the ledger',
        'credit_tx_amount_positive is "CHECK ((amount > \'-1000\'::integer))", not "CHECK ((amount > 0))"',
      ]),
    );
  });

  it('a ledger operation refuses to run while a ledger trigger is disabled, and writes nothing', async () => {
    // user_ledger_guard is still disabled from the test above.
    const [user] = await owner<{ id: string }[]>`
      insert into "User" (email, free_credits, free_chat_messages) values (${`${crypto.randomUUID()}@example.com`}, 0, 0) returning id`;
    await expect(
      grantCredits(handle.db, { userId: user?.id ?? '', amount: 5, featureType: 'chat_tool_call' }),
    ).rejects.toMatchObject({ code: 'LEDGER_NOT_INSTALLED' });
    const [row] =
      await owner`select free_credits, (select count(*)::int from "CreditTransaction" where user_id = ${user?.id ?? ''}) as rows from "User" where id = ${user?.id ?? ''}`;
    expect(row).toEqual({ free_credits: 0, rows: 0 });
  });
});
