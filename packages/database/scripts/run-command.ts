import { DatabaseError } from '../src/errors.js';

/**
 * Runs a command's `run` and sets the exit code it returns; a thrown error exits 1. Our own
 * errors (and those `oneLine` names, such as a bad file or flag) print as one line prefixed
 * with the command's name; anything else keeps its stack.
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
      console.error(
        error instanceof Error && (error instanceof DatabaseError || oneLine(error))
          ? `${name}: ${error.message}`
          : error,
      );
      // A usage error says so with its own exit code (2); every other failure is 1.
      const code = (error as { exitCode?: unknown } | null)?.exitCode;
      process.exitCode = typeof code === 'number' ? code : 1;
    },
  );
}
