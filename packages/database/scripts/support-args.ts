import { type ParseArgsConfig, parseArgs } from 'node:util';

/** A command line the command cannot run: printed in one line, exit code 2. */
export class UsageError extends Error {
  readonly exitCode = 2;
}

/** A flag's positive whole number, or undefined when the flag was not given. */
export function wholeNumber(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < 1)
    throw new UsageError(`--${name} must be a positive whole number, got "${value}".`);
  return n;
}

/** A flag that must say something (support's reason, who acts): trimmed, never empty. */
export function requiredText(name: string, value: string | undefined, what: string): string {
  const text = value?.trim();
  if (!text) throw new UsageError(`--${name} is required: ${what}.`);
  return text;
}

/** DATABASE_URL, which every credits:* command works on; a UsageError when it is not set. */
export function databaseUrl(command: string): string {
  const url = process.env.DATABASE_URL;
  if (!url)
    throw new UsageError(
      `${command} works on the database in DATABASE_URL, and it is not set. For the local ` +
        'one, start it with `pnpm db:dev` and set DATABASE_URL to the URL it prints.',
    );
  return url;
}

/** node:util's parseArgs, whose refusals (an unknown flag, a missing value) are usage errors. */
export function parseCommandLine<T extends ParseArgsConfig>(
  config: T,
): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS'))
      throw new UsageError(`${(error as Error).message} (--help shows the usage)`);
    throw error;
  }
}
