import { setupTestPostgres } from '@bragdoc/test-postgres';
import { defaultMigrationsFolder, migrate } from '../src/migrate/index.js';

// Every test database is a copy of a template migrated by the package's own migrator;
// the template is keyed by the migrations folder, so editing a migration rebuilds it.
export default setupTestPostgres({
  migrate: (url) => migrate(url),
  migrationsFolder: defaultMigrationsFolder,
});
