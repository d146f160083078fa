import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { isPortFree } from '../src/index.js';
import { throwawayBase } from '../src/throwaway-dirs.js';

const script = fileURLToPath(new URL('./fixtures/start-server.ts', import.meta.url));
const clusterDirs = () =>
  readdirSync(throwawayBase()).filter((n) => n.startsWith('bragdoc-test-pg-'));

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
    const ours = clusterDirs().filter((d) => !before.has(d));
    expect(ours).toHaveLength(1);
    expect(await isPortFree(port)).toBe(false);

    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    child.kill('SIGINT');
    expect(await exited).toBe(130);
    expect(clusterDirs()).not.toContain(ours[0]);
    expect(await isPortFree(port)).toBe(true);
  });
});
