import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  enumValuesAddedBy,
  readMigrations,
  usesEnumValue,
  withoutBodiesAndComments,
} from '../src/migrate/migrations.js';
import { defaultMigrationsFolder } from '../src/migrate/migrator.js';
import { excludedMigrations, excludedRules } from './lint-exclusions.js';

/**
 * `pnpm db:lint`: squawk on every migration not excluded, plus what squawk cannot know:
 * an enum value added and used in one transaction, an edit to a migration file that is
 * already committed on the base branch, and `drizzle-kit push` in a package's scripts.
 */
const usage = `Usage: tsx scripts/lint.ts [--migrations DIR] [--root DIR] [--base REF]

  --migrations DIR   migrations folder (default: the package's drizzle/)
  --root DIR         repository whose package.json scripts are checked (default: this one)
  --base REF         git ref to compare committed migrations with (default: the merge base
                     with origin/main, else main)`;

interface Violation {
  file: string;
  line: number;
  rule: string;
  message: string;
}

const packageDir = fileURLToPath(new URL('..', import.meta.url));

function squawkBin(): string {
  const require = createRequire(import.meta.url);
  const manifest = require.resolve('squawk-cli/package.json');
  return path.join(path.dirname(manifest), 'js', 'bin', 'squawk');
}

interface SquawkFinding {
  file: string;
  line: number;
  level: string;
  message: string;
  help: string | null;
  rule_name: string;
}

/**
 * squawk on `files`. `inTransaction`: db:migrate runs each of them in one transaction, so
 * squawk may know that a table created earlier in the file is new and empty (an index or a
 * foreign key on it then locks nothing another session waits on for long).
 */
function squawk(files: string[], inTransaction: boolean): Violation[] {
  if (files.length === 0) return [];
  const result = spawnSync(
    process.execPath,
    [
      squawkBin(),
      '--reporter',
      'json',
      ...(inTransaction ? ['--assume-in-transaction'] : []),
      ...Object.keys(excludedRules).map((rule) => `--exclude=${rule}`),
      ...files,
    ],
    { encoding: 'utf8' },
  );
  let findings: SquawkFinding[];
  try {
    findings = JSON.parse(result.stdout || '[]') as SquawkFinding[];
  } catch {
    throw new Error(`squawk failed (exit ${result.status}): ${result.stderr || result.stdout}`);
  }
  return findings.map((f) => ({
    file: f.file,
    // squawk counts lines from 0.
    line: f.line + 1,
    rule: f.rule_name,
    message: f.help ? `${f.message} ${f.help}` : f.message,
  }));
}

function lineOf(text: string, index: number): number {
  return text.slice(0, index).split('\n').length;
}

/**
 * In one transaction PostgreSQL refuses a new enum value before the transaction commits.
 * Function bodies are not looked at: they are not run when they are created.
 */
function enumValueUsedInSameTransaction(folder: string): Violation[] {
  const violations: Violation[] = [];
  for (const migration of readMigrations(folder)) {
    if (migration.mode === 'no-transaction' || migration.name in excludedMigrations) continue;
    const text = readFileSync(migration.file, 'utf8');
    migration.statements.forEach((statement, i) => {
      for (const { type, value } of enumValuesAddedBy(statement)) {
        const later = migration.statements
          .slice(i + 1)
          .find((s) => usesEnumValue(withoutBodiesAndComments(s), value));
        if (!later) continue;
        const literal = `'${value.replaceAll("'", "''")}'`;
        const at = text.indexOf(literal, Math.max(0, text.indexOf(later)));
        violations.push({
          file: migration.file,
          line: lineOf(text, Math.max(0, at)),
          rule: 'enum-value-added-and-used',
          message:
            `${literal} is added to ${type} and used in the same migration, which runs in one ` +
            'transaction: PostgreSQL refuses it ("unsafe use of new value"). Move the use to a ' +
            'later migration; db:migrate commits the value first.',
        });
      }
    });
  }
  return violations;
}

function git(cwd: string, args: string[]): { ok: boolean; out: string } {
  const result = spawnSync('git', args, { cwd, encoding: 'utf8' });
  return { ok: result.status === 0, out: (result.stdout ?? '').trim() };
}

/** Migration files changed or deleted since the base: applied databases would refuse them. */
function editedCommittedMigrations(
  folder: string,
  baseRef: string | undefined,
  note: (line: string) => void,
): Violation[] {
  const top = git(folder, ['rev-parse', '--show-toplevel']);
  if (!top.ok) {
    note(`  (edited-migration check skipped: ${folder} is not in a git checkout)`);
    return [];
  }
  const refs = baseRef ? [baseRef] : ['origin/main', 'main'];
  const ref = refs.find(
    (r) => git(folder, ['rev-parse', '--verify', '--quiet', `${r}^{commit}`]).ok,
  );
  if (!ref) {
    note(
      `  (edited-migration check skipped: no ${refs.join(' or ')} in this clone; fetch it or pass --base REF)`,
    );
    return [];
  }
  const base = git(folder, ['merge-base', 'HEAD', ref]);
  if (!base.ok) {
    note(`  (edited-migration check skipped: HEAD and ${ref} share no history)`);
    return [];
  }
  // Against the working tree, so an uncommitted edit is caught too.
  const diff = git(folder, ['diff', '--name-status', '--no-renames', base.out, '--', '.']);
  const violations: Violation[] = [];
  for (const line of diff.out.split('\n').filter(Boolean)) {
    const [status, file] = line.split('\t');
    if (!file?.endsWith('.sql') || (status !== 'M' && status !== 'D')) continue;
    violations.push({
      file: path.join(top.out, file),
      line: 1,
      rule: 'edited-committed-migration',
      message:
        `${status === 'M' ? 'changed' : 'deleted'} since ${ref} (merge base ${base.out.slice(0, 12)}): ` +
        'databases that applied it refuse the new hash. Restore it and put the change in a new migration.',
    });
  }
  return violations;
}

/** `drizzle-kit push` creates tables without the ledger's triggers: never in a script. */
function pushInScripts(root: string): Violation[] {
  const manifests = [path.join(root, 'package.json')];
  for (const group of ['packages', 'apps']) {
    const dir = path.join(root, group);
    if (!existsSync(dir)) continue;
    for (const name of readdirSync(dir)) {
      const manifest = path.join(dir, name, 'package.json');
      if (existsSync(manifest)) manifests.push(manifest);
    }
  }
  const violations: Violation[] = [];
  for (const manifest of manifests) {
    if (!existsSync(manifest)) continue;
    const text = readFileSync(manifest, 'utf8');
    const scripts = (JSON.parse(text) as { scripts?: Record<string, string> }).scripts ?? {};
    for (const [name, command] of Object.entries(scripts)) {
      if (!/drizzle-kit\s+push\b/.test(command)) continue;
      violations.push({
        file: manifest,
        line: lineOf(text, text.indexOf(`"${name}"`)),
        rule: 'no-drizzle-kit-push',
        message:
          `script "${name}" runs drizzle-kit push, which creates tables without the ledger's ` +
          'triggers and functions. Use pnpm db:migrate.',
      });
    }
  }
  return violations;
}

function main(): number {
  const { values } = parseArgs({
    options: {
      migrations: { type: 'string', default: defaultMigrationsFolder },
      root: { type: 'string', default: path.resolve(packageDir, '..', '..') },
      base: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(usage);
    return 0;
  }
  const started = performance.now();
  const folder = path.resolve(values.migrations);
  const migrations = readMigrations(folder);
  const linted = migrations.filter((m) => !(m.name in excludedMigrations));
  const skipped = migrations.length - linted.length;
  const notes: string[] = [];
  const violations = [
    ...squawk(
      linted.filter((m) => m.mode !== 'no-transaction').map((m) => m.file),
      true,
    ),
    ...squawk(
      linted.filter((m) => m.mode === 'no-transaction').map((m) => m.file),
      false,
    ),
    ...enumValueUsedInSameTransaction(folder),
    ...editedCommittedMigrations(folder, values.base, (line) => notes.push(line)),
    ...pushInScripts(values.root),
  ];
  for (const v of violations) {
    const relative = path.relative(process.cwd(), v.file);
    const shown = relative.startsWith('..') ? v.file : relative;
    console.error(`✗ ${shown}:${v.line} ${v.rule}: ${v.message}`);
  }
  for (const note of notes) console.log(note);
  const summary =
    `${linted.length} migration${linted.length === 1 ? '' : 's'} linted with squawk ` +
    `(${skipped} excluded by name in scripts/lint-exclusions.ts) in ${Math.round(performance.now() - started)} ms`;
  if (violations.length > 0) {
    console.error(
      `✗ ${violations.length} problem${violations.length === 1 ? '' : 's'}; ${summary}. ` +
        'Fix each, or, for a migration already in main that must break a rule, add it to ' +
        'scripts/lint-exclusions.ts with its reason.',
    );
    return 1;
  }
  console.log(`✓ No problems: ${summary}.`);
  return 0;
}

try {
  process.exitCode = main();
} catch (error) {
  console.error(
    `✗ db:lint could not run: ${error instanceof Error ? error.message : String(error)}`,
  );
  process.exitCode = 1;
}
