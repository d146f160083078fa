import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  findDebianPostgres,
  type ReplicaSource,
  startReplicatedPair,
  withSql,
} from '../src/index.js';

const debian = findDebianPostgres();
const sources: ReplicaSource[] = ['embedded', ...('missing' in debian ? [] : ['debian' as const])];
if ('missing' in debian) console.warn(`replication.test.ts: ${debian.missing}`);

describe.each(sources)('startReplicatedPair(%s)', (source) => {
  it('streams what the primary commits to a read-only standby, promotes it, and leaves nothing behind', async () => {
    const pair = await startReplicatedPair(source);
    const folders = [pair.primary.dataDir, pair.replica.dataDir].map((d) => path.dirname(d));
    try {
      expect(pair.primaryUrl).not.toBe(pair.replicaUrl);
      await withSql(pair.primaryUrl, (sql) => sql`create table marker (id int)`);
      await withSql(pair.primaryUrl, (sql) => sql`insert into marker values (1)`);
      await pair.caughtUp();
      expect(
        await withSql(
          pair.replicaUrl,
          (sql) => sql`select id, pg_is_in_recovery() as standby from marker`,
        ),
      ).toEqual([{ id: 1, standby: true }]);
      const refused = await withSql(
        pair.replicaUrl,
        (sql) => sql`insert into marker values (2)`,
      ).catch((e: unknown) => e);
      expect(refused).toMatchObject({ code: '25006' });
      await pair.failOver();
      await withSql(pair.replicaUrl, (sql) => sql`insert into marker values (2)`);
      expect(
        await withSql(
          pair.replicaUrl,
          (sql) => sql`select count(*)::int as n, pg_is_in_recovery() as standby from marker`,
        ),
      ).toEqual([{ n: 2, standby: false }]);
    } finally {
      await pair.stop();
    }
    for (const folder of folders) expect(existsSync(folder)).toBe(false);
  });
});
