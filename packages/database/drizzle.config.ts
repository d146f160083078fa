import { defineConfig } from 'drizzle-kit';
import { localDatabaseUrl } from './scripts/local-url.js';

// `db:studio` and drizzle-kit's introspection read DATABASE_URL; without it they use the
// local embedded server that `pnpm db:dev` keeps running.
export default defineConfig({
  dialect: 'postgresql',
  schema: './src/schema.ts',
  out: './drizzle',
  dbCredentials: {
    url:
      process.env.DATABASE_URL ??
      localDatabaseUrl(Number(process.env.LOCAL_POSTGRES_PORT) || undefined),
  },
  strict: true,
  verbose: true,
});
