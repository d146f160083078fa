import { randomBytes } from 'node:crypto';
import { createTestDatabase } from '@bragdoc/test-postgres';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createDatabase } from '../../src/client.js';
import {
  deductCredits,
  getCreditBalance,
  holdCredits,
  LedgerLockTimeoutError,
  verifyLedger,
} from '../../src/credits/index.js';
import { migrate } from '../../src/migrate/index.js';
import { useAttackEnvironment } from './attack-env.js';

// Who may run the ledger's functions. The sweeper was SECURITY DEFINER and executable by
// PUBLIC: a role with no table privileges could run it in a transaction it kept open,
// holding every due user's row lock, and read other users' trail rows through it. It now runs
// as its caller. Trigger functions must be executable by nobody but their owner, whatever
// default privileges a platform set up, which REVOKE … FROM PUBLIC does not undo.

const env = useAttackEnvironment();
const FEATURE = 'chat_tool_call';
let nobody = '';
let nobodyUrl = '';

beforeAll(async () => {
  // A role that may connect and use the ledger's schema, and nothing else.
  nobody = `bragdoc_nobody_${randomBytes(4).toString('hex')}`;
  const password = `pw-${randomBytes(8).toString('hex')}`;
  const admin = env.admin();
  const [{ db } = { db: '' }] = await admin<{ db: string }[]>`select current_database() as db`;
  await admin.unsafe(`create role ${nobody} login password '${password}'`);
  await admin.unsafe(`grant connect on database "${db}" to ${nobody}`);
  const url = new URL(env.url());
  url.username = nobody;
  url.password = password;
  nobodyUrl = url.toString();
});
afterAll(async () => {
  const server = postgres(inject('testPostgres')?.serverUrl ?? '', { max: 1, onnotice: () => {} });
  await server.unsafe(`drop role if exists ${nobody}`).catch(() => undefined);
  await server.end();
});

describe('the sweeper', () => {
  it('a role without privileges on the ledger tables cannot run it (permission denied), so it can neither lock users nor read rows through it', async () => {
    const userId = await env.newUser();
    await holdCredits(env.adminDb(), {
      userId,
      amount: 1,
      featureType: FEATURE,
      expiresInMs: 1000,
    });
    await env.admin()`select pg_sleep(1.1)`;
    const sql = postgres(nobodyUrl, { max: 1, onnotice: () => {} });
    try {
      const error = await sql`select * from credit_ledger.credit_holds_expire(100)`.catch(
        (e: unknown) => e as { code?: string },
      );
      expect(error).toMatchObject({ code: '42501' });
    } finally {
      await sql.end();
    }
    expect(await env.state(userId)).toMatchObject({ listed: 1 });
  });

  it("the app role's balance reads, with the README's grants only, still give its due holds back", async () => {
    const userId = await env.newUser();
    await holdCredits(env.adminDb(), {
      userId,
      amount: 4,
      featureType: FEATURE,
      expiresInMs: 1000,
    });
    await env.admin()`select pg_sleep(1.1)`;
    const balance = await getCreditBalance(env.packageAs('app'), userId);
    expect(balance).toMatchObject({ freeCredits: 10, heldCredits: 0 });
  });
});

describe('lock waits inside the ledger', () => {
  it("a role that keeps a user's row locked makes that user's writes fail with a retryable LEDGER_LOCK_TIMEOUT, not wait forever", async () => {
    const userId = await env.newUser();
    const app = env.session('app');
    let release: () => void = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    let locked: () => void = () => {};
    const isLocked = new Promise<void>((resolve) => {
      locked = resolve;
    });
    const holder = app.begin(async (tx) => {
      await tx`select 1 from "User" where id = ${userId} for update`;
      locked();
      await held;
    });
    await isLocked;
    try {
      const error = await deductCredits(env.adminDb(), {
        userId,
        amount: 1,
        featureType: FEATURE,
      }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(LedgerLockTimeoutError);
      expect(error).toMatchObject({ code: 'LEDGER_LOCK_TIMEOUT', retryable: true });
    } finally {
      release();
      await holder;
    }
    await expect(
      deductCredits(env.adminDb(), { userId, amount: 1, featureType: FEATURE }),
    ).resolves.toMatchObject({ balance: 9 });
  });
});

describe('default privileges', () => {
  it('migrating under default privileges that grant EXECUTE on new functions, CREATE on new schemas and ALL on new tables leaves no ledger function but the sweepers, the allowance read and the usage summing executable by another role, no CREATE in credit_ledger, the limits unreadable, and a database that verifies', async () => {
    const database = await createTestDatabase({ empty: true });
    const app = env.roleName('app');
    const sql = postgres(database.url, { max: 1, onnotice: () => {} });
    try {
      await sql.unsafe(`alter default privileges grant execute on functions to ${app}`);
      await sql.unsafe(`alter default privileges grant usage, create on schemas to ${app}`);
      await sql.unsafe(`alter default privileges grant all on tables to ${app}`);
      await migrate(database.url, { log: () => {} });
      const functions = await sql<{ name: string; app: boolean; public: boolean }[]>`
        select p.proname as name, has_function_privilege(${app}, p.oid, 'EXECUTE') as app,
               has_function_privilege('public', p.oid, 'EXECUTE') as public
          from pg_proc p where p.pronamespace = 'credit_ledger'::regnamespace order by 1`;
      // The two sweepers, which run as their caller, the allowance of a balance read, and the
      // summing of past days' usage.
      expect(functions.filter((f) => f.app || f.public).map((f) => f.name)).toEqual([
        'credit_allowance_apply',
        'credit_grants_expire',
        'credit_holds_expire',
        'credit_usage_roll_up',
      ]);
      expect(functions.map((f) => f.name)).toEqual(
        expect.arrayContaining(['credit_tx_prepare', 'credit_tx_apply', 'credit_rule_sufficient']),
      );
      const [limits] = await sql<{ read: boolean }[]>`
        select has_table_privilege(${app}, 'credit_ledger.credit_limit', 'SELECT, INSERT, UPDATE, DELETE') as read`;
      expect(limits?.read).toBe(false);
      // The plans, the users' plans and the grants are readable, and writable by the ledger only.
      const ledgerTables = await sql<{ name: string; read: boolean; write: boolean }[]>`
        select c.relname as name, has_table_privilege(${app}, c.oid, 'SELECT') as read,
               has_table_privilege(${app}, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE') as write
          from pg_class c where c.relnamespace = 'credit_ledger'::regnamespace and c.relkind = 'r'
         order by 1`;
      expect(ledgerTables).toEqual([
        { name: 'credit_grant', read: true, write: false },
        { name: 'credit_limit', read: false, write: false },
        { name: 'credit_plan', read: true, write: false },
        { name: 'credit_plan_audit', read: true, write: false },
        { name: 'credit_usage_day', read: true, write: false },
        { name: 'credit_usage_day_done', read: true, write: false },
        { name: 'user_allowance', read: true, write: false },
        { name: 'user_plan', read: true, write: false },
      ]);
      const [schema] = await sql<{ create: boolean }[]>`
        select has_schema_privilege(${app}, 'credit_ledger', 'CREATE') as create`;
      expect(schema?.create).toBe(false);
      const handle = createDatabase(database.url, { max: 1 });
      try {
        const result = await verifyLedger(handle.db);
        expect(result.violations).toEqual([]);
      } finally {
        await handle.close();
      }
    } finally {
      await sql.end();
      await database.close();
    }
  });

  it('a schema named credit_ledger that another role created beforehand stops the migration, naming its owner', async () => {
    const database = await createTestDatabase({ empty: true });
    const app = env.roleName('app');
    const sql = postgres(database.url, { max: 1, onnotice: () => {} });
    try {
      await sql.unsafe(`create schema credit_ledger authorization ${app}`);
      const error = await migrate(database.url, { log: () => {} }).catch((e: unknown) => e);
      expect(String((error as Error).message)).toContain(
        `schema credit_ledger exists and belongs to ${app}`,
      );
    } finally {
      await sql.end();
      await database.close();
    }
  });
});
