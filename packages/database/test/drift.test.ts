import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { createTestDatabase, type TestDatabase, withSql } from '@bragdoc/test-postgres';
import { afterEach, beforeAll, beforeEach, describe, expect, inject, it } from 'vitest';
import { referenceCatalog } from '../scripts/reference-schema.js';
import {
  BaselineRefusedError,
  baseline,
  type Catalog,
  compareCatalogs,
  defaultMigrationsFolder,
  describeDifference,
  migrate,
  readCatalog,
  readMigrations,
} from '../src/migrate/index.js';
import { MigrationsFolder } from './migrations-folder.js';
import { runScript } from './run-script.js';

// The commands build their reference database on this run's server: same version, fast.
const env = () => ({ TEST_DATABASE_URL: inject('testPostgres').serverUrl });

let database: TestDatabase;
let folder: MigrationsFolder;
// What the package's migrations build, read once for the tests that call the library.
let expected: Catalog;

beforeAll(async () => {
  expected = await referenceCatalog(defaultMigrationsFolder, {
    log: () => {},
    env: { ...process.env, ...env(), TEST_POSTGRES_PROVIDER: 'url' },
  });
});

beforeEach(async () => {
  database = await createTestDatabase({ empty: true });
  folder = new MigrationsFolder();
});
afterEach(async () => {
  folder.remove();
  await database.close();
});

const exec = (statements: string) => withSql(database.url, (sql) => sql.unsafe(statements));
const checkAgainst = () =>
  runScript('scripts/check.ts', ['--against', database.url, '--migrations', folder.dir], {
    env: env(),
  });
const baselineCommand = (...args: string[]) =>
  runScript('scripts/cli.ts', ['baseline', '--migrations', folder.dir, ...args], {
    env: { ...env(), DATABASE_URL: database.url },
  });

/** The differences db:check --against prints for the test's database, one line each. */
const differences = async () =>
  compareCatalogs(expected, await readCatalog(database.url)).map(describeDifference);

/** A database with the schema but no migration rows, as drizzle-kit push or another tool leaves it. */
async function builtWithoutRows(migrationsFolder = folder.dir) {
  await migrate(database.url, { migrationsFolder });
  await exec('drop schema drizzle cascade');
}

describe('pnpm db:check --against <url>', () => {
  it('passes on a database built by db:migrate', async () => {
    await migrate(database.url, { migrationsFolder: folder.dir });
    const result = await checkAgainst();
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/✓ .* matches the migrations: \d+ objects compared/);
  });

  it('catches a dropped trigger, printing it and exiting 1', async () => {
    await migrate(database.url, { migrationsFolder: folder.dir });
    await exec('drop trigger "user_ledger_open" on "User"');
    const result = await checkAgainst();
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(
      '- trigger user_ledger_open on public."User": built by the migrations, missing from the live database',
    );
    expect(result.stderr).toMatch(/✗ 1 difference between the migrations and /);
  });

  it('catches a disabled trigger', async () => {
    await migrate(database.url, { migrationsFolder: folder.dir });
    await exec('alter table "CreditTransaction" disable trigger "credit_tx_apply"');
    const result = await checkAgainst();
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      /~ trigger credit_tx_apply on public."CreditTransaction": .*\[disabled\]/,
    );
  });

  it('catches an index added by hand', async () => {
    await migrate(database.url, { migrationsFolder: folder.dir });
    await exec('create index "user_name_hotfix_idx" on "User" ("name")');
    const result = await checkAgainst();
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(
      '+ index public.user_name_hotfix_idx: only in the live database',
    );
    expect(result.stderr).toMatch(/✗ 1 difference between the migrations and /);
  });

  it('catches a changed function body', async () => {
    await migrate(database.url, { migrationsFolder: folder.dir });
    const [fn] = await withSql(
      database.url,
      (sql) =>
        sql<
          { def: string }[]
        >`select pg_get_functiondef('credit_ledger.credit_tx_append_only'::regproc) as def`,
    );
    await exec((fn?.def ?? '').replace(/BEGIN/i, 'BEGIN\n  -- hotfix\n'));
    expect(await differences()).toEqual([
      expect.stringMatching(
        /^~ function credit_ledger\.credit_tx_append_only\(\): defined differently \(line \d+: expected .*, found "-- hotfix"\)$/,
      ),
    ]);
  });

  it('catches enum values in another order', async () => {
    await migrate(database.url, { migrationsFolder: folder.dir });
    await exec(`alter type feature_type add value 'summary' before 'chat_message'`);
    const result = await checkAgainst();
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('~ enum public.feature_type: the migrations define');
  });
});

describe('pnpm db:check --against <url> --app-objects <file>', () => {
  // What an adopting app adds by hand beside the package's schema.
  const APP_DDL = `
    create table "StripeEvent" (id text primary key, payload jsonb not null);
    alter table "User" add column plan text;
    create index user_plan_idx on "User" (plan);
    alter type feature_type add value 'image_generation';`;
  const declare = (lines: string[]) => {
    const file = path.join(folder.dir, 'app-objects.txt');
    writeFileSync(file, `# the app's own\n${lines.join('\n')}\n`);
    return runScript(
      'scripts/check.ts',
      ['--against', database.url, '--migrations', folder.dir, '--app-objects', file],
      { env: env() },
    );
  };

  it("reports the app's additions as drift until they are declared", async () => {
    await migrate(database.url, { migrationsFolder: folder.dir });
    await exec(APP_DDL);
    const result = await checkAgainst();
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('+ table public."StripeEvent": only in the live database');
    expect(result.stderr).toContain('+ column public."User".plan: only in the live database');
    expect(result.stderr).toContain('--app-objects FILE');
  });

  it('passes once they are declared (a table covers its columns, key and index), listing them', async () => {
    await migrate(database.url, { migrationsFolder: folder.dir });
    await exec(APP_DDL);
    const result = await declare([
      'table public."StripeEvent"',
      'column public."User".plan',
      'index public.user_plan_idx',
      'enum public.feature_type',
    ]);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("declared the app's own");
    expect(result.stdout).toContain('+ column public."StripeEvent".payload');
    expect(result.stdout).toContain('~ enum public.feature_type');
  });

  it("still catches what was not declared, and a change of the ledger's beside the declared ones", async () => {
    await migrate(database.url, { migrationsFolder: folder.dir });
    await exec(APP_DDL);
    await exec('alter table "CreditTransaction" disable trigger "credit_tx_apply"');
    const result = await declare(['table public."StripeEvent"', 'enum public.feature_type']);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('+ column public."User".plan');
    expect(result.stderr).toMatch(/~ trigger credit_tx_apply on public."CreditTransaction"/);
    expect(result.stderr).not.toContain('StripeEvent');
  });

  it('refuses to declare what the ledger relies on, in one line each, whatever the database holds', async () => {
    await migrate(database.url, { migrationsFolder: folder.dir });
    await exec(`create trigger app_audit after update on "User" for each row
                execute function suppress_redundant_updates_trigger()`);
    const result = await declare([
      'trigger app_audit on public."User"',
      'column public."CreditTransaction".note',
      'enum public.operation_type',
    ]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(
      'trigger app_audit on public."User": a trigger on "User" runs inside every ledger write',
    );
    expect(result.stderr).toContain('column public."CreditTransaction".note: the trail and');
    expect(result.stderr).toContain('enum public.operation_type: every operation');
  });

  it('an appended feature type is declared; values in another order are not', async () => {
    await migrate(database.url, { migrationsFolder: folder.dir });
    await exec(`alter type feature_type add value 'image_generation' before 'chat_tool_call'`);
    const result = await declare(['enum public.feature_type']);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('~ enum public.feature_type');
  });
});

describe('pnpm db:baseline', () => {
  const rows = () =>
    withSql(database.url, async (sql) => {
      const [t] = await sql`select to_regclass('drizzle.__drizzle_migrations') is not null as e`;
      if (!t?.e) return 0;
      return (await sql`select 1 from drizzle.__drizzle_migrations`).length;
    });

  it('adopts a database built without migration rows; db:migrate then applies only later migrations', async () => {
    await builtWithoutRows();
    const result = await baselineCommand();
    expect(result.code, result.stderr).toBe(0);
    const count = readMigrations(folder.dir).length;
    expect(result.stdout).toMatch(new RegExp(`Recorded ${count} migration\\(s\\) as applied`));
    const next = folder.add('nickname', ['ALTER TABLE "User" ADD COLUMN "nickname" text']);
    const migrated = await migrate(database.url, { migrationsFolder: folder.dir });
    expect(migrated.applied.map((m) => m.name)).toEqual([next]);
  });

  it('--to NAME adopts a database at that migration and leaves the later ones pending', async () => {
    const older = new MigrationsFolder();
    try {
      older.truncateAfter('0002_credit_ledger_triggers');
      await builtWithoutRows(older.dir);
    } finally {
      older.remove();
    }
    const result = await baselineCommand('--to', '0002_credit_ledger_triggers');
    expect(result.code, result.stderr).toBe(0);
    const later = readMigrations(folder.dir)
      .map((m) => m.name)
      .slice(3);
    expect(result.stdout).toContain(`${later.length} pending for pnpm db:migrate`);
    const migrated = await migrate(database.url, { migrationsFolder: folder.dir });
    expect(migrated.applied.map((m) => m.name)).toEqual(later);
  });

  it('refuses a database whose schema differs, printing each difference and recording nothing', async () => {
    await builtWithoutRows();
    await exec('drop trigger "credit_tx_apply" on "CreditTransaction"');
    const result = await baselineCommand();
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('- trigger credit_tx_apply on public."CreditTransaction"');
    expect(result.stderr).toMatch(
      /does not match what the migrations up to .* build .* Nothing was recorded\. \[BASELINE_REFUSED\]/,
    );
    expect(await rows()).toBe(0);
  });

  it("refuses another tool's migration rows, saying how to remove them", async () => {
    await builtWithoutRows();
    await exec(`create schema drizzle;
      create table drizzle.__drizzle_migrations (id serial primary key, hash text not null, created_at bigint);
      insert into drizzle.__drizzle_migrations (hash, created_at) values ('other-tool', 42)`);
    const error = await baseline(database.url, { migrationsFolder: folder.dir, expected }).catch(
      (e) => e,
    );
    expect(error).toBeInstanceOf(BaselineRefusedError);
    expect(error.code).toBe('BASELINE_REFUSED');
    expect(error.message).toContain(
      'delete from drizzle.__drizzle_migrations where created_at in (42)',
    );
    expect(await rows()).toBe(1);
  });
});
