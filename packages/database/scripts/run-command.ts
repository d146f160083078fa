import { DatabaseError } from '../src/errors.js';

// A password in a URL the error quotes (a malformed DATABASE_URL, a driver's message).
const URL_PASSWORD = /(\/\/[^:/@\s]+:)[^@\s]+@/g;

/** One line saying what went wrong: our own errors' messages, else the error and its cause. */
function oneLineOf(name: string, error: unknown): string {
  const message = (e: unknown) =>
    e instanceof Error ? e.message : typeof e === 'string' ? e : String(e);
  let text = message(error);
  // A driver error wrapped by drizzle ("Failed query: <sql> params: <values>") quotes the
  // query and its parameters (a customer's e-mail): its cause says what happened.
  const cause = (error as { cause?: unknown } | null)?.cause;
  if (!(error instanceof DatabaseError) && cause !== undefined) text = message(cause);
  const code =
    (error as { code?: unknown } | null)?.code ?? (cause as { code?: unknown } | null)?.code;
  const withCode =
    typeof code === 'string' && !(error instanceof DatabaseError) && !text.includes(code)
      ? `${text} (${code})`
      : text;
  return `${name}: ${withCode.replace(URL_PASSWORD, '$1***@').replace(/\s*\n\s*/g, ' ')}`;
}

/**
 * Runs a command's `run` and sets the exit code it returns. A thrown error prints as one line
 * prefixed with the command's name (with any password in a quoted URL hidden), exit 1 (2 for a
 * usage error). Our own errors (and those `oneLine` names) print their message; anything else
 * prints what it is and what caused it, and its stack only with DEBUG set.
 */
export function runCommand(
  name: string,
  run: () => Promise<number>,
  oneLine: (error: unknown) => boolean = () => false,
): void {
  run().then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      const ours = error instanceof Error && (error instanceof DatabaseError || oneLine(error));
      console.error(oneLineOf(name, error));
      if (!ours && process.env.DEBUG) console.error(error);
      // A usage error says so with its own exit code (2); every other failure is 1.
      const code = (error as { exitCode?: unknown } | null)?.exitCode;
      process.exitCode = typeof code === 'number' ? code : 1;
    },
  );
}
