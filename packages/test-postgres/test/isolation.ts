import { setTimeout as sleep } from 'node:timers/promises';
import type postgres from 'postgres';

/**
 * Inserts rows in batches with pauses, so files running in parallel workers overlap,
 * then counts the rows by owner.
 */
export async function fillAndCount(
  sql: postgres.Sql,
  owner: string,
): Promise<Record<string, number>> {
  for (let batch = 0; batch < 5; batch++) {
    await sql`insert into marker (owner) select ${owner} from generate_series(1, 100)`;
    await sleep(20);
  }
  const rows = await sql<{ owner: string; n: number }[]>`
    select owner, count(*)::int as n from marker group by owner`;
  return Object.fromEntries(rows.map((r) => [r.owner, r.n]));
}
