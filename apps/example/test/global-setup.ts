import { defaultMigrationsFolder, migrate } from '@bragdoc/database/migrate';
import { setupTestPostgres } from '@bragdoc/test-postgres';

export default setupTestPostgres({
  prefix: 'bragdoc_example',
  migrate: (url) => migrate(url),
  migrationsFolder: defaultMigrationsFolder,
});
