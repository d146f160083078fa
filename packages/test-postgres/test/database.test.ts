import postgres from 'postgres';
import { describe, expect, inject, it } from 'vitest';
import { createTestDatabase } from '../src/index.js';

async function withSql<T>(url: string, fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    return await fn(sql);
  } finally {
    await sql.end();
  }
}

const hasMarker = (url: string) =>
  withSql(url, async (sql) => {
    const [row] = await sql`select to_regclass('public.marker') is not null as present`;
    return row?.present as boolean;
  });

describe('createTestDatabase()', () => {
  it('returns a copy of the migrated template', async () => {
    const db = await createTestDatabase();
    try {
      expect(await hasMarker(db.url)).toBe(true);
    } finally {
      await db.close();
    }
  });

  it('returns an empty database when asked', async () => {
    const db = await createTestDatabase({ empty: true });
    try {
      expect(await hasMarker(db.url)).toBe(false);
    } finally {
      await db.close();
    }
  });

  it("gives two databases that do not see each other's rows", async () => {
    const [a, b] = await Promise.all([createTestDatabase(), createTestDatabase()]);
    try {
      await withSql(a.url, (sql) => sql`insert into marker (owner) values ('a')`);
      const rowsInB = await withSql(b.url, (sql) => sql`select * from marker`);
      expect(rowsInB).toHaveLength(0);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('drops the database on close()', async () => {
    const db = await createTestDatabase();
    await db.close();
    const { serverUrl } = inject('testPostgres');
    const left = await withSql(
      serverUrl,
      (sql) => sql`select 1 from pg_database where datname = ${db.name}`,
    );
    expect(left).toHaveLength(0);
  });

  it("names every database with the run's prefix, so teardown finds them all", async () => {
    const db = await createTestDatabase();
    await db.close();
    expect(db.name.startsWith(inject('testPostgres').runPrefix)).toBe(true);
  });
});
