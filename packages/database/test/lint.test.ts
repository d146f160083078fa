import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { excludedMigrations } from '../scripts/lint-exclusions.js';
import { defaultMigrationsFolder, readMigrations } from '../src/migrate/index.js';
import { MigrationsFolder } from './migrations-folder.js';
import { runScript } from './run-script.js';

const lint = 'scripts/lint.ts';
let folder: MigrationsFolder;
let root: string;

beforeEach(() => {
  folder = new MigrationsFolder();
  // A repository root without package scripts, so only the migrations are judged.
  root = mkdtempSync(path.join(tmpdir(), 'bragdoc-lint-root-'));
  writeFileSync(path.join(root, 'package.json'), JSON.stringify({ scripts: {} }));
});
afterEach(() => {
  folder.remove();
  rmSync(root, { recursive: true, force: true });
});

const run = (...args: string[]) =>
  runScript(lint, ['--migrations', folder.dir, '--root', root, ...args]);

const git = (...args: string[]) =>
  execFileSync('git', ['-c', 'user.email=lint@test', '-c', 'user.name=lint', ...args], {
    cwd: folder.dir,
    stdio: 'pipe',
  });

describe('pnpm db:lint', () => {
  it("passes on the package's own migrations, each already in main excluded by name", async () => {
    const result = await runScript(lint, []);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const names = readMigrations(defaultMigrationsFolder).map((m) => m.name);
    const excluded = names.filter((name) => name in excludedMigrations).length;
    const linted = names.length - excluded;
    expect(result.stdout).toContain(
      `✓ No problems: ${linted} migration${linted === 1 ? '' : 's'} linted with squawk (${excluded} excluded by name`,
    );
  });

  it('fails a new migration with a non-concurrent index on "CreditTransaction", naming the rule and the line', async () => {
    const tag = folder.add('credit_tx_feature_idx', [
      'ALTER TABLE "User" ADD COLUMN "nickname" text;',
      'CREATE INDEX "credit_tx_feature_idx" ON "CreditTransaction" USING btree ("feature_type");',
    ]);
    const result = await run();
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`${tag}.sql:3 require-concurrent-index-creation:`);
    expect(result.stderr).toMatch(/✗ 1 problem; \d+ migrations? linted with squawk/);
  });

  it('passes the same index built CONCURRENTLY', async () => {
    folder.add('credit_tx_feature_idx', [
      '-- migrate: no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS "credit_tx_feature_idx" ON "CreditTransaction" USING btree ("feature_type");',
    ]);
    const result = await run();
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
  });

  it('fails an enum value added and used in the same migration, naming the line of the use', async () => {
    const tag = folder.add('feature_summary', [
      `ALTER TYPE "public"."feature_type" ADD VALUE 'summary';`,
      `UPDATE "CreditTransaction" SET "metadata" = '{}' WHERE "feature_type" = 'summary';`,
    ]);
    const result = await run();
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`${tag}.sql:3 enum-value-added-and-used:`);
  });

  it('fails an edit to a migration file already committed on main', async () => {
    git('init', '-q', '-b', 'main');
    git('add', '.');
    git('commit', '-q', '-m', 'migrations');
    git('checkout', '-q', '-b', 'feature');
    folder.edit('0001_credit_ledger_columns', '\n-- edited');
    const result = await run();
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      /0001_credit_ledger_columns\.sql:1 edited-committed-migration: changed since main/,
    );
  });

  it('skips the edit check, saying why, in a clone without main', async () => {
    git('init', '-q', '-b', 'other');
    git('add', '.');
    git('commit', '-q', '-m', 'migrations');
    const result = await run();
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('edited-migration check skipped: no origin/main or main');
  });

  it('passes an enum value used only inside a function body of the migration that adds it', async () => {
    folder.add('feature_summary', [
      `ALTER TYPE "public"."feature_type" ADD VALUE 'summary';`,
      `CREATE FUNCTION "public"."is_summary"(f "public"."feature_type") RETURNS boolean
LANGUAGE sql AS $$ SELECT f = 'summary' $$;`,
    ]);
    const result = await run();
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
  });

  it('fails a package script that runs drizzle-kit push', async () => {
    writeFileSync(
      path.join(root, 'package.json'),
      JSON.stringify({ scripts: { 'db:push': 'drizzle-kit push' } }, null, 2),
    );
    const result = await run();
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      /package\.json:3 no-drizzle-kit-push: script "db:push" runs drizzle-kit push/,
    );
  });
});
