import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { packageDir, runScript } from './run-script.js';

// db:check runs on a temporary copy of the package, so a test can break the copy freely.
let copy: string;

beforeEach(() => {
  copy = mkdtempSync(path.join(tmpdir(), 'bragdoc-db-check-test-'));
  for (const entry of ['src', 'scripts', 'drizzle', 'package.json', 'drizzle.config.ts']) {
    cpSync(path.join(packageDir, entry), path.join(copy, entry), { recursive: true });
  }
  symlinkSync(path.join(packageDir, 'node_modules'), path.join(copy, 'node_modules'));
});
afterEach(() => rmSync(copy, { recursive: true, force: true }));

const check = () => runScript('scripts/check.ts', [], { cwd: copy });

function editSchema(from: string, to: string) {
  const file = path.join(copy, 'src', 'schema.ts');
  const source = readFileSync(file, 'utf8');
  if (!source.includes(from)) throw new Error(`schema.ts has no "${from}"`);
  writeFileSync(file, source.replace(from, to));
}

describe('pnpm db:check', () => {
  it('passes when the schema and the migrations agree', async () => {
    const result = await check();
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('✓ src/schema.ts matches the migrations');
  });

  it('fails on a schema change that no migration holds, showing the missing SQL', async () => {
    editSchema("name: text('name'),", "name: text('name'),\n    nickname: text('nickname'),");
    const result = await check();
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('src/schema.ts has changes that no migration holds');
    expect(result.stderr).toContain('ALTER TABLE "User" ADD COLUMN "nickname" text;');
  });

  it('fails on a changed index that no migration holds', async () => {
    editSchema("index('credit_tx_created_at_idx')", "index('credit_tx_created_idx')");
    const result = await check();
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('CREATE INDEX "credit_tx_created_idx"');
  });

  it('fails when a snapshot of the journal is missing', async () => {
    rmSync(path.join(copy, 'drizzle', 'meta', '0000_snapshot.json'));
    const result = await check();
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('meta/0000_snapshot.json (snapshot of 0000_init) is missing.');
  });

  it('fails when a SQL file is not in the journal', async () => {
    writeFileSync(path.join(copy, 'drizzle', '0001_stray.sql'), 'SELECT 1;');
    const result = await check();
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('0001_stray.sql is not in meta/_journal.json.');
  });
});
