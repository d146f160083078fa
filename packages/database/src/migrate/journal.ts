import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { readMigrationFiles } from 'drizzle-orm/migrator';

/**
 * Everything this package knows of drizzle-kit's migrations folder layout, in one place:
 * `meta/_journal.json` (one entry per migration, in order), `<tag>.sql` split by
 * `--> statement-breakpoint`, and `meta/<idx>_snapshot.json`. drizzle-kit's v1 layout (a
 * folder per migration, no journal) would replace this module and nothing else.
 */

/** One migration as the folder describes it. */
export interface JournalMigration {
  /** The journal's tag, e.g. `0000_init`. */
  name: string;
  file: string;
  /** drizzle's key for a migration: the journal's `when`, stored as `created_at`. */
  folderMillis: number;
  /** sha256 of the file, exactly as drizzle's own migrator computes it. */
  hash: string;
  /** The file's statements, split at its breakpoints, trimmed, empty ones dropped. */
  statements: string[];
}

/** drizzle-kit's `meta/_journal.json`. */
export interface DrizzleJournal {
  entries: { idx: number; version: string; when: number; tag: string; breakpoints: boolean }[];
}

const journalPath = (folder: string) => path.join(folder, 'meta', '_journal.json');
const snapshotName = (idx: number) => `${String(idx).padStart(4, '0')}_snapshot.json`;

export function readJournal(migrationsFolder: string): DrizzleJournal {
  return JSON.parse(readFileSync(journalPath(migrationsFolder), 'utf8')) as DrizzleJournal;
}

/**
 * The folder's migrations, in order, through drizzle's own reader, so hashes and statement
 * splitting match drizzle's `migrate()`.
 */
export function readJournalMigrations(migrationsFolder: string): JournalMigration[] {
  const folder = path.resolve(migrationsFolder);
  const journal = readJournal(folder);
  const migrations = readMigrationFiles({ migrationsFolder: folder });
  return migrations.map((migration, i) => {
    const entry = journal.entries[i];
    if (!entry || entry.when !== migration.folderMillis) {
      throw new Error(`The journal in ${folder} changed while it was being read; try again.`);
    }
    return {
      name: entry.tag,
      file: path.join(folder, `${entry.tag}.sql`),
      folderMillis: migration.folderMillis,
      hash: migration.hash,
      statements: migration.sql.map((s) => s.trim()).filter((s) => s.length > 0),
    };
  });
}

/** Appends a migration after the existing ones (tests, tools); returns its tag. */
export function appendMigration(
  migrationsFolder: string,
  name: string,
  statements: string[],
): string {
  const journal = readJournal(migrationsFolder);
  const last = journal.entries.at(-1);
  const idx = journal.entries.length;
  const tag = `${String(idx).padStart(4, '0')}_${name}`;
  journal.entries.push({
    idx,
    version: last?.version ?? '7',
    when: (last?.when ?? Date.now()) + 1000,
    tag,
    breakpoints: true,
  });
  writeFileSync(journalPath(migrationsFolder), JSON.stringify(journal, null, 2));
  writeFileSync(
    path.join(migrationsFolder, `${tag}.sql`),
    statements.join('\n--> statement-breakpoint\n'),
  );
  return tag;
}

/** Keeps the migrations up to and including `name`, dropping the later ones from the journal. */
export function truncateJournal(migrationsFolder: string, name: string): void {
  const journal = readJournal(migrationsFolder);
  const end = journal.entries.findIndex((e) => e.tag === name);
  if (end === -1) throw new Error(`${name} is not in ${journalPath(migrationsFolder)}`);
  journal.entries = journal.entries.slice(0, end + 1);
  writeFileSync(journalPath(migrationsFolder), JSON.stringify(journal, null, 2));
}

/** Where the journal, the SQL files and the snapshots of a folder disagree. */
export function layoutProblems(dir: string): string[] {
  const problems: string[] = [];
  if (!existsSync(journalPath(dir))) return [`${journalPath(dir)} is missing.`];
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
    const snapshotPath = path.join(dir, 'meta', snapshotName(entry.idx));
    if (!existsSync(snapshotPath)) {
      problems.push(`meta/${path.basename(snapshotPath)} (snapshot of ${entry.tag}) is missing.`);
      return;
    }
    const snapshot = JSON.parse(readFileSync(snapshotPath, 'utf8')) as {
      id: string;
      prevId: string;
    };
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
