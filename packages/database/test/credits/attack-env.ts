import { createTestDatabase } from '@bragdoc/test-postgres';
import postgres from 'postgres';
import { afterAll, beforeAll, expect, inject } from 'vitest';
import { createDatabase, type Database, type DatabaseHandle } from '../../src/client.js';
import { verifyLedger } from '../../src/credits/index.js';
import { type AttackerRole, createLedgerRoles, type LedgerRoles } from './roles.js';

/**
 * A test database of the file's own with the two roles the ledger's guarantees are stated
 * against (roles.ts), a superuser connection to set the scene and read the outcome, and
 * sessions as either role to attack from. Everything is closed and dropped after the file.
 */
export function useAttackEnvironment() {
  let admin: postgres.Sql | undefined;
  let adminHandle: DatabaseHandle | undefined;
  let roles: LedgerRoles | undefined;
  let databaseUrl = '';
  let closeDatabase: () => Promise<void> = async () => {};
  const sessions: postgres.Sql[] = [];
  const handles: DatabaseHandle[] = [];
  const attached: { name: string; table: string }[] = [];
  let owner: postgres.Sql | undefined;

  beforeAll(async () => {
    const database = await createTestDatabase();
    closeDatabase = database.close;
    databaseUrl = database.url;
    roles = await createLedgerRoles(database.url, inject('testPostgres')?.serverUrl ?? '');
    admin = postgres(database.url, { max: 4, onnotice: () => {} });
    adminHandle = createDatabase(database.url, { max: 4 });
  }, 60_000);

  afterAll(async () => {
    await Promise.all([...sessions.map((s) => s.end()), ...handles.map((h) => h.close())]);
    await admin?.end();
    await adminHandle?.close();
    await closeDatabase();
    await roles?.drop();
  });

  const ready = <T>(value: T | undefined): T => {
    if (value === undefined) throw new Error('the attack environment is not set up yet');
    return value;
  };

  const env = {
    /** A superuser connection: sets the scene and reads the outcome, never attacks. */
    admin: () => ready(admin),
    /** The package's operations as a superuser. */
    adminDb: (): Database => ready(adminHandle).db,
    /** The test database's URL (as the superuser). */
    url: () => databaseUrl,
    /** A connection of its own as the role (a session: TEMP objects and settings stay on it). */
    session(role: AttackerRole): postgres.Sql {
      const sql = postgres(ready(roles).url(role), { max: 1, onnotice: () => {} });
      sessions.push(sql);
      return sql;
    },
    /** The package's operations, run as the role. */
    packageAs(role: AttackerRole, max = 2): Database {
      const handle = createDatabase(ready(roles).url(role), { max });
      handles.push(handle);
      return handle.db;
    },
    /** The role's name (roles are cluster-wide: each file has its own). */
    roleName: (role: AttackerRole) => new URL(ready(roles).url(role)).username,
    /**
     * Gives the app role what hosted platforms grant their API roles: ALL on every table
     * (TRIGGER included) and CREATE on the schema; and, as the app role, `public.mint()`, a
     * trigger function that sets a user's balance to 1,000,000 (and, on INSERT, its head to
     * "no opening rows due"), and a trail row's amount to 1.
     */
    async grantAllToApp() {
      const app = env.roleName('app');
      await env.admin().unsafe(`grant all on all tables in schema public to ${app}`);
      await env.admin().unsafe(`grant create on schema public to ${app}`);
      await env.session('app').unsafe(`
        create function public.mint() returns trigger language plpgsql as $$
        begin
          if TG_TABLE_NAME = 'User' and TG_LEVEL = 'ROW' then
            NEW.free_credits := 1000000;
            if TG_OP = 'INSERT' then NEW.ledger_seq := 0; end if;
          end if;
          if TG_TABLE_NAME = 'CreditTransaction' and TG_LEVEL = 'ROW' then NEW.amount := 1; end if;
          return NEW;
        end $$`);
    },
    /**
     * `create trigger <name> <definition>` as `as`, with `$TABLE` in the definition standing
     * for `table`; dropped again by dropAttachedTriggers.
     */
    async attachTrigger(as: postgres.Sql, name: string, table: string, definition: string) {
      await as.unsafe(`create trigger ${name} ${definition.replace('$TABLE', table)}`);
      attached.push({ name, table });
    },
    /** Drops the attached triggers, as the owner: the app role cannot drop what it attached. */
    async dropAttachedTriggers() {
      owner ??= env.session('owner');
      for (const { name, table } of attached.splice(0))
        await owner.unsafe(`drop trigger if exists ${name} on ${table}`);
    },
    /** A user with `credits` free credits and 20 chat messages (two opening rows). */
    async newUser(credits = 10): Promise<string> {
      const [row] = await env.admin()<{ id: string }[]>`
        insert into "User" (email, free_credits) values (${`${crypto.randomUUID()}@example.com`}, ${credits})
        returning id`;
      if (!row) throw new Error('insert returned no row');
      return row.id;
    },
    /** The user's balances, trail length and open holds listed in "CreditHold". */
    async state(userId: string) {
      const [row] = await env.admin()<
        { credits: number; chats: number; rows: number; listed: number }[]
      >`
        select free_credits as credits, free_chat_messages as chats,
          (select count(*)::int from "CreditTransaction" where user_id = ${userId}) as rows,
          (select count(*)::int from "CreditHold" where user_id = ${userId}) as listed
        from "User" where id = ${userId}`;
      return row;
    },
    /** verifyLedger over the whole database finds nothing. */
    async expectLedgerVerifies() {
      const result = await verifyLedger(env.adminDb());
      expect(result.violations).toEqual([]);
    },
  };
  return env;
}
