import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { compareCatalogs, describeDifference, readCatalog } from '../src/migrate/catalog.js';
import { layoutProblems } from '../src/migrate/journal.js';
import { redactUrl } from '../src/migrate/redact.js';
import { readAppObjects, splitAppObjects } from './app-objects.js';
import { drizzleKitBin } from './drizzle-kit-bin.js';
import { sourceDrift } from './ledger-sources.js';
import { referenceCatalog } from './reference-schema.js';

/**
 * `pnpm db:check`: fails when the migrations folder is inconsistent (journal, SQL files
 * and snapshots out of step) or when `schema.ts` has changes no migration holds.
 * drizzle-kit's own `check` looks only at the snapshots, so the second part regenerates
 * into a temporary copy of the folder and looks for a new file.
 */
const packageDir = fileURLToPath(new URL('..', import.meta.url));
const migrationsDir = path.join(packageDir, 'drizzle');
const schemaFile = path.join(packageDir, 'src', 'schema.ts');
const ledgerDir = path.join(packageDir, 'ledger');

// drizzle-kit reads `--out` relative to its working directory, even when it is absolute.
function drizzleKitRun(cwd: string, args: string[]): { status: number; output: string } {
  const result = spawnSync(process.execPath, [drizzleKitBin, ...args], { cwd, encoding: 'utf8' });
  return { status: result.status ?? 1, output: `${result.stdout}${result.stderr}` };
}

function ungeneratedChanges(): string[] {
  const scratch = mkdtempSync(path.join(tmpdir(), 'bragdoc-db-check-'));
  try {
    const copy = path.join(scratch, 'drizzle');
    cpSync(migrationsDir, copy, { recursive: true });
    const before = new Set(readdirSync(copy));
    const generate = drizzleKitRun(scratch, [
      'generate',
      '--dialect=postgresql',
      `--schema=${schemaFile}`,
      '--out=drizzle',
    ]);
    // drizzle-kit exits 0 even when it fails, so require one of its two success messages.
    if (
      generate.status !== 0 ||
      !/nothing to migrate|Your SQL migration file/.test(generate.output)
    ) {
      throw new Error(`drizzle-kit generate failed:\n${generate.output}`);
    }
    return readdirSync(copy)
      .filter((f) => f.endsWith('.sql') && !before.has(f))
      .map((f) => readFileSync(path.join(copy, f), 'utf8'));
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

/**
 * `db:check --against <url>`: builds what the migrations produce in a throwaway database
 * and compares it with the live one, object by object. Read-only on the live database.
 */
async function checkAgainst(
  url: string,
  folder: string,
  appObjectsFile: string | undefined,
): Promise<number> {
  const started = performance.now();
  console.log(`Comparing ${redactUrl(url)} with what the migrations of ${folder} build.`);
  const declarations = appObjectsFile ? readAppObjects(appObjectsFile) : [];
  // The live database first: a wrong URL fails before anything is built.
  const actual = await readCatalog(url);
  const expected = await referenceCatalog(folder, { log: (line) => console.log(line) });
  const app = splitAppObjects(compareCatalogs(expected, actual), declarations);
  if (app.refused.length > 0) {
    console.error(`✗ ${appObjectsFile} declares what the ledger relies on as the app's own:`);
    for (const r of app.refused) console.error(`  ${r}`);
    console.error('Remove those lines: only objects the app added can be declared.');
    return 1;
  }
  if (app.declared.length > 0)
    console.log(
      `  ${app.declared.length} difference${app.declared.length === 1 ? '' : 's'} declared the app's own in ${appObjectsFile}, not drift:`,
    );
  for (const d of app.declared) console.log(`    ${describeDifference(d)}`);
  for (const key of app.unused)
    console.log(`  ${appObjectsFile} declares ${key}, which the live database does not have.`);
  const differences = app.drift;
  if (differences.length > 0) {
    console.error(
      `✗ ${differences.length} difference${differences.length === 1 ? '' : 's'} between the migrations and ${redactUrl(url)}:`,
    );
    for (const d of differences) console.error(`  ${describeDifference(d)}`);
    console.error(
      'Undo the hand-made changes (or put them in a migration), or, for triggers lost to ' +
        'drizzle-kit push, build the database with pnpm db:migrate. Objects the app added on ' +
        'purpose can be declared: --app-objects FILE, one key per line as printed after "+ " ' +
        '(and, for a "User" column, constraint or index the ledger does not rely on, after ' +
        '"~ " or "- ": an adopted database\'s own).',
    );
    return 1;
  }
  console.log(
    `✓ ${redactUrl(url)} matches the migrations: ${expected.size} objects compared in ${Math.round(performance.now() - started)} ms.`,
  );
  return 0;
}

function main(): number {
  const started = performance.now();
  const problems = layoutProblems(migrationsDir);
  const kitCheck = drizzleKitRun(packageDir, ['check', '--dialect=postgresql', '--out=drizzle']);
  if (kitCheck.status !== 0 || !/Everything's fine/.test(kitCheck.output))
    problems.push(`drizzle-kit check failed:\n${kitCheck.output.trim()}`);
  if (problems.length > 0) {
    console.error(`✗ ${migrationsDir} is inconsistent:`);
    for (const p of problems) console.error(`  - ${p}`);
    return 1;
  }
  console.log(
    `✓ journal, SQL files and snapshots agree (${readdirSync(migrationsDir).filter((f) => f.endsWith('.sql')).length} migrations).`,
  );

  let drift: ReturnType<typeof sourceDrift>;
  try {
    drift = sourceDrift(ledgerDir, migrationsDir);
  } catch (error) {
    console.error(
      `✗ the ledger sources cannot be compared with the migrations: ${error instanceof Error ? error.message : String(error)}`,
    );
    return 1;
  }
  if (drift.length > 0) {
    console.error(
      '✗ the ledger sources differ from the migrations that install them. Run `pnpm db:ledger <name>` and commit the migration it writes:',
    );
    for (const d of drift) {
      if (d.kind === 'not_installed')
        console.error(`  - ledger/${d.path} is installed by no migration`);
      else if (d.kind === 'changed')
        console.error(
          `  - ledger/${d.path} differs from what ${d.migration} installs, from line ${d.line}`,
        );
      else
        console.error(
          `  - ledger/${d.path} was installed by ${d.migration} and no longer exists: db:ledger writes a ledger:removed marker, under which you drop it`,
        );
    }
    return 1;
  }
  console.log(
    '✓ every ledger source (ledger/) is what the latest migration that installs it says.',
  );

  const missing = ungeneratedChanges();
  if (missing.length > 0) {
    console.error(
      '✗ src/schema.ts has changes that no migration holds. Run `pnpm db:generate` and commit the result. The missing SQL:',
    );
    for (const sql of missing) console.error(sql.replace(/^/gm, '    '));
    return 1;
  }
  console.log(
    `✓ src/schema.ts matches the migrations (checked in ${Math.round(performance.now() - started)} ms).`,
  );
  return 0;
}

const { values } = parseArgs({
  options: {
    against: { type: 'string' },
    migrations: { type: 'string', default: migrationsDir },
    'app-objects': { type: 'string' },
  },
});
if (values.against) {
  checkAgainst(
    values.against,
    path.resolve(values.migrations),
    values['app-objects'] === undefined
      ? undefined
      : path.resolve(process.env.INIT_CWD ?? process.cwd(), values['app-objects']),
  ).then(
    (code) => process.exit(code),
    (error: unknown) => {
      console.error(
        `✗ db:check --against could not compare ${redactUrl(values.against ?? '')}: ` +
          `${error instanceof Error ? error.message : String(error)}. Check that the URL is right ` +
          'and the server accepts connections from here (and, for the throwaway build, that ' +
          'TEST_DATABASE_URL, if set, points at a server where databases can be created).',
      );
      process.exit(1);
    },
  );
} else {
  process.exitCode = main();
}
