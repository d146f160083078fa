import { readFileSync } from 'node:fs';
import { type JournalMigration, readJournalMigrations } from './journal.js';

export { type DrizzleJournal, readJournal } from './journal.js';

/**
 * How a migration runs:
 * - `transaction`: with the other pending migrations, all in one transaction (the default);
 * - `own-transaction`: in a transaction of its own, committed before the next migration
 *   runs: it adds an enum value that a later pending migration uses, and PostgreSQL
 *   refuses a new enum value before the transaction that added it commits;
 * - `no-transaction`: each statement on its own, outside any transaction block, after
 *   everything before it committed (CREATE INDEX CONCURRENTLY, VACUUM, ALTER SYSTEM…).
 */
export type TransactionMode = 'transaction' | 'own-transaction' | 'no-transaction';

/** The first-line marker a migration file uses to ask for `no-transaction` explicitly. */
export const NO_TRANSACTION_MARKER = '-- migrate: no-transaction';

export interface EnumValueAdded {
  type: string;
  value: string;
}

export interface MigrationFile extends JournalMigration {
  /** `transaction` or `no-transaction`; `own-transaction` is decided per run (planSteps). */
  mode: 'transaction' | 'no-transaction';
  /** Why the migration runs outside a transaction: the marker or the statement that needs it. */
  modeReason?: string;
  enumValuesAdded: EnumValueAdded[];
}

/** Leading `--` and block comments removed, so a statement's first keyword can be read. */
export function stripLeadingComments(statement: string): string {
  let rest = statement.trimStart();
  for (;;) {
    if (rest.startsWith('--')) {
      const end = rest.indexOf('\n');
      rest = end === -1 ? '' : rest.slice(end + 1).trimStart();
    } else if (rest.startsWith('/*')) {
      const end = rest.indexOf('*/');
      rest = end === -1 ? '' : rest.slice(end + 2).trimStart();
    } else {
      return rest;
    }
  }
}

// Statements PostgreSQL refuses inside a transaction block ("cannot run inside a
// transaction block"), by their leading keywords.
const NON_TRANSACTIONAL: [RegExp, string][] = [
  [/^create\s+(unique\s+)?index\s+concurrently\b/i, 'CREATE INDEX CONCURRENTLY'],
  [/^drop\s+index\s+concurrently\b/i, 'DROP INDEX CONCURRENTLY'],
  [/^reindex\b[^;]*\bconcurrently\b/i, 'REINDEX CONCURRENTLY'],
  [
    /^alter\s+table\b[^;]*\bdetach\s+partition\b[^;]*\bconcurrently\b/i,
    'DETACH PARTITION CONCURRENTLY',
  ],
  [/^alter\s+system\b/i, 'ALTER SYSTEM'],
  [/^vacuum\b/i, 'VACUUM'],
  [/^(create|drop)\s+database\b/i, 'CREATE/DROP DATABASE'],
  [/^(create|drop)\s+tablespace\b/i, 'CREATE/DROP TABLESPACE'],
];

/** The kind of statement that cannot run in a transaction block, if it is one. */
export function nonTransactionalKind(statement: string): string | undefined {
  const head = stripLeadingComments(statement);
  return NON_TRANSACTIONAL.find(([pattern]) => pattern.test(head))?.[1];
}

const ADD_VALUE =
  /alter\s+type\s+((?:"(?:[^"]|"")+"|[\w$]+)(?:\s*\.\s*(?:"(?:[^"]|"")+"|[\w$]+))?)\s+add\s+value\s+(?:if\s+not\s+exists\s+)?'((?:[^']|'')*)'/gi;

/** `ALTER TYPE … ADD VALUE '…'` of a statement: the type as written and the value. */
export function enumValuesAddedBy(statement: string): EnumValueAdded[] {
  return [...stripLeadingComments(statement).matchAll(ADD_VALUE)].map((m) => ({
    type: m[1] ?? '',
    value: (m[2] ?? '').replaceAll("''", "'"),
  }));
}

/**
 * SQL with its comments and dollar-quoted bodies (function and DO bodies) blanked out:
 * what runs when the statement runs, not when a function it defines is later called.
 */
export function withoutBodiesAndComments(sql: string): string {
  return sql
    .replace(/\$([A-Za-z_][A-Za-z0-9_]*)?\$[\s\S]*?\$\1\$/g, ' ')
    .replace(/\/\*[\s\S]*?\*\//g, ' ')
    .replace(/--[^\n]*/g, ' ');
}

const PLPGSQL_ROUTINE = /^create\s+(or\s+replace\s+)?(function|procedure)\b/i;

/**
 * The part of a statement that can use an enum value when the statement runs: all of it,
 * except the body of a PL/pgSQL function or procedure, which PostgreSQL stores without
 * evaluating (a new value in it is only read when the function is called, after the
 * migration that added it committed). A DO block runs its body, and a SQL-language
 * function's body is parsed when it is created: both keep theirs.
 */
export function enumUsingText(statement: string): string {
  const head = stripLeadingComments(statement);
  return PLPGSQL_ROUTINE.test(head) &&
    /\blanguage\s+plpgsql\b/i.test(withoutBodiesAndComments(head))
    ? withoutBodiesAndComments(head)
    : statement;
}

/** Whether SQL mentions an enum value as a string literal (a use, as far as text can tell). */
export function usesEnumValue(sql: string, value: string): boolean {
  return sql.includes(`'${value.replaceAll("'", "''")}'`);
}

function transactionMode(
  file: string,
  statements: string[],
): Pick<MigrationFile, 'mode' | 'modeReason'> {
  const firstLine = readFileSync(file, 'utf8').split('\n', 1)[0]?.trim() ?? '';
  if (firstLine.toLowerCase().replace(/\s+/g, ' ') === NO_TRANSACTION_MARKER) {
    return { mode: 'no-transaction', modeReason: `marked "${NO_TRANSACTION_MARKER}"` };
  }
  for (const statement of statements) {
    const kind = nonTransactionalKind(statement);
    if (kind) return { mode: 'no-transaction', modeReason: kind };
  }
  return { mode: 'transaction' };
}

/**
 * The folder's migrations (read by journal.ts, the one module that knows drizzle-kit's
 * layout), each with its transaction mode and the enum values it adds.
 */
export function readMigrations(migrationsFolder: string): MigrationFile[] {
  return readJournalMigrations(migrationsFolder).map((migration) => ({
    ...migration,
    ...transactionMode(migration.file, migration.statements),
    enumValuesAdded: migration.statements.flatMap(enumValuesAddedBy),
  }));
}
