import postgres from 'postgres';
import { inject } from 'vitest';

/** A connection to the run's server, for tests of the harness's own mechanisms. */
export function serverConnection(): postgres.Sql {
  return postgres(inject('testPostgres').serverUrl, { max: 1, onnotice: () => {} });
}

export async function databaseNames(sql: postgres.Sql, prefix: string): Promise<string[]> {
  const rows = await sql<{ datname: string }[]>`
    select datname from pg_database where starts_with(datname, ${prefix}) order by datname`;
  return rows.map((r) => r.datname);
}
