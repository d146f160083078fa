import { readFileSync } from 'node:fs';
import path from 'node:path';
import { readMigrationFiles } from 'drizzle-orm/migrator';

export interface MigrationFile {
  /** The journal's tag, e.g. `0000_init`; the file is `<name>.sql`. */
  name: string;
  file: string;
  /** drizzle's key for a migration: the journal's `when`, stored as `created_at`. */
  folderMillis: number;
  /** sha256 of the file, exactly as drizzle's own migrator computes it. */
  hash: string;
  statements: string[];
}

/** drizzle-kit's `meta/_journal.json`: one entry per migration, in order. */
export interface DrizzleJournal {
  entries: { idx: number; version: string; when: number; tag: string; breakpoints: boolean }[];
}

export function readJournal(migrationsFolder: string): DrizzleJournal {
  return JSON.parse(
    readFileSync(path.join(migrationsFolder, 'meta', '_journal.json'), 'utf8'),
  ) as DrizzleJournal;
}

/**
 * Reads a drizzle-kit migrations folder through drizzle's own reader, so hashes and
 * statement splitting match drizzle's `migrate()`, and adds each migration's name.
 */
export function readMigrations(migrationsFolder: string): MigrationFile[] {
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
