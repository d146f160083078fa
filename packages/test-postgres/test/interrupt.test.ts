import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { isPortFree } from '../src/index.js';
import { throwawayBase } from '../src/throwaway-dirs.js';

const script = fileURLToPath(new URL('./fixtures/start-server.ts', import.meta.url));
const clusterDirs = () =>
  readdirSync(throwawayBase()).filter((n) => n.startsWith('bragdoc-test-pg-'));
/** The pid a cluster folder's owner.json names (other test files make folders meanwhile). */
const ownerOf = (dir: string): number | undefined => {
  try {
    const owner = readFileSync(path.join(throwawayBase(), dir, 'owner.json'), 'utf8');
    return (JSON.parse(owner) as { pid?: number }).pid;
  } catch {
    return undefined;
  }
};

describe('an interrupted run', () => {
  it('on SIGINT (Ctrl-C) stops its embedded server and removes its folder', async () => {
    const before = new Set(clusterDirs());
    const child = spawn(process.execPath, ['--import', 'tsx', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const url = await new Promise<string>((resolve, reject) => {
      child.stdout.on('data', (chunk: Buffer) =>
        resolve((JSON.parse(chunk.toString()) as { url: string }).url),
      );
      child.on('exit', (code) => reject(new Error(`the server script exited early (${code})`)));
    });
    const port = Number(new URL(url).port);
    const ours = clusterDirs().filter((d) => !before.has(d) && ownerOf(d) === child.pid);
    expect(ours).toHaveLength(1);
    expect(await isPortFree(port)).toBe(false);

    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    child.kill('SIGINT');
    expect(await exited).toBe(130);
    expect(clusterDirs()).not.toContain(ours[0]);
    expect(await isPortFree(port)).toBe(true);
  });
});
