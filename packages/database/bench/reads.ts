import type postgres from 'postgres';
import type { Database } from '../src/client.js';
import { encodeSeqCursor } from '../src/credits/cursor.js';
import { listCreditTransactions, listCreditTransactionsInRange } from '../src/credits/index.js';
import { type Figure, figure, interleave, percentile } from './stats.js';

export interface ReadTargets {
  heavyUser: string;
  /** A heavy user with no rows in the newer half of the table. */
  dormantUser: string;
  /** A user with the median number of rows. */
  typicalUser: string;
  /** The seq of the last row of page `deepPage` (1-based) of the heavy user's history. */
  deep: { seq: number };
  deepPage: number;
  window: { from: Date; to: Date };
}

const PAGE = 50;

/** A heavy user, a position deep in its history, and a one-hour window in the middle of the data. */
export async function readTargets(sql: postgres.Sql, deepPage: number): Promise<ReadTargets> {
  const [heavy] = await sql<{ id: string }[]>`select id from bench_user where n = 2`;
  const [dormant] = await sql<{ id: string }[]>`select id from bench_user where n = 1`;
  if (!heavy || !dormant) throw new Error('the trail is not seeded');
  const [typical] = await sql<{ id: string }[]>`
    select id from bench_user where n = (select max(n) from bench_user) / 2`;
  const [deep] = await sql<{ seq: string }[]>`
    select seq from "CreditTransaction" where user_id = ${heavy.id}
    order by seq desc offset ${deepPage * PAGE - 1} limit 1`;
  if (!deep) throw new Error(`the heavy user has fewer than ${deepPage * PAGE} rows`);
  const [middle] = await sql<{ at: Date }[]>`
    select date_trunc('hour', min(created_at) + (max(created_at) - min(created_at)) / 2) as at from "CreditTransaction"`;
  const from = middle?.at ?? new Date();
  return {
    heavyUser: heavy.id,
    dormantUser: dormant.id,
    typicalUser: typical?.id ?? heavy.id,
    deep: { seq: Number(deep.seq) },
    deepPage,
    window: { from, to: new Date(from.getTime() + 3600_000) },
  };
}

/**
 * Each list call of the package beside the same SQL written by hand with postgres.js (a
 * tagged template: prepared, rows as postgres.js returns them), interleaved on one
 * connection each, same data.
 */
export async function measureReads(
  db: Database,
  sql: postgres.Sql,
  targets: ReadTargets,
  iterations: number,
): Promise<Figure[]> {
  const { heavyUser: userId, deep, window } = targets;
  const cursor = encodeSeqCursor(deep, `user|${userId}||`);
  const cases = {
    history_first_page: {
      pkg: () => listCreditTransactions(db, { userId, limit: PAGE }),
      baseline: () => sql`
        select * from "CreditTransaction" where user_id = ${userId}
        order by seq desc limit ${PAGE + 1}`,
    },
    history_first_page_dormant_heavy_user: {
      pkg: () => listCreditTransactions(db, { userId: targets.dormantUser, limit: PAGE }),
      baseline: () => sql`
        select * from "CreditTransaction" where user_id = ${targets.dormantUser}
        order by seq desc limit ${PAGE + 1}`,
    },
    history_deep_page: {
      pkg: () => listCreditTransactions(db, { userId, limit: PAGE, cursor }),
      baseline: () => sql`
        select * from "CreditTransaction" where user_id = ${userId} and seq < ${deep.seq}
        order by seq desc limit ${PAGE + 1}`,
    },
    range_one_hour: {
      pkg: () =>
        listCreditTransactionsInRange(db, { from: window.from, to: window.to, limit: PAGE }),
      baseline: () => sql`
        select * from "CreditTransaction" where created_at >= ${window.from} and created_at < ${window.to}
        order by created_at desc, id desc limit ${PAGE + 1}`,
    },
  };
  const figures: Figure[] = [];
  for (const [name, c] of Object.entries(cases)) {
    await interleave(Math.min(200, iterations), c.pkg, c.baseline); // warm-up: plans, caches, JIT
    const sample = await interleave(iterations, c.pkg, c.baseline);
    for (const p of [50, 99]) {
      figures.push(
        figure(`${name}_p${p}`, percentile(sample.pkg, p), 'ms', percentile(sample.baseline, p)),
      );
    }
  }
  return figures;
}
