import { randomBytes } from 'node:crypto';
import postgres from 'postgres';

/** The two roles the ledger's guarantees are stated against (README, "against whom"). */
export type AttackerRole = 'app' | 'owner';

export interface LedgerRoles {
  /** A URL of the test database that logs in as the role. */
  url: (role: AttackerRole) => string;
  /** Drops both roles; call after the database itself is dropped. */
  drop: () => Promise<void>;
}

/**
 * Creates, with names unique to this run (roles are cluster-wide):
 * - `app`: SELECT, INSERT, UPDATE, DELETE on every table, TEMP and CREATE on the database
 *   (so it can make a schema and functions of its own): the broad grants apps usually get;
 * - `owner`: owns the tables, types, the ledger's schema and functions, as the role that runs the
 *   migrations does on many hosted setups; not a superuser.
 * Both log in with a password, so the tests work on servers that check passwords.
 */
export async function createLedgerRoles(
  databaseUrl: string,
  serverUrl: string,
): Promise<LedgerRoles> {
  const suffix = randomBytes(4).toString('hex');
  const names = { app: `bragdoc_app_${suffix}`, owner: `bragdoc_owner_${suffix}` };
  const password = `pw-${randomBytes(8).toString('hex')}`;
  const database = new URL(databaseUrl).pathname.slice(1);
  const admin = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    for (const name of Object.values(names)) {
      await admin.unsafe(`create role ${name} login password '${password}'`);
      await admin.unsafe(`grant connect, temp, create on database "${database}" to ${name}`);
    }
    await admin.unsafe(`grant usage on schema public to ${names.app}`);
    await admin.unsafe(
      `grant select, insert, update, delete on all tables in schema public to ${names.app}`,
    );
    await admin.unsafe(`grant usage, create on schema public to ${names.owner}`);
    for (const table of ['"User"', '"CreditTransaction"', '"CreditHold"', '"CreditPlanChange"'])
      await admin.unsafe(`alter table ${table} owner to ${names.owner}`);
    for (const type of ['operation_type', 'feature_type', 'credit_source'])
      await admin.unsafe(`alter type ${type} owner to ${names.owner}`);
    await admin.unsafe(`alter schema credit_ledger owner to ${names.owner}`);
    const ledgerTables = await admin<{ name: string }[]>`
      select c.oid::regclass::text as name from pg_class c
      where c.relnamespace = 'credit_ledger'::regnamespace and c.relkind = 'r'`;
    for (const { name } of ledgerTables)
      await admin.unsafe(`alter table ${name} owner to ${names.owner}`);
    const functions = await admin<{ signature: string }[]>`
      select p.oid::regprocedure::text as signature from pg_proc p
      where p.pronamespace in ('public'::regnamespace, 'credit_ledger'::regnamespace)`;
    for (const { signature } of functions)
      await admin.unsafe(`alter function ${signature} owner to ${names.owner}`);
  } finally {
    await admin.end();
  }
  return {
    url: (role) => {
      const url = new URL(databaseUrl);
      url.username = names[role];
      url.password = password;
      return url.toString();
    },
    drop: async () => {
      const server = postgres(serverUrl, { max: 1, onnotice: () => {} });
      try {
        for (const name of Object.values(names)) await server.unsafe(`drop role if exists ${name}`);
      } finally {
        await server.end();
      }
    },
  };
}
