import { readFileSync } from 'node:fs';
import type { CatalogDifference } from '../src/migrate/catalog.js';

/**
 * `db:check --against <url> --app-objects <file>`: what the app added to its live database
 * outside the package's migrations (a table of its own, a column on "User", an index), which
 * db:check would otherwise report as drift. The file lists catalog keys, one per line, as
 * db:check prints them after `+ ` (`table public."StripeEvent"`, `column public."User".plan`,
 * `index public.user_plan_idx`); `#` starts a comment. A declared table covers its columns,
 * constraints, indexes and triggers. `enum public.feature_type` accepts values appended after
 * the migrations' own. Only additions can be declared, with one exception: on "User", a column,
 * constraint or index the ledger does not rely on (`email`, `name`, `created_at`, `updated_at`,
 * `user_email_unique`) may also be declared the app's when it is defined differently or
 * missing, as an adopted database's own "User" has them (db:adopt leaves them as they were).
 * Nothing the ledger relies on can be declared the app's.
 */

export interface AppObjectsResult {
  /** Differences the declarations account for: the app's own objects. */
  declared: CatalogDifference[];
  /** Every other difference: drift. */
  drift: CatalogDifference[];
  /** Declarations refused, each with why. */
  refused: string[];
  /** Declarations that match nothing in the live database. */
  unused: string[];
}

/** The declarations of a file: one key per line, without comments and blank lines. */
export function readAppObjects(file: string): string[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .map((line) => line.replace(/#.*$/, '').trim())
    .filter((line) => line !== '');
}

const LEDGER_TABLES = ['public."CreditTransaction"', 'public."CreditHold"'];
const LEDGER_USER_COLUMNS = [
  'id',
  'free_credits',
  'free_chat_messages',
  'ledger_seq',
  'ledger_hash',
];

/** Why the app may not declare `key` its own, or undefined when it may. */
function ledgerReason(key: string): string | undefined {
  if (/credit_ledger\./.test(key)) return "the schema credit_ledger is the ledger's";
  if (LEDGER_TABLES.some((t) => key.includes(t)))
    return 'the trail and "CreditHold" are the ledger\'s, whole';
  if (/^trigger .* on public\."User"$/.test(key))
    return 'a trigger on "User" runs inside every ledger write';
  if (LEDGER_USER_COLUMNS.some((c) => key === `column public."User".${c}`))
    return 'the ledger keeps this column of "User"';
  if (key === 'enum public.operation_type')
    return "every operation's meaning is the ledger's (credit_balance_effect)";
  return undefined;
}

/** The table a key belongs to, for the kinds a declared table covers. */
function tableOf(d: CatalogDifference): string | undefined {
  const column = /^column ((?:[^."]+|"[^"]*")\.(?:[^."]+|"[^"]*"))\./.exec(d.key);
  if (column) return column[1];
  const on = /^(?:constraint|trigger) .* on (.+)$/.exec(d.key);
  if (on) return on[1];
  if (d.key.startsWith('index ')) return / ON (?:ONLY )?(\S+) USING /.exec(d.actual ?? '')?.[1];
  return undefined;
}

/** A column, constraint or index of "User": an adopted app's own definition may differ. */
function onUser(d: CatalogDifference): boolean {
  if (d.key.startsWith('column public."User".')) return true;
  if (/^constraint .* on public\."User"$/.test(d.key)) return true;
  return (
    d.key.startsWith('index ') &&
    / ON (?:ONLY )?public\."User" USING /.test(d.expected ?? d.actual ?? '')
  );
}

export function splitAppObjects(
  differences: CatalogDifference[],
  declarations: string[],
): AppObjectsResult {
  const refused: string[] = [];
  const keys = new Set<string>();
  for (const key of declarations) {
    const reason = ledgerReason(key);
    if (reason) refused.push(`${key}: ${reason}`);
    else keys.add(key);
  }
  const tables = new Set(
    [...keys].filter((k) => k.startsWith('table ')).map((k) => k.slice('table '.length)),
  );
  const used = new Set<string>();
  const declared: CatalogDifference[] = [];
  const drift: CatalogDifference[] = [];
  for (const d of differences) {
    const table = tableOf(d);
    let match: string | undefined;
    if (d.kind === 'extra' && !ledgerReason(d.key)) {
      if (keys.has(d.key)) match = d.key;
      else if (table && tables.has(table)) match = `table ${table}`;
    } else if (d.kind !== 'extra' && keys.has(d.key) && onUser(d) && !ledgerReason(d.key)) {
      match = d.key;
    } else if (
      d.kind === 'changed' &&
      d.key.startsWith('enum ') &&
      d.key !== 'enum public.operation_type' &&
      keys.has(d.key)
    ) {
      // Values appended after the migrations' own, in their order, are the app's. An enum is
      // recorded as `('a', 'b')`, so the live list then starts with the expected one's.
      const expected = d.expected ?? '';
      if ((d.actual ?? '').startsWith(`${expected.slice(0, -1)}, `)) match = d.key;
    }
    if (match) {
      used.add(match);
      declared.push(d);
    } else drift.push(d);
  }
  return { declared, drift, refused, unused: [...keys].filter((k) => !used.has(k)) };
}
