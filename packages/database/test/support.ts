import { useTestDatabase } from '@bragdoc/test-postgres';
import { createDatabase } from '../src/client.js';

/**
 * A migrated database of this file's own, with a drizzle client, dropped after the file
 * (kept, with its URL printed, when a test failed and TEST_POSTGRES_KEEP_FAILED is set).
 */
export function useMigratedDatabase() {
  return useTestDatabase({ connect: (url) => createDatabase(url, { max: 4 }) });
}

/** The SQLSTATE of a failed query (postgres.js errors carry it as `code`). */
export async function sqlStateOf(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
  } catch (error) {
    const cause = (error as { cause?: { code?: string } }).cause;
    return cause?.code ?? (error as { code?: string }).code;
  }
  return undefined;
}
