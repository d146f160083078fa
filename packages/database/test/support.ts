import { createTestDatabase } from '@bragdoc/test-postgres';
import { createDatabase } from '../src/client.js';

/** A migrated database of its own, with a drizzle client; `close()` ends both. */
export async function migratedDatabase() {
  const testDb = await createTestDatabase();
  const handle = createDatabase(testDb.url, { max: 4 });
  return {
    db: handle.db,
    url: testDb.url,
    close: async () => {
      await handle.close();
      await testDb.close();
    },
  };
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
