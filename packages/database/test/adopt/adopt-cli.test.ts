import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createTestDatabase, type TestDatabase } from '@bragdoc/test-postgres';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runScript, startScript } from '../run-script.js';
import { fillSeedDatabase, SEED_SCHEMA } from './seed-database.js';

// What a team runs: `pnpm db:migrate` on its live database first (the wrong command, which
// must say which one is right), then `pnpm db:adopt`, `pnpm db:migrate`, and again.

const cli = 'scripts/cli.ts';
let seed: TestDatabase;
let empty: TestDatabase;

beforeAll(async () => {
  seed = await createTestDatabase({ empty: true });
  empty = await createTestDatabase({ empty: true });
  const sql = postgres(seed.url, { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(SEED_SCHEMA);
    await fillSeedDatabase(sql, { users: 30, logRows: 600 });
  } finally {
    await sql.end();
  }
}, 60_000);

afterAll(async () => {
  await seed.close();
  await empty.close();
});

describe('pnpm db:adopt', () => {
  it('is refused without DATABASE_URL, in one line: it converts only the database it is given', async () => {
    const result = await runScript(cli, ['adopt']);
    expect(result.code).toBe(2);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    expect(result.stderr).toMatch(
      /✗ db:adopt converts the database DATABASE_URL names, and it is not set/,
    );
  });

  it('exits 1, saying so, when its connection is cut mid-way (a failover), having changed nothing', async () => {
    const database = await createTestDatabase({ empty: true });
    const sql = postgres(database.url, { max: 2, onnotice: () => {} });
    try {
      await sql.unsafe(SEED_SCHEMA);
      await fillSeedDatabase(sql, { users: 10, logRows: 100 });
      const before = JSON.stringify(await sql`select count(*) from "CreditTransaction"`);
      // The app holds the log, so db:adopt keeps trying for its locks: the moment to cut it.
      const app = await sql.reserve();
      await app`begin`;
      await app`insert into "CreditTransaction" (user_id, amount, operation, feature_type)
                select id, 1, 'deduct', 'chat_tool_call' from "User" order by id limit 1`;
      const adopting = startScript(cli, ['adopt'], { env: { DATABASE_URL: database.url } });
      const name = new URL(database.url).pathname.slice(1);
      let cut = 0;
      while (cut === 0) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        cut = (
          await sql`select pg_terminate_backend(pid) from pg_stat_activity
                     where datname = ${name} and application_name = '@bragdoc/database migrate'`
        ).length;
      }
      const code = await adopting.exited;
      await app`rollback`;
      app.release();
      expect(code).toBe(1);
      const errors = adopting
        .output()
        .split('\n')
        .filter((line) => line.startsWith('✗'));
      expect(errors).toHaveLength(1);
      expect(errors[0]).toMatch(
        /^✗ The connection to the database was lost before the command finished \(.+\): the server rolled back what it had not committed .*run it again\.$/,
      );
      expect(adopting.output()).not.toMatch(/triggerUncaughtException|at TCP/);
      expect(JSON.stringify(await sql`select count(*) from "CreditTransaction"`)).toBe(before);
      const [recorded] = await sql`select to_regclass('drizzle.__drizzle_migrations') as t`;
      expect(recorded?.t).toBeNull();
    } finally {
      await sql.end();
      await database.close();
    }
  }, 60_000);

  it('db:migrate on the seed-built database fails pointing at db:adopt, not at the migration', async () => {
    const result = await runScript(cli, ['migrate'], { env: { DATABASE_URL: seed.url } });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/Migration 0000_init failed: .*already exists/);
    expect(result.stderr).toMatch(
      /built without db:migrate\. If it was built the seed plan's way .* run pnpm db:adopt/,
    );
    expect(result.stderr).not.toMatch(/Fix the migration/);
  });

  it('refuses a database that is not seed-built in one line with its code, changing nothing', async () => {
    const result = await runScript(cli, ['adopt'], { env: { DATABASE_URL: empty.url } });
    expect(result.code).toBe(1);
    const errors = result.stderr.trim().split('\n');
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(
      /^✗ This database has no "User" and "CreditTransaction" table.*Nothing was changed\. \[ADOPTION_REFUSED\]$/,
    );
  });

  it('adopts, prints what it did, and db:migrate then installs the ledger; a second db:adopt does nothing', async () => {
    const adopted = await runScript(cli, ['adopt'], { env: { DATABASE_URL: seed.url } });
    expect(adopted.stderr).toBe('');
    expect(adopted.code).toBe(0);
    expect(adopted.stdout).toMatch(
      /Adopted .*: 30 user\(s\), \d+ with a NULL balance set to the default \(10 credits, 20 chat messages\); \d+ log row\(s\) kept \(times read as UTC, metadata marked "adopted_from_log"\); \d+ the ledger cannot hold moved to drizzle\.adoption_skipped_log_row\. The app's writes waited at most \d+ ms/,
    );
    expect(adopted.stdout).toMatch(
      /Recorded 0000_init and 0001_credit_ledger_columns as applied; \d+ pending: run pnpm db:migrate/,
    );

    const migrated = await runScript(cli, ['migrate'], { env: { DATABASE_URL: seed.url } });
    expect(migrated.code).toBe(0);
    expect(migrated.stdout).toMatch(/✓ 0003_credit_ledger_integrity/);
    expect(migrated.stdout).not.toMatch(/✓ 0000_init/);

    const again = await runScript(cli, ['adopt'], { env: { DATABASE_URL: seed.url } });
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(
      /is managed by db:migrate already \(adopted .*\): nothing to adopt, nothing changed/,
    );

    const verified = await runScript('scripts/credits-verify.ts', [], {
      env: { DATABASE_URL: seed.url },
    });
    expect(verified.code).toBe(0);
  });

  it("db:check --against passes on the adopted database once the app's own objects are declared, as docs/ADOPTING.md lists them", async () => {
    const folder = mkdtempSync(path.join(tmpdir(), 'bragdoc-adopted-'));
    const file = path.join(folder, 'app-objects.txt');
    writeFileSync(
      file,
      [
        'table public."StripeEvent"',
        'enum public.user_level',
        'column public."User".level',
        'column public."User".password',
        'column public."User".stripe_customer_id',
        "# the seed's columns, as the app defined them",
        'column public."User".email',
        'column public."User".name',
        'column public."User".created_at',
        'column public."User".updated_at',
        'constraint user_email_unique on public."User"',
        'index public.user_email_unique',
      ].join('\n'),
    );
    try {
      const undeclared = await runScript('scripts/check.ts', ['--against', seed.url]);
      expect(undeclared.code).toBe(1);
      expect(undeclared.stderr).toContain('~ column public."User".email');
      const declared = await runScript('scripts/check.ts', [
        '--against',
        seed.url,
        '--app-objects',
        file,
      ]);
      expect(declared.stderr).toBe('');
      expect(declared.code).toBe(0);
      expect(declared.stdout).toContain('~ column public."User".email');
    } finally {
      rmSync(folder, { recursive: true, force: true });
    }
  }, 120_000);
});
