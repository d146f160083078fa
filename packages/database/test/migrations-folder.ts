import { appendFileSync, cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { defaultMigrationsFolder } from '../src/migrate/index.js';
import { readJournal } from '../src/migrate/migrations.js';

/**
 * A temporary copy of the package's migrations folder that a test may extend or edit,
 * the way a developer would (new journal entries, an edited SQL file).
 */
export class MigrationsFolder {
  readonly dir = mkdtempSync(path.join(tmpdir(), 'bragdoc-migrations-'));

  constructor() {
    cpSync(defaultMigrationsFolder, this.dir, { recursive: true });
  }

  private get journalPath() {
    return path.join(this.dir, 'meta', '_journal.json');
  }

  /** Appends a migration after the existing ones; `statements` are split by breakpoints. */
  add(name: string, statements: string[]): string {
    const journal = readJournal(this.dir);
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
    writeFileSync(this.journalPath, JSON.stringify(journal, null, 2));
    writeFileSync(
      path.join(this.dir, `${tag}.sql`),
      statements.join('\n--> statement-breakpoint\n'),
    );
    return tag;
  }

  /** Changes an existing migration's file, as an edit after it was applied would. */
  edit(tag: string, appended: string): void {
    appendFileSync(path.join(this.dir, `${tag}.sql`), appended);
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
