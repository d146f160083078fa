import { createTestDatabase } from '@bragdoc/test-postgres';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase } from '../../src/client.js';
import {
  LedgerVersionMismatchError,
  ledgerFingerprint,
  verifyLedger,
} from '../../src/credits/index.js';
import { defaultMigrationsFolder, migrate } from '../../src/migrate/index.js';
import { readJournal } from '../../src/migrate/migrations.js';
import { MigrationsFolder } from '../migrations-folder.js';
import { runScript } from '../run-script.js';
import { useMigratedDatabase } from '../support.js';
import { createUser } from './fixtures.js';

// credits:verify compares a database with the ledger its migrations define, so it must know
// which migrations the database has; and what operators are told must stay worth reading:
// counts by kind before a list that holds every kind, and saved heads that routine DDL does
// not turn into "ledger_altered".

const tags = readJournal(defaultMigrationsFolder).entries.map((e) => e.tag);
const last = tags.at(-1) ?? '';
const beforeLast = tags.at(-2) ?? '';

describe('which migrations the database has', () => {
  let behind: { url: string; close: () => Promise<void> };
  let folder: MigrationsFolder;
  beforeAll(async () => {
    folder = new MigrationsFolder();
    folder.truncateAfter(beforeLast);
    behind = await createTestDatabase({ empty: true });
    await migrate(behind.url, { migrationsFolder: folder.dir });
  });
  afterAll(async () => {
    await behind.close();
    folder.remove();
  });

  it('a database one migration behind is refused in one line naming it, not reported as tampered with', async () => {
    const handle = createDatabase(behind.url, { max: 1 });
    try {
      const error = await verifyLedger(handle.db).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(LedgerVersionMismatchError);
      expect(error).toMatchObject({ code: 'LEDGER_VERSION_MISMATCH', pending: [last], unknown: 0 });
    } finally {
      await handle.close();
    }
    const cli = await runScript('scripts/credits-verify.ts', [], {
      env: { DATABASE_URL: behind.url },
    });
    expect(cli.code).toBe(1);
    expect(cli.stderr.trim()).toBe(
      `credits:verify: 1 migration pending (${last}): run pnpm db:migrate, then verify again; nothing was checked.`,
    );
  });

  it('a database with a migration the package does not know is refused too', async () => {
    const handle = createDatabase(behind.url, { max: 1 });
    const older = new MigrationsFolder();
    try {
      older.truncateAfter(tags.at(-3) ?? '');
      await expect(verifyLedger(handle.db, { migrationsFolder: older.dir })).rejects.toMatchObject({
        code: 'LEDGER_VERSION_MISMATCH',
        pending: [],
        unknown: 1,
      });
    } finally {
      older.remove();
      await handle.close();
    }
  });
});

describe('a migrated database', () => {
  const database = useMigratedDatabase();
  let handle: ReturnType<typeof database>;
  let sql: postgres.Sql;
  beforeAll(() => {
    handle = database();
    sql = postgres(handle.url, { max: 1, onnotice: () => {} });
  });
  afterAll(() => sql.end());

  it('routine DDL leaves the fingerprint alone: an app column on "User", an app index, a GRANT, a function in public, a new feature type', async () => {
    const before = await ledgerFingerprint(handle.db);
    await sql`alter table "User" add column plan_level text`;
    await sql`create index user_plan_level_idx on "User" (plan_level)`;
    await sql`create index credit_tx_metadata_idx on "CreditTransaction" using gin (metadata)`;
    await sql`grant select on "CreditTransaction", "User" to public`;
    await sql`create function public.app_helper() returns int language sql as 'select 1'`;
    await sql`alter type feature_type add value 'image_generation'`;
    expect(await ledgerFingerprint(handle.db)).toBe(before);
  });

  it('and any DDL on what the ledger relies on changes it: a rule replaced by itself, a relied-on index renamed and back', async () => {
    for (const ddl of [
      [`select pg_get_functiondef('credit_ledger.credit_rule_sufficient'::regproc) as def`],
      [
        'alter index credit_tx_user_seq_idx rename to x_idx',
        'alter index x_idx rename to credit_tx_user_seq_idx',
      ],
    ]) {
      const before = await ledgerFingerprint(handle.db);
      if (ddl[0]?.startsWith('select')) {
        const [row] = await sql.unsafe<{ def: string }[]>(ddl[0]);
        await sql.unsafe(row?.def ?? '');
      } else {
        await sql.begin(async (tx) => {
          for (const statement of ddl) await tx.unsafe(statement);
        });
      }
      expect(await ledgerFingerprint(handle.db)).not.toBe(before);
    }
  });

  it('lists some of every kind of violation before more of any, with every kind counted', async () => {
    const users = await Promise.all(Array.from({ length: 12 }, () => createUser(handle.db)));
    await sql.begin(async (tx) => {
      await tx`alter table "User" disable trigger user`;
      for (const u of users) await tx`update "User" set free_credits = 99 where id = ${u.id}`;
      await tx`update "User" set ledger_hash = 'x' where id = ${users[0]?.id ?? ''}`;
      await tx`alter table "User" enable trigger user`;
    });
    const result = await verifyLedger(handle.db, { limit: 3 });
    // A balance set by hand matches neither its trail nor its grants.
    expect(result.violationsByKind).toEqual({
      balance_mismatch: 12,
      grants_balance: 12,
      head_mismatch: 1,
    });
    expect(result.violationCount).toBe(25);
    expect(result.violations.map((v) => v.kind)).toContain('head_mismatch');
    expect(result.violations).toHaveLength(3);
  });
});
