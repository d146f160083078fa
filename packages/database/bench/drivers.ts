import { findPgBouncer, type PgBouncer, startPgBouncer } from '@bragdoc/test-postgres';
import { drizzle as drizzleNodePg } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { createDatabase, type Database, type DatabaseHandle } from '../src/client.js';
import { deductCredits, listCreditTransactions } from '../src/credits/index.js';
import * as schema from '../src/schema.js';
import {
  type Figure,
  figure,
  formatSpread,
  median,
  percentile,
  rotate,
  roundsFigure,
  spreadOf,
  timed,
} from './stats.js';
import { run } from './writes.js';

const CALLERS = 16;
/** PgBouncer's server connections: as many as the direct pool has, so neither waits for one. */
const POOLER_SIZE = 16;
const PAGE = 50;

/** `url` with `?pgbouncer=true`, the documented setting for a transaction-mode pooler. */
export function withPoolerSetting(url: string): string {
  const pooled = new URL(url);
  pooled.searchParams.set('pgbouncer', 'true');
  return pooled.toString();
}

/**
 * A transaction-mode PgBouncer in front of `serverUrl`, or why there is none (missing binary,
 * or it failed to start): the bench then measures without it.
 */
async function startPooler(serverUrl: string): Promise<PgBouncer | { missing: string }> {
  const binary = findPgBouncer();
  if ('missing' in binary) return binary;
  try {
    return await startPgBouncer({ serverUrl, poolMode: 'transaction', poolSize: POOLER_SIZE });
  } catch (error) {
    return { missing: `pgbouncer did not start: ${(error as Error).message.split('\n')[0]}` };
  }
}

/**
 * deductCredits of 1, 16 concurrent callers on 16 distinct users, through three postgres.js
 * pools of 16 (createDatabase) on the same database:
 * - direct, with prepared statements (the default);
 * - direct, `prepare: false`: what turning prepared statements off costs by itself;
 * - through a transaction-mode PgBouncer (pool size 16) with `?pgbouncer=true` in the URL,
 *   which turns them off: the pooler's hop and its statement-by-statement routing on top.
 * Rounds rotate the order; the figure is the median round. Without pgbouncer, the pooled
 * column is left out and the reason printed.
 */
export async function measurePooledDeductions(
  url: string,
  serverUrl: string,
  users: string[],
  rounds: number,
  opsPerCaller: number,
  log: (line: string) => void,
): Promise<Figure[]> {
  const pooler = await startPooler(serverUrl);
  const handles: { name: string; handle: DatabaseHandle; sample: number[] }[] = [
    { name: 'direct', handle: createDatabase(url, { max: CALLERS }), sample: [] },
    {
      name: 'direct, prepare: false',
      handle: createDatabase(url, { max: CALLERS, prepare: false }),
      sample: [],
    },
  ];
  if ('missing' in pooler) log(`  no PgBouncer figure: ${pooler.missing}`);
  else
    handles.push({
      name: `PgBouncer (transaction mode, pool ${POOLER_SIZE}), ?pgbouncer=true`,
      handle: createDatabase(withPoolerSetting(pooler.pooledUrl(url)), { max: CALLERS }),
      sample: [],
    });
  try {
    const deduct = (db: Database) => (caller: number) =>
      deductCredits(db, { userId: users[caller] ?? '', amount: 1, featureType: 'chat_tool_call' });
    for (const h of handles) await run(CALLERS, 20, deduct(h.handle.db)); // warm-up: connections, plans
    await rotate(
      rounds,
      handles.map(
        (h) => async () => h.sample.push(await run(CALLERS, opsPerCaller, deduct(h.handle.db))),
      ),
    );
    for (const h of handles)
      log(
        `  deductCredits, ${CALLERS} callers, ${h.name}: median ${Math.round(median(h.sample)).toLocaleString('en')} ops/s (${formatSpread(spreadOf(h.sample))} over ${rounds} rounds)`,
      );
    const [direct, unprepared, pooled] = handles.map((h) => h.sample);
    const figures = [
      roundsFigure('deduct_unprepared_16_callers', unprepared ?? [], 'ops/s', direct ?? [], {
        baselineName: 'direct, prepared',
      }),
    ];
    if (pooled !== undefined)
      figures.push(
        roundsFigure('deduct_pgbouncer_16_callers', pooled, 'ops/s', direct ?? [], {
          baselineName: 'direct, prepared',
        }),
        roundsFigure('deduct_pgbouncer_vs_unprepared', pooled, 'ops/s', unprepared ?? [], {
          baselineName: 'direct, prepare: false',
        }),
      );
    return figures;
  } finally {
    for (const h of handles) await h.handle.close();
    if (!('missing' in pooler)) await pooler.stop();
  }
}

/**
 * listCreditTransactions (first page, 50 rows) of one user, one connection per driver,
 * interleaved call by call (the order rotated each call) after a 200-call warm-up:
 * - postgres.js through createDatabase (the package's prepared query);
 * - node-postgres: drizzle-orm/node-postgres over a pg.Pool, which builds the query and
 *   sends it unnamed every call (see src/credits/prepared.ts);
 * - postgres.js with `prepare: false` (what a pooled URL gets).
 * Latency in ms, p50 and p99; the baseline is postgres.js.
 */
export async function measureHistoryDrivers(
  url: string,
  userId: string,
  iterations: number,
  log: (line: string) => void,
): Promise<Figure[]> {
  const postgresJs = createDatabase(url, { max: 1 });
  const unprepared = createDatabase(url, { max: 1, prepare: false });
  const pool = new pg.Pool({ connectionString: url, max: 1 });
  const nodePg: Database = drizzleNodePg(pool, { schema });
  try {
    const drivers = [
      { name: 'postgres.js', db: postgresJs.db as Database, sample: [] as number[] },
      { name: 'node-postgres', db: nodePg, sample: [] as number[] },
      {
        name: 'postgres.js, prepare: false',
        db: unprepared.db as Database,
        sample: [] as number[],
      },
    ];
    const pages = await Promise.all(
      drivers.map((d) => listCreditTransactions(d.db, { userId, limit: PAGE })),
    );
    const ids = pages.map((p) => p.items.map((row) => `${row.seq}:${row.balanceAfter}`).join());
    log(
      `  history, first page: ${pages[0]?.items.length} rows; ` +
        (ids.every((page) => page === ids[0])
          ? 'the same rows from each driver'
          : '✗ the drivers returned different rows'),
    );
    const calls = drivers.map((d) => async () => {
      d.sample.push(await timed(() => listCreditTransactions(d.db, { userId, limit: PAGE })));
    });
    await rotate(Math.min(200, iterations), calls); // warm-up: plans, caches, JIT
    for (const d of drivers) d.sample.length = 0;
    await rotate(iterations, calls);
    for (const d of drivers)
      log(
        `  history, first page, ${d.name}: p50 ${percentile(d.sample, 50).toFixed(3)} ms, p99 ${percentile(d.sample, 99).toFixed(3)} ms over ${iterations} calls`,
      );
    const [js, node, jsUnprepared] = drivers.map((d) => d.sample);
    const figures: Figure[] = [];
    for (const p of [50, 99]) {
      const base = percentile(js ?? [], p);
      figures.push(
        figure(`history_node_postgres_p${p}`, percentile(node ?? [], p), 'ms', base),
        figure(`history_unprepared_p${p}`, percentile(jsUnprepared ?? [], p), 'ms', base),
      );
    }
    return figures;
  } finally {
    await pool.end();
    await unprepared.close();
    await postgresJs.close();
  }
}
