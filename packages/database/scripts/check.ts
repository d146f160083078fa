import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readJournal } from '../src/migrate/migrations.js';
import { drizzleKitBin } from './drizzle-kit-bin.js';

/**
 * `pnpm db:check`: fails when the migrations folder is inconsistent (journal, SQL files
 * and snapshots out of step) or when `schema.ts` has changes no migration holds.
 * drizzle-kit's own `check` looks only at the snapshots, so the second part regenerates
 * into a temporary copy of the folder and looks for a new file.
 */
const packageDir = fileURLToPath(new URL('..', import.meta.url));
const migrationsDir = path.join(packageDir, 'drizzle');
const schemaFile = path.join(packageDir, 'src', 'schema.ts');

interface Snapshot {
  id: string;
  prevId: string;
}

function consistencyProblems(dir: string): string[] {
  const problems: string[] = [];
  const journalPath = path.join(dir, 'meta', '_journal.json');
  if (!existsSync(journalPath)) return [`${journalPath} is missing.`];
  const journal = readJournal(dir);
  const tags = new Set(journal.entries.map((e) => e.tag));

  for (const file of readdirSync(dir).filter((f) => f.endsWith('.sql'))) {
    if (!tags.has(file.slice(0, -4))) problems.push(`${file} is not in meta/_journal.json.`);
  }
  let previousId = '00000000-0000-0000-0000-000000000000';
  journal.entries.forEach((entry, position) => {
    if (entry.idx !== position)
      problems.push(`Journal entry ${entry.tag} has idx ${entry.idx}, expected ${position}.`);
    if (!existsSync(path.join(dir, `${entry.tag}.sql`)))
      problems.push(`${entry.tag}.sql is in the journal but missing.`);
    const snapshotPath = path.join(
      dir,
      'meta',
      `${String(entry.idx).padStart(4, '0')}_snapshot.json`,
    );
    if (!existsSync(snapshotPath)) {
      problems.push(`meta/${path.basename(snapshotPath)} (snapshot of ${entry.tag}) is missing.`);
      return;
    }
    const snapshot = JSON.parse(readFileSync(snapshotPath, 'utf8')) as Snapshot;
    if (snapshot.prevId !== previousId) {
      problems.push(
        `meta/${path.basename(snapshotPath)} does not follow the previous snapshot (prevId ${snapshot.prevId}).`,
      );
    }
    previousId = snapshot.id;
  });
  const snapshots = readdirSync(path.join(dir, 'meta')).filter((f) => f.endsWith('_snapshot.json'));
  if (snapshots.length !== journal.entries.length) {
    problems.push(`${snapshots.length} snapshots for ${journal.entries.length} journal entries.`);
  }
  return problems;
}

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

function main(): number {
  const started = performance.now();
  const problems = consistencyProblems(migrationsDir);
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

process.exitCode = main();
