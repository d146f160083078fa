import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createTestDatabase, type TestDatabase } from '@bragdoc/test-postgres';
import postgres from 'postgres';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { drizzleKitBin } from '../../scripts/drizzle-kit-bin.js';
import { createDatabase } from '../../src/client.js';
import { deductCredits } from '../../src/credits/index.js';
import { packageDir, runScript } from '../run-script.js';

const verify = 'scripts/credits-verify.ts';

let database: TestDatabase;
let sql: postgres.Sql;
beforeEach(async () => {
  database = await createTestDatabase();
  sql = postgres(database.url, { max: 1, onnotice: () => {} });
});
afterEach(async () => {
  await sql.end();
  await database.close();
});

async function userWithActivity() {
  const handle = createDatabase(database.url, { max: 1 });
  try {
    const [row] = await sql<{ id: string }[]>`
      insert into "User" (email) values (${`${crypto.randomUUID()}@example.com`}) returning id`;
    const userId = row?.id ?? '';
    await deductCredits(handle.db, { userId, amount: 2, featureType: 'chat_tool_call' });
    return userId;
  } finally {
    await handle.close();
  }
}

describe('pnpm credits:verify', () => {
  it('exits 0 on a sound ledger and says what it checked', async () => {
    await userWithActivity();
    const result = await runScript(verify, [], { env: { DATABASE_URL: database.url } });
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^credits:verify: OK, .+: 1 user, 3 rows checked in \d+ ms\.\n$/);
  });

  it('prints each kind of violation with its count, then each violation with its user and seq, a summary, and exits 1', async () => {
    const userId = await userWithActivity();
    await sql.begin(async (tx) => {
      await tx`alter table "CreditTransaction" disable trigger user`;
      await tx`delete from "CreditTransaction" where user_id = ${userId} and seq = 2`;
      await tx`alter table "CreditTransaction" enable trigger user`;
    });
    const result = await runScript(verify, ['--user', userId], {
      env: { DATABASE_URL: database.url },
    });
    expect(result.code).toBe(1);
    const lines = result.stdout.trim().split('\n');
    // A kind's line is "✗ kind: count"; a violation's is "  ✗ kind   where: detail".
    const shape = (line: string) =>
      line.startsWith('  ') ? (line.trim().split(':')[0] ?? '').replace(/\s+/g, ' ') : line;
    expect(lines.slice(0, -1).map(shape)).toEqual([
      '✗ balance_mismatch: 1',
      `✗ balance_mismatch user ${userId}`,
      // The opening grant of chat messages lost the row that created it.
      '✗ grant_origin: 1',
      `✗ grant_origin user ${userId}`,
      '✗ hash_mismatch: 1',
      `✗ hash_mismatch user ${userId} seq 3`,
      '✗ head_mismatch: 1',
      `✗ head_mismatch user ${userId}`,
      '✗ seq_gap: 1',
      `✗ seq_gap user ${userId} seq 3`,
    ]);
    expect(lines.at(-1)).toMatch(
      /^credits:verify: 5 violations in .+ \(1 user, 2 rows, \d+ ms\)\.$/,
    );
  });

  it('saves heads with --write-heads and checks them with --heads', async () => {
    await userWithActivity();
    const dir = mkdtempSync(path.join(tmpdir(), 'heads-'));
    try {
      const file = path.join(dir, 'heads.json');
      const saved = await runScript(verify, ['--write-heads', file], {
        env: { DATABASE_URL: database.url },
      });
      expect(saved.code).toBe(0);
      expect(saved.stdout).toContain(`saved 1 heads to ${file}, as verified`);
      const checked = await runScript(verify, ['--heads', file], {
        env: { DATABASE_URL: database.url },
      });
      expect(checked.code).toBe(0);
      expect(checked.stdout).toContain(`checked 1 saved heads from ${file}`);
      await sql.begin(async (tx) => {
        await tx`alter table "User" disable trigger user`;
        await tx`update "User" set free_credits = 99`;
        await tx`alter table "User" enable trigger user`;
      });
      const refused = await runScript(verify, ['--write-heads', file], {
        env: { DATABASE_URL: database.url },
      });
      expect(refused.code).toBe(1);
      expect(refused.stdout).toContain(`not saving heads to ${file}: the ledger did not verify`);
      writeFileSync(file, '{"not": "heads"}');
      const bad = await runScript(verify, ['--heads', file], {
        env: { DATABASE_URL: database.url },
      });
      expect(bad.code).toBe(1);
      expect(bad.stderr.trim()).toBe(
        `credits:verify: ${file} is not a file of heads written by --write-heads.`,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses to guess a database: without DATABASE_URL it exits 2 saying so', async () => {
    const result = await runScript(verify, []);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/DATABASE_URL/);
  });
});

describe('a database built with drizzle-kit push (no ledger triggers)', () => {
  it('refuses every ledger write with LEDGER_NOT_INSTALLED, writes nothing, and credits:verify says why', async () => {
    const empty = await createTestDatabase({ empty: true });
    try {
      const { spawnSync } = await import('node:child_process');
      const push = spawnSync(
        process.execPath,
        [
          drizzleKitBin,
          'push',
          '--dialect=postgresql',
          '--schema=src/schema.ts',
          `--url=${empty.url}`,
          '--force',
        ],
        { cwd: packageDir, encoding: 'utf8' },
      );
      expect(push.status, push.stdout + push.stderr).toBe(0);
      const raw = postgres(empty.url, { max: 1, onnotice: () => {} });
      const handle = createDatabase(empty.url, { max: 1 });
      try {
        const [row] = await raw<{ id: string }[]>`
          insert into "User" (email) values ('pushed@example.com') returning id`;
        const userId = row?.id ?? '';
        await expect(
          deductCredits(handle.db, { userId, amount: 1000, featureType: 'chat_tool_call' }),
        ).rejects.toMatchObject({ code: 'LEDGER_NOT_INSTALLED' });
        const [after] = await raw`
          select free_credits, (select count(*)::int from "CreditTransaction") as rows from "User"`;
        expect(after).toEqual({ free_credits: 10, rows: 0 });
        const result = await runScript(verify, [], { env: { DATABASE_URL: empty.url } });
        expect(result.code).toBe(1);
        expect(result.stdout).toContain('trigger_missing');
        expect(result.stdout).toContain('function_missing');
      } finally {
        await raw.end();
        await handle.close();
      }
    } finally {
      await empty.close();
    }
  }, 60_000);
});
