import { spawnSync } from 'node:child_process';
import { readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { drizzleKitBin } from './drizzle-kit-bin.js';
import { ledgerMigrationSql, sourceDrift } from './ledger-sources.js';

/**
 * `pnpm db:ledger <name>`: writes the custom migration that installs the ledger sources
 * (`ledger/`) that differ from what the migrations installed, frozen as they are now. The
 * migration is registered in drizzle's journal by `drizzle-kit generate --custom`, so
 * db:migrate, db:check and db:lint treat it like any other.
 */
const usage = `Usage: pnpm db:ledger <name> [--check]

  <name>    the migration's name (letters, digits, _): drizzle/NNNN_<name>.sql
  --check   print which sources differ from the latest migration that installs them; exit 1 if any`;

const packageDir = fileURLToPath(new URL('..', import.meta.url));
const sourcesDir = path.join(packageDir, 'ledger');
const migrationsDir = path.join(packageDir, 'drizzle');

function main(): number {
  const started = performance.now();
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { check: { type: 'boolean', default: false }, help: { type: 'boolean' } },
  });
  if (values.help) {
    console.log(usage);
    return 0;
  }
  const drift = sourceDrift(sourcesDir, migrationsDir);
  if (values.check || positionals.length === 0) {
    if (drift.length === 0) {
      console.log('✓ every ledger source is what the latest migration that installs it says.');
      return 0;
    }
    for (const d of drift) console.log(`  ${d.kind.padEnd(13)} ledger/${d.path}`);
    if (!values.check) console.error(`\n${usage}`);
    return 1;
  }
  const [name] = positionals;
  if (!name || !/^\w+$/.test(name) || positionals.length > 1) {
    console.error(`✗ db:ledger takes one migration name of letters, digits and _.\n\n${usage}`);
    return 2;
  }
  if (drift.length === 0) {
    console.log('Nothing to install: every ledger source is what the migrations already say.');
    return 0;
  }
  const before = new Set(readdirSync(migrationsDir));
  const generate = spawnSync(
    process.execPath,
    [drizzleKitBin, 'generate', '--custom', `--name=${name}`],
    { cwd: packageDir, encoding: 'utf8' },
  );
  const created = readdirSync(migrationsDir).filter((f) => f.endsWith('.sql') && !before.has(f));
  const [file] = created;
  if (generate.status !== 0 || created.length !== 1 || !file) {
    console.error(
      `✗ drizzle-kit generate --custom did not create one migration:\n${generate.stdout}${generate.stderr}`,
    );
    return 1;
  }
  // Computed after drizzle-kit ran, against the journal without the new (empty) file's blocks.
  const { sql, installed, removed } = ledgerMigrationSql(sourcesDir, migrationsDir);
  writeFileSync(path.join(migrationsDir, file), sql);
  console.log(
    `Wrote drizzle/${file} in ${Math.round(performance.now() - started)} ms, installing:`,
  );
  for (const source of installed) console.log(`  ledger/${source}`);
  for (const source of removed)
    console.log(
      `  ledger/${source} was removed: write the statement that drops it in the migration`,
    );
  console.log('Review it, then run pnpm db:migrate.');
  return 0;
}

process.exitCode = main();
