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

const ISO =
  /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2}))?$/;

/**
 * A flag's ISO 8601 instant: a date (midnight UTC) or a date and time with its zone (Z or
 * ±hh:mm). Strict, so a typo is refused rather than read as another day: no trailing text, no
 * day past its month's end, no time without a zone (the machine's own zone is nobody's).
 */
export function isoInstant(name: string, value: string | undefined): Date | undefined {
  if (value === undefined) return undefined;
  const m = ISO.exec(value.trim());
  const refuse = () =>
    new UsageError(
      `--${name} must be an ISO 8601 date (2026-11-01) or a time with its zone (2026-11-01T12:00Z), got "${value}".`,
    );
  if (!m) throw refuse();
  const [, y, mo, d, h, mi] = m;
  if (h !== undefined && m[7] === undefined) throw refuse();
  const at = new Date(
    h === undefined ? `${y}-${mo}-${d}T00:00:00Z` : value.trim().replace(' ', 'T'),
  );
  // The date as written must be a real one: 2027-02-29 is not 2027-03-01.
  const real = new Date(Date.UTC(Number(y), Number(mo) - 1, Number(d)));
  if (
    Number.isNaN(+at) ||
    real.getUTCFullYear() !== Number(y) ||
    real.getUTCMonth() !== Number(mo) - 1 ||
    real.getUTCDate() !== Number(d) ||
    Number(h ?? 0) > 23 ||
    Number(mi ?? 0) > 59 ||
    Number(y) < 1
  )
    throw refuse();
  return at;
}
