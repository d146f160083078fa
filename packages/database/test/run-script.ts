import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const packageDir = fileURLToPath(new URL('..', import.meta.url));

export interface ScriptResult {
  code: number;
  stdout: string;
  stderr: string;
}

interface ScriptOptions {
  env?: Record<string, string | undefined>;
  cwd?: string;
}

/** This process's environment without the variables that pick a database, plus `extra`. */
function scriptEnv(extra: ScriptOptions['env'] = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of [
    'DATABASE_URL',
    'DATABASE_URL_UNPOOLED',
    'POSTGRES_URL_NON_POOLING',
    'CI',
    'LOCAL_POSTGRES_PORT',
    'LOCAL_POSTGRES_DIR',
  ])
    delete env[name];
  for (const [name, value] of Object.entries(extra)) {
    if (value === undefined) delete env[name];
    else env[name] = value;
  }
  return env;
}

/** Runs a TypeScript entry point of the package the way its pnpm script does (tsx). */
export function runScript(
  script: string,
  args: string[],
  options: ScriptOptions = {},
): Promise<ScriptResult> {
  const env = scriptEnv(options.env);
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

export interface RunningScript {
  child: ChildProcess;
  /** Everything it printed so far, stdout and stderr. */
  output: () => string;
  /** Resolves once its output contains `text`; rejects if it exits first. */
  printed: (text: string) => Promise<void>;
  exited: Promise<number | null>;
}

/** Starts a long-running entry point (db:dev) that a test stops itself. */
export function startScript(script: string, args: string[], options: ScriptOptions = {}) {
  const child = spawn(process.execPath, ['--import', 'tsx', script, ...args], {
    cwd: options.cwd ?? packageDir,
    env: scriptEnv(options.env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  const waiters = new Set<() => void>();
  const collect = (chunk: Buffer) => {
    output += chunk.toString('utf8');
    for (const check of waiters) check();
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  const printed = (text: string) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (!output.includes(text)) return;
        waiters.delete(check);
        resolve();
      };
      waiters.add(check);
      check();
      void exited.then((code) =>
        reject(new Error(`exited (${code}) before printing "${text}":\n${output}`)),
      );
    });
  return { child, output: () => output, printed, exited } satisfies RunningScript;
}
