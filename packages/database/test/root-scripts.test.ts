import { execFile } from 'node:child_process';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { packageDir } from './run-script.js';

const repoRoot = path.join(packageDir, '..', '..');
const run = promisify(execFile);

describe("the repository root's scripts", () => {
  it('pass their arguments through: `pnpm db:generate --name x` runs drizzle-kit with the name (here: nothing to generate, nothing written)', async () => {
    const migrations = () => readdirSync(path.join(packageDir, 'drizzle')).sort();
    const before = migrations();
    const { stdout } = await run('pnpm', ['db:generate', '--name', 'probe'], {
      cwd: repoRoot,
      env: { ...process.env, DATABASE_URL: undefined },
    });
    expect(stdout).toContain('drizzle-kit generate --name probe');
    expect(stdout).toMatch(/No schema changes/);
    expect(migrations()).toEqual(before);
  }, 60_000);
});
