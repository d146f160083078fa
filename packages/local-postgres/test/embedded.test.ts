import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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
