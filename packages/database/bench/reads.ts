import type postgres from 'postgres';
import type { Database } from '../src/client.js';
import { encodeSeqCursor, encodeTimeCursor } from '../src/credits/cursor.js';
import { listCreditTransactions, listCreditTransactionsInRange } from '../src/credits/index.js';
import {
  type Figure,
  figure,
  formatSpread,
  interleave,
  median,
  percentile,
  spreadOf,
} from './stats.js';

export interface ReadTargets {
  heavyUser: string;
  /** A heavy user with no rows in the newer half of the table. */
  dormantUser: string;
  /** A user with the median number of rows. */
  typicalUser: string;
  /** The seq of the last row of page `deepPage` (1-based) of the heavy user's history. */
  deep: { seq: number };
  deepPage: number;
  /** The seq just below the heavy user's last (oldest) page: its cursor. */
  lastPage: { seq: number };
  /** How many rows of the heavy user: what a filter matching (almost) none of them reads. */
  heavyUserRows: number;
  window: { from: Date; to: Date };
  /**
   * An hour holding the users' opening rows, which all share one created_at (the seed dates
   * them the day before the year): a range page there cannot stop after 51 index entries,
   * since (created_at, id) order among equal timestamps needs all of them sorted.
   */
  tiedWindow: { from: Date; to: Date; rows: number };
  /** A position in the middle of the tied rows: a range cursor there. */
  tiedMiddle: { createdAt: Date; id: string };
}

const PAGE = 50;
/** The most time one read case may take, both sides and its warm-up together. */
const CASE_BUDGET_MS = 20_000;

/** A heavy user, positions in its history, a one-hour window, and the worst cases of each query. */
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
  const [count] = await sql<{ n: number }[]>`
    select count(*)::int as n from "CreditTransaction" where user_id = ${heavy.id}`;
  const [middle] = await sql<{ at: Date }[]>`
    select date_trunc('hour', min(created_at) + (max(created_at) - min(created_at)) / 2) as at from "CreditTransaction"`;
  const from = middle?.at ?? new Date();
  // The largest group of rows sharing one created_at, and the row in the middle of it.
  const [tied] = await sql<{ at: Date; rows: number }[]>`
    select created_at as at, count(*)::int as rows from "CreditTransaction"
    group by created_at order by count(*) desc limit 1`;
  if (!tied) throw new Error('the trail is empty');
  const [tiedMiddle] = await sql<{ id: string }[]>`
    select id from "CreditTransaction" where created_at = ${tied.at}
    order by id desc offset ${Math.floor(tied.rows / 2)} limit 1`;
  const tiedFrom = new Date(Math.floor(tied.at.getTime() / 3600_000) * 3600_000);
  return {
    heavyUser: heavy.id,
    dormantUser: dormant.id,
    typicalUser: typical?.id ?? heavy.id,
    deep: { seq: Number(deep.seq) },
    deepPage,
    lastPage: { seq: PAGE + 1 },
    heavyUserRows: count?.n ?? 0,
    window: { from, to: new Date(from.getTime() + 3600_000) },
    tiedWindow: { from: tiedFrom, to: new Date(tiedFrom.getTime() + 3600_000), rows: tied.rows },
    tiedMiddle: { createdAt: tied.at, id: tiedMiddle?.id ?? '' },
  };
}

interface ReadCase {
  pkg: () => Promise<unknown>;
  baseline: () => Promise<unknown>;
}

/**
 * Each list call of the package beside the same SQL written by hand with postgres.js (a
 * tagged template: prepared, rows as postgres.js returns them), interleaved on one
 * connection each, same data, in `rounds` rounds: p50 and p99 of all the calls, with each
 * one's min–max over the rounds. Beyond the everyday reads, the worst input of each query:
 * a heavy user dormant for the newer half of the table, the oldest page, a filter matching
 * none of the newest rows (an operation and a feature type the heavy user has only in its
 * opening rows), and a range page inside thousands of rows sharing one timestamp. A slow case
 * runs fewer calls (at most CASE_BUDGET_MS each, at least 10 a round) and says so.
 */
export async function measureReads(
  db: Database,
  sql: postgres.Sql,
  targets: ReadTargets,
  options: {
    iterations: number;
    rounds: number;
    log: (line: string) => void;
    beforeRounds: () => Promise<void>;
  },
): Promise<Figure[]> {
  const { heavyUser: userId, deep, window, tiedWindow, tiedMiddle } = targets;
  const history = (
    input: { userId: string; operation?: 'grant'; featureType?: 'document_generation' },
    seq?: number,
  ): ReadCase => {
    const scope = `user|${input.userId}|${input.operation ?? ''}|${input.featureType ?? ''}`;
    const cursor = seq === undefined ? undefined : encodeSeqCursor({ seq }, scope);
    return {
      pkg: () =>
        listCreditTransactions(db, { ...input, limit: PAGE, ...(cursor ? { cursor } : {}) }),
      baseline: () => sql`
        select * from "CreditTransaction" where user_id = ${input.userId}
        ${input.operation ? sql`and operation = ${input.operation}` : sql``}
        ${input.featureType ? sql`and feature_type = ${input.featureType}` : sql``}
        ${seq === undefined ? sql`` : sql`and seq < ${seq}`}
        order by seq desc limit ${PAGE + 1}`,
    };
  };
  const range = (
    bounds: { from: Date; to: Date },
    position?: { createdAt: Date; id: string },
  ): ReadCase => {
    const scope = `range|${bounds.from.toISOString()}|${bounds.to.toISOString()}`;
    const cursor = position ? encodeTimeCursor(position, scope) : undefined;
    return {
      pkg: () =>
        listCreditTransactionsInRange(db, {
          ...bounds,
          limit: PAGE,
          ...(cursor ? { cursor } : {}),
        }),
      baseline: () => sql`
        select * from "CreditTransaction" where created_at >= ${bounds.from} and created_at < ${bounds.to}
        ${
          position
            ? sql`and created_at <= ${position.createdAt}
                  and (created_at < ${position.createdAt} or id < ${position.id})`
            : sql``
        }
        order by created_at desc, id desc limit ${PAGE + 1}`,
    };
  };
  const cases: Record<string, ReadCase> = {
    history_first_page: history({ userId }),
    history_first_page_dormant_heavy_user: history({ userId: targets.dormantUser }),
    history_deep_page: history({ userId }, deep.seq),
    history_last_page: history({ userId }, targets.lastPage.seq),
    history_operation_rare: history({ userId, operation: 'grant' }),
    history_feature_rare: history({ userId, featureType: 'document_generation' }),
    history_operation_rare_deep_page: history({ userId, operation: 'grant' }, deep.seq),
    range_one_hour: range(window),
    range_tied_timestamps: range({ from: tiedWindow.from, to: tiedWindow.to }),
    range_tied_timestamps_deep_page: range(
      { from: tiedWindow.from, to: tiedWindow.to },
      tiedMiddle,
    ),
  };
  options.log(
    `  read targets: heavy user ${targets.heavyUserRows.toLocaleString('en')} rows (filters 'grant' and ` +
      `'document_generation' match only its opening rows), deep page ${targets.deepPage}, ` +
      `${tiedWindow.rows.toLocaleString('en')} rows sharing created_at ${tiedMiddle.createdAt.toISOString()}`,
  );
  const figures: Figure[] = [];
  const p50s: Record<string, { pooled: number; rounds: number[] }> = {};
  for (const [name, c] of Object.entries(cases)) {
    // A probe sizes the case (the median of 5 pairs after a first that prepares the
    // statements): slow worst cases get fewer calls.
    await interleave(1, c.pkg, c.baseline);
    const probe = await interleave(5, c.pkg, c.baseline);
    const perPair = Math.max(median(probe.pkg) + median(probe.baseline), 0.01);
    const iterations = Math.max(
      options.rounds * 10,
      Math.min(options.iterations, Math.floor(CASE_BUDGET_MS / 1.1 / perPair)),
    );
    const perRound = Math.max(1, Math.floor(iterations / options.rounds));
    await interleave(Math.min(200, Math.ceil(perRound / 10) * 10), c.pkg, c.baseline); // warm-up: plans, caches, JIT
    await options.beforeRounds();
    const rounds: { pkg: number[]; baseline: number[] }[] = [];
    for (let r = 0; r < options.rounds; r++)
      rounds.push(await interleave(perRound, c.pkg, c.baseline));
    const all = {
      pkg: rounds.flatMap((r) => r.pkg),
      baseline: rounds.flatMap((r) => r.baseline),
    };
    if (perRound * options.rounds < options.iterations)
      options.log(
        `  ${name}: ${(perRound * options.rounds).toLocaleString('en')} calls each (a call takes ` +
          `${(perPair / 2).toFixed(1)} ms; ${options.iterations.toLocaleString('en')} would take too long)`,
      );
    for (const p of [50, 99]) {
      const pkgRounds = rounds.map((r) => percentile(r.pkg, p));
      const baseRounds = rounds.map((r) => percentile(r.baseline, p));
      const ratios = pkgRounds.map((v, i) => v / (baseRounds[i] ?? Number.NaN));
      figures.push({
        ...figure(`${name}_p${p}`, percentile(all.pkg, p), 'ms', percentile(all.baseline, p)),
        baselineName: 'the same SQL by hand',
        spread: spreadOf(pkgRounds),
        baselineSpread: spreadOf(baseRounds),
        ratioSpread: spreadOf(ratios),
      });
      if (p === 50) p50s[name] = { pooled: percentile(all.pkg, 50), rounds: pkgRounds };
    }
    const p99 = figures.at(-1);
    options.log(
      `  ${name}: p50 ${figures.at(-2)?.value} ms (rounds ${formatSpread(figures.at(-2)?.spread)}), ` +
        `p99 ${p99?.value} ms (rounds ${formatSpread(p99?.spread)}), ratio p99 ${p99?.ratio} (rounds ${formatSpread(p99?.ratioSpread)})`,
    );
  }
  // The issue's question: does a dormant heavy user wait longer than an active one? Both the
  // package, p50, paired round by round.
  const dormant = p50s.history_first_page_dormant_heavy_user;
  const active = p50s.history_first_page;
  if (dormant && active) {
    const ratios = dormant.rounds.map((v, i) => v / (active.rounds[i] ?? Number.NaN));
    figures.push({
      ...figure('history_dormant_vs_active_p50', dormant.pooled, 'ms', active.pooled),
      baselineName: 'the package, an active heavy user',
      spread: spreadOf(dormant.rounds),
      baselineSpread: spreadOf(active.rounds),
      ratioSpread: spreadOf(ratios),
    });
  }
  return figures;
}
