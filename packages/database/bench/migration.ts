import { migrate as drizzleMigrate } from 'drizzle-orm/postgres-js/migrator';
import { createDatabase } from '../src/client.js';
import { migrate } from '../src/migrate/index.js';
import { alternate, type Figure, figure, median, timed } from './stats.js';

/**
 * The package's migrator (advisory lock, checksums, one transaction, reporting) beside
 * drizzle's own migrate(), each on a fresh empty database, connection included, alternating.
 */
export async function measureMigration(
  freshDatabase: () => Promise<{ url: string; close: () => Promise<void> }>,
  runs: number,
): Promise<Figure> {
  const pkg: number[] = [];
  const baseline: number[] = [];
  const viaPackage = async () => {
    const target = await freshDatabase();
    pkg.push(await timed(() => migrate(target.url)));
    await target.close();
  };
  const viaDrizzle = async () => {
    const target = await freshDatabase();
    baseline.push(
      await timed(async () => {
        const handle = createDatabase(target.url, { max: 1 });
        await drizzleMigrate(handle.db, {
          migrationsFolder: new URL('../drizzle', import.meta.url).pathname,
        });
        await handle.close();
      }),
    );
    await target.close();
  };
  await alternate(runs, viaPackage, viaDrizzle);
  return figure('migrate', median(pkg), 'ms', median(baseline));
}
