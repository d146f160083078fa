import { type Catalog, compareCatalogs, describeDifference, readCatalog } from './catalog.js';
import { BaselineRefusedError } from './errors.js';
import { readMigrations } from './migrations.js';
import {
  compare,
  connect,
  defaultMigrationsFolder,
  disconnect,
  ensureBookkeeping,
  lockInTransaction,
  readApplied,
  record,
} from './migrator.js';
import { redactUrl } from './redact.js';

export interface BaselineOptions {
  migrationsFolder?: string;
  /** The last migration the database already has; default: the folder's last. */
  to?: string;
  /** What the migrations up to `to` build (see db:baseline, which builds it in a throwaway database). */
  expected: Catalog;
  log?: (line: string) => void;
}

export interface BaselineResult {
  recorded: string[];
  pending: number;
}

/**
 * Adopts a database whose schema was built without this migrator (drizzle-kit push,
 * another tool): when its schema equals `expected`, records the migrations up to `to` as
 * applied, so `migrate()` applies only the later ones. Refuses, recording nothing, when
 * the schema differs, when the database already has migration rows, or when it has rows
 * this folder does not know.
 */
export async function baseline(url: string, options: BaselineOptions): Promise<BaselineResult> {
  const log = options.log ?? (() => {});
  const files = readMigrations(options.migrationsFolder ?? defaultMigrationsFolder);
  const to = options.to ?? files.at(-1)?.name;
  const end = files.findIndex((f) => f.name === to);
  if (end === -1) {
    throw new BaselineRefusedError(
      `--to ${to} is not a migration of this folder (${files.map((f) => f.name).join(', ')}).`,
    );
  }
  const adopted = files.slice(0, end + 1);
  const target = redactUrl(url);

  const differences = compareCatalogs(options.expected, await readCatalog(url));
  if (differences.length > 0) {
    throw new BaselineRefusedError(
      `${target} does not match what the migrations up to ${to} build (${differences.length} ` +
        'difference(s), listed above); make it match, or pick the --to migration it does match.',
      differences.map(describeDifference),
    );
  }

  const sql = connect(url);
  try {
    await sql.begin(async (tx) => {
      await lockInTransaction(tx, 60_000, log);
      const rows = await readApplied(tx);
      const status = compare(files, rows);
      if (status.unknownApplied.length > 0) {
        throw new BaselineRefusedError(
          `${target} has ${status.unknownApplied.length} migration row(s) this folder does not know ` +
            `(drizzle.__drizzle_migrations, created_at ${status.unknownApplied.join(', ')}), another ` +
            "tool's or another checkout's: if they are another tool's, delete them " +
            `(delete from drizzle.__drizzle_migrations where created_at in (${status.unknownApplied.join(', ')})) and run again.`,
        );
      }
      if (rows.length > 0) {
        throw new BaselineRefusedError(
          `${target} already records ${rows.length} applied migration(s): it is managed by db:migrate ` +
            'already (see pnpm db:status).',
        );
      }
      await ensureBookkeeping(tx);
      for (const migration of adopted) await record(tx, migration);
    });
  } finally {
    await disconnect(sql);
  }
  const pending = files.length - adopted.length;
  log(
    `Recorded ${adopted.length} migration(s) as applied to ${target} (${adopted[0]?.name} … ${to}), ` +
      `its schema matching what they build; ${pending} pending for pnpm db:migrate.`,
  );
  return { recorded: adopted.map((m) => m.name), pending };
}
