import {
  cpSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { packageDir, runScript } from './run-script.js';

// db:check runs on a temporary copy of the package, so a test can break the copy freely.
let copy: string;

beforeEach(() => {
  copy = mkdtempSync(path.join(tmpdir(), 'bragdoc-db-check-test-'));
  for (const entry of [
    'src',
    'scripts',
    'drizzle',
    'ledger',
    'package.json',
    'drizzle.config.ts',
  ]) {
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

describe('the ledger sources (ledger/) and pnpm db:ledger', () => {
  const source = (file: string) => path.join(copy, 'ledger', file);
  const ledger = (args: string[]) => runScript('scripts/ledger.ts', args, { cwd: copy });

  function editSource(file: string, from: string, to: string) {
    const text = readFileSync(source(file), 'utf8');
    if (!text.includes(from)) throw new Error(`${file} has no "${from}"`);
    writeFileSync(source(file), text.replace(from, to));
  }

  it('db:check fails when a source differs from the latest migration that installs it, naming the file and the line', async () => {
    editSource(
      'functions/credit_tx_append_only.sql',
      "TG_OP = 'DELETE'",
      "TG_OP = 'DELETE' /* changed */",
    );
    const result = await check();
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      /ledger\/functions\/credit_tx_append_only\.sql differs from what 0006_credit_ledger_schema installs, from line \d+/,
    );
    expect(result.stderr).toContain('pnpm db:ledger <name>');
  });

  it('db:check fails on a new source that no migration installs', async () => {
    writeFileSync(source('functions/credit_new_rule.sql'), 'SELECT 1;\n');
    const result = await check();
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(
      'ledger/functions/credit_new_rule.sql is installed by no migration',
    );
  });

  it('db:ledger writes a migration with the changed source and the privileges only, after which db:check passes', async () => {
    editSource(
      'functions/credit_tx_append_only.sql',
      "TG_OP = 'DELETE'",
      "TG_OP = 'DELETE' /* changed */",
    );
    const written = await ledger(['append_only_note']);
    expect(written.code).toBe(0);
    expect(written.stdout).toContain('ledger/functions/credit_tx_append_only.sql');
    const files = readdirSync(path.join(copy, 'drizzle')).filter((f) =>
      f.endsWith('append_only_note.sql'),
    );
    expect(files).toHaveLength(1);
    const sql = readFileSync(path.join(copy, 'drizzle', files[0] ?? ''), 'utf8');
    expect([...sql.matchAll(/^-- ledger:source (\S+)$/gm)].map((m) => m[1])).toEqual([
      'functions/credit_tx_append_only.sql',
      'privileges.sql',
    ]);
    expect(sql).toContain("TG_OP = 'DELETE' /* changed */");
    const result = await check();
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    // Nothing left to install: a second run writes nothing.
    const again = await ledger(['again']);
    expect(again.stdout).toContain('Nothing to install');
    expect(readdirSync(path.join(copy, 'drizzle')).some((f) => f.endsWith('again.sql'))).toBe(
      false,
    );
  });

  it('db:check fails on a migration whose source block was cut (no end marker), naming the migration', async () => {
    const file = path.join(copy, 'drizzle', '0006_credit_ledger_schema.sql');
    writeFileSync(file, readFileSync(file, 'utf8').replace('-- ledger:end privileges.sql', ''));
    const result = await check();
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(
      '0006_credit_ledger_schema.sql: the block of ledger source privileges.sql has no "-- ledger:end privileges.sql" line',
    );
  });
});
