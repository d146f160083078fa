import postgres from 'postgres';
import { setupTestPostgres } from '../src/index.js';

// The harness's own tests use a one-table "migration", so they do not depend on any schema.
export default setupTestPostgres({
  prefix: 'bragdoc_harness',
  migrate: async (url) => {
    const sql = postgres(url, { max: 1, onnotice: () => {} });
    await sql`create table marker (id serial primary key, owner text not null)`;
    await sql.end();
  },
});
