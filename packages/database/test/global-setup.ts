import { setupTestPostgres } from '@bragdoc/test-postgres';
import { migrate } from '../src/migrate/index.js';

// Every test database is a copy of a template migrated by the package's own migrator.
export default setupTestPostgres({ migrate: (url) => migrate(url) });
