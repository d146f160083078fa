import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { readJournalMigrations } from '../src/migrate/journal.js';

/**
 * The ledger's SQL sources (`ledger/`), one file per function, per table's triggers, for the
 * schema and for the privileges, and the migrations that freeze them. A migration written by
 * `pnpm db:ledger` holds each source it installs between two marker lines, verbatim, so that
 * `db:check` can tell, for every source, whether the latest migration that installs it says
 * the same (as graphile-migrate's `--! include` freezes included files into a migration).
 */

/** The order sources are installed in: the schema, its tables, the functions, the triggers that call them, the grants. */
const GROUPS = ['schema.sql', 'tables', 'functions', 'triggers', 'privileges.sql'] as const;

/** Installed by every ledger migration: a function created anew gets default grants. */
export const ALWAYS_INSTALLED = 'privileges.sql';

export interface LedgerSource {
  /** Relative to the sources folder, with `/`: `functions/credit_tx_prepare.sql`. */
  path: string;
  text: string;
}

/** Every source, in install order. */
export function readLedgerSources(sourcesDir: string): LedgerSource[] {
  const sources: LedgerSource[] = [];
  for (const group of GROUPS) {
    const full = path.join(sourcesDir, group);
    if (group.endsWith('.sql')) {
      if (existsSync(full))
        sources.push({ path: group, text: normalise(readFileSync(full, 'utf8')) });
      continue;
    }
    if (!existsSync(full)) continue;
    for (const file of readdirSync(full).sort()) {
      if (!file.endsWith('.sql')) continue;
      sources.push({
        path: `${group}/${file}`,
        text: normalise(readFileSync(path.join(full, file), 'utf8')),
      });
    }
  }
  return sources;
}

function normalise(text: string): string {
  return `${text.replace(/\r\n/g, '\n').trimEnd()}\n`;
}

const BEGIN = '-- ledger:source ';
const END = '-- ledger:end ';
const REMOVED = '-- ledger:removed ';

/** What one migration file says about the sources. */
export interface FrozenSources {
  installed: Map<string, string>;
  removed: Set<string>;
}

/**
 * The source blocks of a migration's SQL. A block that does not end, or ends under another
 * name, is an error: a hand edit broke it, and guessing would compare the wrong text.
 */
export function frozenSourcesOf(sql: string, file: string): FrozenSources {
  const installed = new Map<string, string>();
  const removed = new Set<string>();
  const lines = sql.replace(/\r\n/g, '\n').split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] ?? '';
    if (line.startsWith(REMOVED)) {
      removed.add(line.slice(REMOVED.length).trim());
      continue;
    }
    if (!line.startsWith(BEGIN)) continue;
    const name = line.slice(BEGIN.length).trim();
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length && !(lines[j] ?? '').startsWith(END); j++) body.push(lines[j] ?? '');
    if (j >= lines.length)
      throw new Error(`${file}: the block of ledger source ${name} has no "${END}${name}" line`);
    const ended = (lines[j] ?? '').slice(END.length).trim();
    if (ended !== name)
      throw new Error(`${file}: the block of ledger source ${name} ends as ${ended}`);
    installed.set(name, normalise(body.join('\n')));
    i = j;
  }
  return { installed, removed };
}

/** Each source's text as the latest migration that installs (or removes) it left it. */
export function latestFrozenSources(
  migrationsDir: string,
): Map<string, { migration: string; text: string | null }> {
  const latest = new Map<string, { migration: string; text: string | null }>();
  for (const migration of readJournalMigrations(migrationsDir)) {
    if (!existsSync(migration.file)) continue;
    const frozen = frozenSourcesOf(readFileSync(migration.file, 'utf8'), `${migration.name}.sql`);
    for (const [name, text] of frozen.installed)
      latest.set(name, { migration: migration.name, text });
    for (const name of frozen.removed) latest.set(name, { migration: migration.name, text: null });
  }
  return latest;
}

export interface SourceDrift {
  path: string;
  kind: 'not_installed' | 'changed' | 'removed';
  /** The migration that last installed it. */
  migration?: string;
  /** The first line that differs, 1-based, for `changed`. */
  line?: number;
}

/** Sources that differ from the latest migration that installs them. */
export function sourceDrift(sourcesDir: string, migrationsDir: string): SourceDrift[] {
  const latest = latestFrozenSources(migrationsDir);
  const drift: SourceDrift[] = [];
  const current = readLedgerSources(sourcesDir);
  for (const source of current) {
    const frozen = latest.get(source.path);
    if (!frozen || frozen.text === null) {
      drift.push({ path: source.path, kind: 'not_installed' });
    } else if (frozen.text !== source.text) {
      drift.push({
        path: source.path,
        kind: 'changed',
        migration: frozen.migration,
        line: firstDifferentLine(frozen.text, source.text),
      });
    }
  }
  const present = new Set(current.map((s) => s.path));
  for (const [name, frozen] of latest) {
    if (frozen.text !== null && !present.has(name))
      drift.push({ path: name, kind: 'removed', migration: frozen.migration });
  }
  return drift;
}

function firstDifferentLine(a: string, b: string): number {
  const x = a.split('\n');
  const y = b.split('\n');
  let i = 0;
  while (i < x.length && i < y.length && x[i] === y[i]) i++;
  return i + 1;
}

/**
 * The body of a migration that installs the sources that changed (and `privileges.sql`,
 * always), each between its marker lines, in install order. Removed sources get a marker and
 * a line saying what the author must write under it.
 */
export function ledgerMigrationSql(
  sourcesDir: string,
  migrationsDir: string,
): {
  sql: string;
  installed: string[];
  removed: string[];
} {
  const drift = sourceDrift(sourcesDir, migrationsDir);
  const changed = new Set(drift.filter((d) => d.kind !== 'removed').map((d) => d.path));
  const removed = drift.filter((d) => d.kind === 'removed').map((d) => d.path);
  const sources = readLedgerSources(sourcesDir).filter(
    (s) => changed.has(s.path) || s.path === ALWAYS_INSTALLED,
  );
  const blocks = sources.map((s) => `${BEGIN}${s.path}\n${s.text}${END}${s.path}`);
  const header = [
    '-- Written by `pnpm db:ledger` from packages/database/ledger/. Each block between',
    `-- "${BEGIN.trim()} <file>" and "${END.trim()} <file>" is that source file as it was when this`,
    '-- migration was written; db:check fails when a source differs from the latest migration',
    '-- that installs it. Change a rule in its source file and run `pnpm db:ledger <name>`; never',
    "-- edit a block here. SQL outside the blocks (a one-time data move, a DROP) is the author's.",
    ...removed.map(
      (name) =>
        `${REMOVED}${name}\n-- ${name} is no longer a source: write the statement that drops what it defined here.`,
    ),
  ].join('\n');
  return {
    sql: `${header}\n\n${blocks.join('\n--> statement-breakpoint\n')}\n`,
    installed: sources.map((s) => s.path),
    removed,
  };
}
