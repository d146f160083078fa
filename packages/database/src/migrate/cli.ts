import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { DatabaseError } from '../errors.js';
import { drizzleKitBin } from './drizzle-kit-bin.js';
import { MigrationFailedError } from './errors.js';
import { resolveMigrationTarget } from './local-server.js';
import { defaultMigrationsFolder, getMigrationStatus, migrate } from './migrator.js';
import { redactUrl } from './redact.js';

const usage = `Usage: tsx src/migrate/cli.ts <command> [--migrations DIR] [--lock-timeout MS]

Commands:
  migrate   apply pending migrations
  status    list applied, pending and changed migrations
  dev       migrate the local embedded PostgreSQL and keep it running (Ctrl-C stops it)
  studio    open drizzle-kit studio on the same database

Database: DATABASE_URL; when unset and CI is not set, a local embedded PostgreSQL.`;

const log = (line: string) => console.log(line);

async function run(): Promise<number> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      migrations: { type: 'string', default: defaultMigrationsFolder },
      'lock-timeout': { type: 'string', default: '60000' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const command = positionals[0];
  if (values.help || !command || !['migrate', 'status', 'dev', 'studio'].includes(command)) {
    console.log(usage);
    return values.help ? 0 : 2;
  }
  const lockTimeoutMs = Number(values['lock-timeout']);
  if (!Number.isFinite(lockTimeoutMs) || lockTimeoutMs <= 0) {
    console.error(
      `--lock-timeout must be a positive number of milliseconds, got "${values['lock-timeout']}".`,
    );
    return 2;
  }

  const target = await resolveMigrationTarget(process.env, log);
  log(`Database: ${redactUrl(target.url)} (${target.source})`);
  try {
    if (command === 'status') {
      const status = await getMigrationStatus(target.url, { migrationsFolder: values.migrations });
      for (const m of status.migrations) log(`  ${m.state.padEnd(8)} ${m.name}`);
      for (const key of status.unknownApplied)
        log(`  unknown  created_at=${key} (not in this folder)`);
      const count = (state: string) => status.migrations.filter((m) => m.state === state).length;
      log(
        `${count('applied')} applied, ${count('pending')} pending, ${count('changed')} changed, ` +
          `${status.unknownApplied.length} unknown.`,
      );
      return count('changed') + status.unknownApplied.length > 0 ? 1 : 0;
    }

    await migrate(target.url, { migrationsFolder: values.migrations, lockTimeoutMs, log });
    if (command === 'migrate') return 0;

    if (command === 'studio') {
      const child = spawn(process.execPath, [drizzleKitBin, 'studio'], {
        stdio: 'inherit',
        env: { ...process.env, DATABASE_URL: target.url },
      });
      return await new Promise<number>((resolve) => child.on('exit', (code) => resolve(code ?? 1)));
    }

    log(`Local PostgreSQL is running: DATABASE_URL=${redactUrl(target.url)}`);
    log('Press Ctrl-C to stop it.');
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    return 0;
  } finally {
    await target.stop();
  }
}

// Exit explicitly: a clean event loop is not guaranteed while a child server winds down.
run().then(
  (code) => process.exit(code),
  (error: unknown) => {
    if (error instanceof MigrationFailedError) {
      console.error(`✗ ${error.message}`);
      console.error(`  Failing statement:\n${error.statement.replace(/^/gm, '    ')}`);
    } else if (error instanceof DatabaseError) {
      console.error(`✗ ${error.message} [${error.code}]`);
    } else {
      console.error(`✗ ${error instanceof Error ? error.message : String(error)}`);
    }
    process.exit(1);
  },
);
