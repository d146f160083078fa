import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { installedNativeDir, type OsUser, startEmbeddedPostgres } from '@bragdoc/local-postgres';
import postgres from 'postgres';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { localDataDir } from '../scripts/local-server.js';
import { migrate } from '../src/migrate/index.js';

const isRoot = process.getuid?.() === 0;
/** The postgres-user path exists only as root; elsewhere the skip says so. */
const rootOnly = (name: string, fn: () => Promise<void>) =>
  isRoot ? it(name, fn) : it.skip(`${name} [skipped: only root runs the server as postgres]`, fn);

let scratch: string;
beforeEach(() => {
  scratch = mkdtempSync(path.join(tmpdir(), 'bragdoc-local-server-test-'));
  chmodSync(scratch, 0o755);
});
afterEach(() => rmSync(scratch, { recursive: true, force: true }));

/** A private directory (0700, like /root or `mktemp -d`) with `name` inside it. */
function insidePrivateDir(name: string): string {
  const home = path.join(scratch, 'home');
  mkdirSync(home, { mode: 0o700 });
  chmodSync(home, 0o700);
  return path.join(home, name);
}

describe('the local embedded PostgreSQL as root, from a checkout under a 0700 directory', () => {
  rootOnly(
    'runs binaries the postgres user cannot reach from a copy it can, and migrates',
    async () => {
      const native = insidePrivateDir('native');
      // Hard links: the installed binaries, but behind a directory only root may enter.
      const copy = spawnSync('cp', ['-al', installedNativeDir(), native]);
      expect(copy.status, String(copy.stderr)).toBe(0);
      const server = await startEmbeddedPostgres({
        nativeDir: native,
        dataDir: path.join(scratch, 'data'),
        throwaway: true,
      });
      try {
        expect(server.nativeDir).not.toBe(native);
        const result = await migrate(server.url);
        expect(result.applied.map((m) => m.name)).toContain('0000_init');
        const sql = postgres(server.url, { max: 1, onnotice: () => {} });
        try {
          const [row] = await sql<{ owner: string }[]>`
          select pg_get_userbyid(datdba) as owner from pg_database where datname = 'postgres'`;
          expect(row?.owner).toBe('postgres');
        } finally {
          await sql.end();
        }
      } finally {
        await server.stop();
      }
    },
  );

  rootOnly(
    'refuses a data directory the postgres user cannot reach, in one line saying what to do',
    async () => {
      const error = await startEmbeddedPostgres({
        dataDir: insidePrivateDir('data'),
        throwaway: true,
      }).catch((e: unknown) => e);
      expect(error).toMatchObject({
        code: 'POSTGRES_UNREACHABLE',
        message: expect.stringMatching(
          /^PostgreSQL runs as the postgres user here \(it refuses to run as root\), who cannot enter \S+\/home, so it cannot reach the data directory \S+; choose a data directory outside it/,
        ),
      });
      expect((error as Error).message).not.toContain('\n');
    },
  );
});

describe('localDataDir()', () => {
  // Neither owner nor group of what the test creates, as `postgres` is for root's files.
  const stranger: OsUser = {
    name: 'postgres',
    uid: (process.getuid?.() ?? 0) + 4242,
    gid: (process.getgid?.() ?? 0) + 4242,
  };

  it("moves the data out of a checkout the server's user cannot enter, and says where", () => {
    const lines: string[] = [];
    const defaultDir = insidePrivateDir('repo/packages/database/.data/postgres17');
    const dir = localDataDir({}, (l) => lines.push(l), {
      defaultDir,
      serverUser: stranger,
      sharedBase: scratch,
    });
    expect(path.dirname(path.dirname(dir))).toBe(scratch);
    expect(dir).toMatch(/bragdoc-local-postgres-[0-9a-f]{12}\/postgres17$/);
    expect(lines).toEqual([
      `The postgres user, which runs PostgreSQL for root, cannot enter ${path.join(scratch, 'home')}: ` +
        `the local data lives in ${dir} instead (LOCAL_POSTGRES_DIR overrides).`,
    ]);
    // The same checkout finds the same data next time.
    expect(
      localDataDir({}, () => {}, { defaultDir, serverUser: stranger, sharedBase: scratch }),
    ).toBe(dir);
  });

  it('keeps the default when the server runs as this user, or the user can reach it', () => {
    const defaultDir = path.join(scratch, 'repo', '.data', 'postgres17');
    expect(localDataDir({}, () => {}, { defaultDir, serverUser: stranger })).toBe(defaultDir);
    if (!isRoot) expect(localDataDir({}, () => {}, { defaultDir })).toBe(defaultDir);
  });

  it('uses LOCAL_POSTGRES_DIR as given', () => {
    const chosen = insidePrivateDir('mine');
    expect(
      localDataDir({ LOCAL_POSTGRES_DIR: chosen }, () => {}, {
        defaultDir: chosen,
        serverUser: stranger,
        sharedBase: scratch,
      }),
    ).toBe(chosen);
  });
});
