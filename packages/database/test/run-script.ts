import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const packageDir = fileURLToPath(new URL('..', import.meta.url));

export interface ScriptResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a TypeScript entry point of the package the way its pnpm script does (tsx). */
export function runScript(
  script: string,
  args: string[],
  options: { env?: Record<string, string | undefined>; cwd?: string } = {},
): Promise<ScriptResult> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of ['DATABASE_URL', 'CI', 'LOCAL_POSTGRES_PORT', 'LOCAL_POSTGRES_DIR'])
    delete env[name];
  for (const [name, value] of Object.entries(options.env ?? {})) {
    if (value === undefined) delete env[name];
    else env[name] = value;
  }
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', script, ...args],
      { cwd: options.cwd ?? packageDir, env, timeout: 60_000 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}
