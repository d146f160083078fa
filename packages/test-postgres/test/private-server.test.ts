import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { type PrivateTestPostgres, startPrivateTestPostgres, withSql } from '../src/index.js';

const migrate = (url: string) =>
  withSql(url, (sql) => sql`create table marker (id int primary key)`);

let pg: PrivateTestPostgres;
beforeAll(async () => {
  pg = await startPrivateTestPostgres({ migrate, prefix: 'bragdoc_private', log: () => {} });
});
afterAll(() => pg?.teardown());

describe('startPrivateTestPostgres()', () => {
  it("is an embedded server of its own, never the run's (nor TEST_DATABASE_URL's)", () => {
    expect(pg.server.provider).toBe('embedded');
    expect(pg.server.url).not.toBe(inject('testPostgres').serverUrl);
  });

  it('keeps committed rows across restart("immediate") and refuses connections while shut down', async () => {
    const database = await pg.createDatabase();
    await withSql(database.url, (sql) => sql`insert into marker values (1)`);
    await pg.control.restart('immediate');
    expect(
      await withSql(database.url, (sql) => sql<{ id: number }[]>`select id from marker`),
    ).toEqual([{ id: 1 }]);
    await pg.control.shutdown('fast');
    const refused = await withSql(database.url, (sql) => sql`select 1`).catch((e: unknown) => e);
    expect(refused).toMatchObject({ code: 'ECONNREFUSED' });
    await pg.control.start();
    expect(await withSql(database.url, (sql) => sql`select 1 as one`)).toEqual([{ one: 1 }]);
  });
});
