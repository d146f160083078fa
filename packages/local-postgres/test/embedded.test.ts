import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startEmbeddedPostgres } from '../src/index.js';

let scratch: string;
beforeEach(() => {
  scratch = mkdtempSync(path.join(tmpdir(), 'bragdoc-embedded-test-'));
  chmodSync(scratch, 0o755);
});
afterEach(() => rmSync(scratch, { recursive: true, force: true }));

describe('startEmbeddedPostgres()', () => {
  it('turns binaries that cannot run into a typed error naming the spawn failure, not a crash', async () => {
    const native = path.join(scratch, 'native');
    mkdirSync(path.join(native, 'bin'), { recursive: true });
    writeFileSync(path.join(native, 'bin', 'initdb'), 'not a program', { mode: 0o644 });
    const error = await startEmbeddedPostgres({
      nativeDir: native,
      dataDir: path.join(scratch, 'data'),
      throwaway: true,
    }).catch((e: unknown) => e);
    expect(error).toMatchObject({
      name: 'LocalPostgresError',
      code: 'POSTGRES_START_FAILED',
      message: expect.stringMatching(
        /^Embedded PostgreSQL did not start \(data .*\): spawn .*initdb EACCES/,
      ),
    });
  });
});

describe('a data directory whose parents do not exist yet', () => {
  it('starts on the first run, creating its parents so the server user can reach them, whatever the umask', async () => {
    const dataDir = path.join(scratch, 'checkout', '.data', 'postgres17');
    const umask = process.umask(0o077);
    let server: Awaited<ReturnType<typeof startEmbeddedPostgres>> | undefined;
    try {
      server = await startEmbeddedPostgres({ dataDir, throwaway: true });
      expect(await accepts(server.port)).toBe(true);
      for (const dir of [path.join(scratch, 'checkout'), path.dirname(dataDir)])
        expect(statSync(dir).mode & 0o777).toBe(0o755);
    } finally {
      process.umask(umask);
      await server?.stop();
    }
  });
});

/** Whether a TCP connection to 127.0.0.1:port is accepted (a postmaster listens). */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

const postmasterPid = (dataDir: string) =>
  Number(readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);

describe('a started server can be shut down and started again', () => {
  it('refuses connections after shutdown() and serves the same port after start(); restart("immediate") replaces the postmaster', async () => {
    const server = await startEmbeddedPostgres({
      dataDir: path.join(scratch, 'data'),
      throwaway: true,
    });
    try {
      expect(await accepts(server.port)).toBe(true);
      const first = postmasterPid(server.dataDir);
      await server.shutdown('immediate');
      expect(await accepts(server.port)).toBe(false);
      await server.start();
      expect(await accepts(server.port)).toBe(true);
      const second = postmasterPid(server.dataDir);
      expect(second).not.toBe(first);
      await server.restart('immediate');
      expect(await accepts(server.port)).toBe(true);
      expect(postmasterPid(server.dataDir)).not.toBe(second);
    } finally {
      await server.stop();
    }
    expect(existsSync(server.dataDir)).toBe(false);
  });
});
