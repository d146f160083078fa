import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { LocalPostgresError } from '@bragdoc/local-postgres';
import { DatabaseError } from '../src/errors.js';
import { adopt } from '../src/migrate/adopt.js';
import { baseline } from '../src/migrate/baseline.js';
import {
  BaselineRefusedError,
  connectionLost,
  MigrationFailedError,
  NonTransactionalMigrationFailedError,
} from '../src/migrate/errors.js';
import { defaultMigrationsFolder, getMigrationStatus, migrate } from '../src/migrate/migrator.js';
import { redactUrl } from '../src/migrate/redact.js';
import { drizzleKitBin } from './drizzle-kit-bin.js';
import {
  type DatabaseTarget,
  databaseUrlFromEnv,
  localServer,
  resolveDatabaseTarget,
} from './local-server.js';
import { referenceCatalog } from './reference-schema.js';

const usage = `Usage: tsx scripts/cli.ts <command> [options]

Commands:
  migrate   apply pending migrations
  status    list applied, pending and changed migrations
  dev       start the local embedded PostgreSQL, migrate it and keep it running (Ctrl-C
            stops it); refuses to run when DATABASE_URL is set
  baseline  adopt a database built without db:migrate (drizzle-kit push, another tool):
            when its schema equals what the migrations up to --to build (checked in a
            throwaway database), record them as applied
  adopt     take over a live database built the seed plan's way (nullable counters on
            "User", a seven-column "CreditTransaction" log), DATABASE_URL only: brings it to
            migration 0001's shape and records 0000 and 0001; then run migrate, which turns
            the log into the trail (docs/ADOPTING.md)
  studio    open drizzle-kit studio on the same database as migrate; migrates the local
            embedded PostgreSQL first, never DATABASE_URL unless --migrate is given

Options:
  --migrations DIR     migrations folder (default: the package's drizzle/)
  --lock-timeout MS    how long migrate waits for another migrator (default 60000)
  --statement-lock-timeout MS
                       lock_timeout of each migration statement (default 5000; 0: none)
  --statement-timeout MS
                       statement_timeout of each migration statement (default 600000; 0: none)
  --lock-retries N     retries of a migration whose statement hit the lock timeout, with
                       a doubling backoff from 1 s (default 3)
  --to NAME            baseline: the last migration the database has (default: the last)
  --log-time-zone TZ   adopt: the zone the log's timestamp-without-time-zone values are in
                       (default UTC)
  --null-credits N     adopt: what a NULL free_credits becomes (default 10)
  --null-chat-messages N
                       adopt: what a NULL free_chat_messages becomes (default 20)
  --exit-code          status: exit 1 also when a migration is pending
  --json               status: print one JSON document (counts, each migration's state)
  --migrate            studio: apply pending migrations to DATABASE_URL first
  --prepare-only       studio: prepare the database and print the plan, but do not open studio

Database: the first of DATABASE_URL_UNPOOLED, POSTGRES_URL_NON_POOLING (direct connections,
as Neon and Vercel set them) and DATABASE_URL that is set; when none is and CI is not set, a
local embedded PostgreSQL.`;

const log = (line: string) => console.log(line);

interface Options {
  migrationsFolder: string;
  to: string | undefined;
  exitCode: boolean;
  json: boolean;
  lockTimeoutMs: number;
  statementLockTimeoutMs: number;
  statementTimeoutMs: number;
  lockRetries: number;
  migrateDatabaseUrl: boolean;
  prepareOnly: boolean;
  logTimeZone: string;
  nullCredits: number;
  nullChatMessages: number;
}

/** Runs `work` on the resolved database, stopping the local server if this run started it. */
async function onTarget(
  target: DatabaseTarget,
  work: (target: DatabaseTarget) => Promise<number>,
  say: (line: string) => void = log,
): Promise<number> {
  say(`Database: ${redactUrl(target.url)} (${target.source})`);
  try {
    return await work(target);
  } finally {
    await target.stop();
  }
}

async function migrateCommand(options: Options): Promise<number> {
  return onTarget(await resolveDatabaseTarget(process.env, log), async ({ url }) => {
    await migrate(url, { ...options, log });
    return 0;
  });
}

/**
 * Lists each migration's state. Exits 1 when one changed or the database has unknown ones;
 * with --exit-code also when one is pending (a deploy gate: "is this database up to date?").
 * --json prints one JSON document on stdout and everything else on stderr.
 */
async function statusCommand(options: Options): Promise<number> {
  const say = options.json ? (line: string) => console.error(line) : log;
  return onTarget(
    await resolveDatabaseTarget(process.env, say),
    async ({ url, source }) => {
      const status = await getMigrationStatus(url, options);
      const count = (state: string) => status.migrations.filter((m) => m.state === state).length;
      const counts = {
        applied: count('applied'),
        pending: count('pending'),
        changed: count('changed'),
        unknown: status.unknownApplied.length,
      };
      const failing =
        counts.changed + counts.unknown > 0 || (options.exitCode && counts.pending > 0);
      if (options.json) {
        console.log(
          JSON.stringify(
            {
              database: redactUrl(url),
              source,
              ok: !failing,
              counts,
              migrations: status.migrations.map(({ name, state }) => ({ name, state })),
              unknownApplied: status.unknownApplied,
            },
            null,
            2,
          ),
        );
      } else {
        for (const m of status.migrations) log(`  ${m.state.padEnd(8)} ${m.name}`);
        for (const key of status.unknownApplied)
          log(`  unknown  created_at=${key} (not in this folder)`);
        log(
          `${counts.applied} applied, ${counts.pending} pending, ${counts.changed} changed, ` +
            `${counts.unknown} unknown.`,
        );
      }
      if (counts.changed > 0)
        console.error(
          '✗ An applied migration was edited since: restore its file and put the change in a new migration.',
        );
      if (counts.unknown > 0)
        console.error(
          '✗ The database has migrations this folder does not know: migrate from the checkout that created them.',
        );
      if (options.exitCode && counts.pending > 0)
        console.error(
          `✗ ${counts.pending} migration${counts.pending === 1 ? ' is' : 's are'} pending (--exit-code): run pnpm db:migrate.`,
        );
      return failing ? 1 : 0;
    },
    say,
  );
}

/** Serves the local embedded server only: DATABASE_URL would make "running" a lie. */
async function devCommand(options: Options): Promise<number> {
  const configured = databaseUrlFromEnv(process.env);
  if (configured) {
    console.error(
      `✗ db:dev serves only the local embedded PostgreSQL, but ${configured.variable} is set (${redactUrl(configured.url)}); ` +
        'unset it to run the local server, or use pnpm db:migrate / db:studio on that database.',
    );
    return 1;
  }
  return onTarget(await localServer(process.env, log), async ({ url }) => {
    log('Migrating the local embedded PostgreSQL (db:dev keeps it up to date):');
    await migrate(url, { ...options, log });
    log(`Local PostgreSQL is running: DATABASE_URL=${redactUrl(url)}`);
    log('Press Ctrl-C to stop it.');
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    return 0;
  });
}

/**
 * Studio reads and edits a database; it must not change its schema behind the user's
 * back. The local embedded server is the developer's own and is migrated (said so);
 * DATABASE_URL may be production, and is migrated only with --migrate.
 */
async function studioCommand(options: Options): Promise<number> {
  return onTarget(await resolveDatabaseTarget(process.env, log), async (target) => {
    if (target.source.startsWith('local server')) {
      log('Migrating the local embedded PostgreSQL before opening studio:');
      await migrate(target.url, { ...options, log });
    } else if (options.migrateDatabaseUrl) {
      log(`Migrating ${target.source} before opening studio (--migrate):`);
      await migrate(target.url, { ...options, log });
    } else {
      const status = await getMigrationStatus(target.url, options);
      const pending = status.migrations.filter((m) => m.state === 'pending').length;
      log(
        `Not migrating ${target.source} (${pending} pending migration${pending === 1 ? '' : 's'}); ` +
          'pass --migrate to apply them first.',
      );
    }
    if (options.prepareOnly) {
      log('--prepare-only: not opening studio.');
      return 0;
    }
    const child = spawn(process.execPath, [drizzleKitBin, 'studio'], {
      stdio: 'inherit',
      env: { ...process.env, DATABASE_URL: target.url },
    });
    return await new Promise<number>((resolve) => child.on('exit', (code) => resolve(code ?? 1)));
  });
}

/**
 * Adopts a database built without db:migrate: builds the migrations up to --to in a
 * throwaway database, compares, and records them as applied only when the schemas match.
 */
async function baselineCommand(options: Options): Promise<number> {
  return onTarget(await resolveDatabaseTarget(process.env, log), async ({ url }) => {
    const expected = await referenceCatalog(options.migrationsFolder, {
      ...(options.to ? { upTo: options.to } : {}),
      log,
    });
    await baseline(url, {
      migrationsFolder: options.migrationsFolder,
      ...(options.to ? { to: options.to } : {}),
      expected,
      log,
    });
    return 0;
  });
}

/**
 * Adopts a live database in place; only the one DATABASE_URL names: there is nothing to
 * adopt in the local embedded server, and guessing a database to convert is not an option.
 */
async function adoptCommand(options: Options): Promise<number> {
  const configured = databaseUrlFromEnv(process.env);
  if (!configured) {
    console.error(
      '✗ db:adopt converts the database DATABASE_URL names, and it is not set: set it to the ' +
        "app's database (its owner's direct URL) and run again. Nothing was changed.",
    );
    return 2;
  }
  return onTarget(
    { url: configured.url, source: configured.variable, stop: async () => {} },
    async ({ url }) => {
      await adopt(url, {
        migrationsFolder: options.migrationsFolder,
        logTimeZone: options.logTimeZone,
        nullCredits: options.nullCredits,
        nullChatMessages: options.nullChatMessages,
        lockTimeoutMs: options.statementLockTimeoutMs || 5000,
        log,
      });
      return 0;
    },
  );
}

const commands: Record<string, (options: Options) => Promise<number>> = {
  adopt: adoptCommand,
  baseline: baselineCommand,
  migrate: migrateCommand,
  status: statusCommand,
  dev: devCommand,
  studio: studioCommand,
};

async function main(): Promise<number> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      migrations: { type: 'string', default: defaultMigrationsFolder },
      'lock-timeout': { type: 'string', default: '60000' },
      'statement-lock-timeout': { type: 'string', default: '5000' },
      'statement-timeout': { type: 'string', default: '600000' },
      'lock-retries': { type: 'string', default: '3' },
      migrate: { type: 'boolean', default: false },
      'prepare-only': { type: 'boolean', default: false },
      'exit-code': { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      to: { type: 'string' },
      'log-time-zone': { type: 'string', default: 'UTC' },
      'null-credits': { type: 'string', default: '10' },
      'null-chat-messages': { type: 'string', default: '20' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const command = commands[positionals[0] ?? ''];
  if (values.help || !command) {
    console.log(usage);
    return values.help ? 0 : 2;
  }
  const numbers: Record<string, number> = {};
  for (const [flag, min] of [
    ['lock-timeout', 1],
    ['statement-lock-timeout', 0],
    ['statement-timeout', 0],
    ['lock-retries', 0],
    ['null-credits', 0],
    ['null-chat-messages', 0],
  ] as const) {
    const value = Number(values[flag]);
    if (!Number.isInteger(value) || value < min) {
      console.error(
        `✗ --${flag} must be a whole number ${min === 0 ? '≥ 0' : '> 0'}, got "${values[flag]}".`,
      );
      return 2;
    }
    numbers[flag] = value;
  }
  return command({
    migrationsFolder: values.migrations,
    to: values.to,
    exitCode: values['exit-code'],
    json: values.json,
    lockTimeoutMs: numbers['lock-timeout'] ?? 60_000,
    statementLockTimeoutMs: numbers['statement-lock-timeout'] ?? 5000,
    statementTimeoutMs: numbers['statement-timeout'] ?? 600_000,
    lockRetries: numbers['lock-retries'] ?? 3,
    migrateDatabaseUrl: values.migrate,
    prepareOnly: values['prepare-only'],
    logTimeZone: values['log-time-zone'],
    nullCredits: numbers['null-credits'] ?? 10,
    nullChatMessages: numbers['null-chat-messages'] ?? 20,
  });
}

// A run whose work never settled (a promise left pending) must not look like a success:
// the event loop drains, and Node would exit 0 having said nothing.
process.exitCode = 1;
process.once('beforeExit', () => {
  console.error(
    '✗ The command stopped before it finished (its connection to the database was lost?); run it again.',
  );
});
// Exit explicitly: a clean event loop is not guaranteed while a child server winds down.
main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    if (
      error instanceof MigrationFailedError ||
      error instanceof NonTransactionalMigrationFailedError
    ) {
      console.error(`✗ ${error.message}`);
      console.error(`  Failing statement:\n${error.statement.replace(/^/gm, '    ')}`);
    } else if (error instanceof BaselineRefusedError) {
      for (const line of error.differences) console.error(`  ${line}`);
      console.error(`✗ ${error.message} [${error.code}]`);
    } else if (connectionLost((error as { code?: string }).code, error)) {
      console.error(
        `✗ The connection to the database was lost before the command finished (${(error as Error).message}): ` +
          'the server rolled back what it had not committed (pnpm db:status shows what is applied); run it again.',
      );
    } else if (error instanceof DatabaseError || error instanceof LocalPostgresError) {
      console.error(`✗ ${error.message} [${error.code}]`);
    } else {
      console.error(`✗ ${error instanceof Error ? error.message : String(error)}`);
    }
    process.exit(1);
  },
);
