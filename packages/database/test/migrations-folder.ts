import { appendFileSync, cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { defaultMigrationsFolder } from '../src/migrate/index.js';
import { appendMigration, truncateJournal } from '../src/migrate/journal.js';

/**
 * A temporary copy of the package's migrations folder that a test may extend or edit,
 * the way a developer would (new journal entries, an edited SQL file).
 */
export class MigrationsFolder {
  readonly dir = mkdtempSync(path.join(tmpdir(), 'bragdoc-migrations-'));

  constructor() {
    cpSync(defaultMigrationsFolder, this.dir, { recursive: true });
  }

  /** Appends a migration after the existing ones; `statements` are split by breakpoints. */
  add(name: string, statements: string[]): string {
    return appendMigration(this.dir, name, statements);
  }

  /** Drops every migration after `name` from the journal (a checkout of an older commit). */
  truncateAfter(name: string): void {
    truncateJournal(this.dir, name);
  }

  /** Changes an existing migration's file, as an edit after it was applied would. */
  edit(tag: string, appended: string): void {
    appendFileSync(path.join(this.dir, `${tag}.sql`), appended);
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
