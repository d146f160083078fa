import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startTestPostgres } from '@bragdoc/test-postgres';
import { type Catalog, readCatalog } from '../src/migrate/catalog.js';
import { truncateJournal } from '../src/migrate/journal.js';
import { migrate } from '../src/migrate/migrator.js';

/**
 * What the migrations (up to `upTo`, else all) build, read from a throwaway database of
 * the test harness: TEST_DATABASE_URL's server when set, else a container or an embedded
 * PostgreSQL 17. Nothing of it outlives the call.
 */
export async function referenceCatalog(
  migrationsFolder: string,
  options: { upTo?: string; log: (line: string) => void; env?: NodeJS.ProcessEnv },
): Promise<Catalog> {
  const started = performance.now();
  const scratch = mkdtempSync(path.join(tmpdir(), 'bragdoc-reference-'));
  try {
    const folder = path.join(scratch, 'migrations');
    cpSync(migrationsFolder, folder, { recursive: true });
    if (options.upTo) truncateJournal(folder, options.upTo);
    const pg = await startTestPostgres({
      migrate: (url) => migrate(url, { migrationsFolder: folder }),
      migrationsFolder: folder,
      prefix: 'bragdoc_reference',
      ...(options.env ? { env: options.env } : {}),
      log: options.log,
    });
    try {
      const database = await pg.createDatabase();
      try {
        const catalog = await readCatalog(database.url);
        options.log(
          `Built the migrations${options.upTo ? ` up to ${options.upTo}` : ''} in a throwaway database ` +
            `(${pg.server.provider}, PostgreSQL ${pg.server.version}) in ${Math.round(performance.now() - started)} ms.`,
        );
        return catalog;
      } finally {
        await database.close();
      }
    } finally {
      await pg.teardown();
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}
