import { sql } from 'drizzle-orm';
import type { Database, Transaction } from '../client.js';
import type { FeatureType } from '../schema.js';
import { sqlStateOf } from './errors.js';
import { runStatement } from './ledger.js';
import { isTransaction, rowsOf } from './prepared.js';
import { onReplica } from './replicas.js';
import { withRetry } from './retry.js';
import { withinBudget } from './timeout.js';
import { parse, usageInput } from './validation.js';

export interface CreditUsageInput {
  /** The first instant counted. */
  from: Date;
  /** The first instant not counted (`from <= created_at < to`). */
  to: Date;
  /** One user's figures; all users' when omitted. */
  userId?: string;
  /** One feature's figures; every feature's when omitted. */
  featureType?: FeatureType;
}

/**
 * One day (UTC) and feature of the trail, in credits (chat messages for `chat_message`). A
 * settlement counts on the day it charged, a refund on the day it gave back.
 */
export interface CreditUsageRow {
  /** `YYYY-MM-DD`, the UTC day. */
  day: string;
  featureType: FeatureType;
  /**
   * Spent on metered plans: deductions and what settlements charged, less refunds. Never a
   * grant, never a hold (what a hold takes counts when its settlement charges it; a void, an
   * expiry or a settlement's remainder never counts), never a use an unlimited plan covered.
   */
  spent: number;
  /** What unlimited plans covered: the cost of the uses they recorded (deductions, settlements). */
  covered: number;
  /** Granted (every source, opening balances included). */
  granted: number;
  /** Given back by refunds (already taken off `spent`). */
  refunded: number;
  /** Taken off by grants' expiries. */
  expired: number;
}

/**
 * Credits spent, covered, granted, refunded and expired, per UTC day and feature, for one
 * user or all users, over `from <= created_at < to`; days and features with no row are left
 * out. Reads the trail through credit_tx_created_at_idx (all users) or
 * credit_tx_user_created_at_idx (one user): a read-only query, fit for a replica.
 */
export async function getCreditUsage(
  db: Database | Transaction,
  input: CreditUsageInput,
): Promise<CreditUsageRow[]> {
  db = onReplica(db);
  const parsed = parse(usageInput, input);
  return withRetry(db, 'getCreditUsage', true, () =>
    withinBudget(db, 'getCreditUsage', async () => {
      const from = parsed.from.getTime();
      const to = parsed.to.getTime();
      // For all users, whole past days come from their summaries (credit_usage_day), summed
      // now if they are not yet; only the rest (the range's partial days, today's, and any a
      // read-only connection could not sum) is read from the trail.
      const summed = parsed.userId === undefined ? await summedDays(db, from, to) : undefined;
      const parts: [number, number][] = summed
        ? [
            [from, summed.from],
            [summed.to, to],
          ]
        : [[from, to]];
      const wanted = parts.filter(([a, b]) => a < b);
      // Every day summed: the trail's part is an empty range.
      const live: [number, number][] = wanted.length > 0 ? wanted : [[from, from]];
      const iso = (ms: number) => new Date(ms).toISOString();
      // The optional filters are left out of the SQL when not given, rather than written as
      // `$1 is null or …`, which a generic plan cannot serve with an index. Rows are grouped
      // by their UTC day as a timestamp (date_trunc), formatted once per group, and compared
      // with enum values directly: per-row text work was most of the query's time.
      const query = sql`
        select pg_catalog.to_char(g.day at time zone 'UTC', 'YYYY-MM-DD') as day, g.feature_type::text as feature_type,
               g.spent, g.covered, g.granted, g.refunded, g.expired
          from (select pg_catalog.date_trunc('day', t.created_at, 'UTC') as day, t.feature_type,
                       coalesce(sum(t.amount) filter (where t.covered_by_plan is null
                         and t.operation in ('deduct', 'settle')), 0)
                         - coalesce(sum(t.amount) filter (where t.operation = 'refund'), 0) as spent,
                       coalesce(sum(t.amount) filter (where t.covered_by_plan is not null
                         and t.operation in ('deduct', 'settle')), 0) as covered,
                       coalesce(sum(t.amount) filter (where t.operation = 'grant'), 0) as granted,
                       coalesce(sum(t.amount) filter (where t.operation = 'refund'), 0) as refunded,
                       coalesce(sum(t.amount) filter (where t.operation = 'expire_grant'), 0) as expired
                  from public."CreditTransaction" t
                 where (${sql.join(
                   live.map(
                     ([a, b]) =>
                       sql`(t.created_at >= ${iso(a)}::timestamptz and t.created_at < ${iso(b)}::timestamptz)`,
                   ),
                   sql` or `,
                 )})
                   ${parsed.userId === undefined ? sql`` : sql`and t.user_id = ${parsed.userId}::uuid`}
                   ${parsed.featureType === undefined ? sql`` : sql`and t.feature_type = ${parsed.featureType}::public.feature_type`}
                 group by 1, 2) g
        ${
          summed
            ? sql`union all
        select pg_catalog.to_char(s.day, 'YYYY-MM-DD'), s.feature_type::text, s.spent, s.covered,
               s.granted, s.refunded, s.expired
          from credit_ledger.credit_usage_day s
         where s.day >= ${iso(summed.from).slice(0, 10)}::date and s.day < ${iso(summed.to).slice(0, 10)}::date
           ${parsed.featureType === undefined ? sql`` : sql`and s.feature_type = ${parsed.featureType}::public.feature_type`}`
            : sql``
        }
         order by 1, 2`;
      // JIT compilation, which the planner's estimates switch on for a range of some thousand
      // rows, costs more than it saves here (100–200 ms on a query of tens of ms): off for
      // this query only, and set back after it, also inside a caller's transaction.
      const run = async (tx: Database | Transaction) => {
        const [before] = rowsOf(
          await tx.execute(
            sql`select pg_catalog.current_setting('jit') as jit, pg_catalog.set_config('jit', 'off', true)`,
          ),
        );
        // On an error the transaction is aborted, and the setting goes with it.
        const result = rowsOf(await tx.execute(query));
        await tx.execute(
          sql`select pg_catalog.set_config('jit', ${String(before?.jit ?? 'on')}, true)`,
        );
        return result;
      };
      const rows = isTransaction(db)
        ? await run(db)
        : await db.transaction(run, { accessMode: 'read only' });
      return rows.map((r) => ({
        day: String(r.day),
        featureType: r.feature_type as FeatureType,
        spent: Number(r.spent),
        covered: Number(r.covered),
        granted: Number(r.granted),
        refunded: Number(r.refunded),
        expired: Number(r.expired),
      }));
    }),
  );
}

const DAY_MS = 86_400_000;

/**
 * The whole UTC days of [from, to) that are summed in credit_usage_day, as one range from the
 * first whole day on (days summed after a gap are read from the trail), after summing the
 * ones that ended more than an hour ago. On a connection that cannot write (a replica) the
 * summing is skipped and what the primary summed is used. Undefined when none is.
 */
async function summedDays(
  db: Database | Transaction,
  from: number,
  to: number,
): Promise<{ from: number; to: number } | undefined> {
  const first = Math.ceil(from / DAY_MS) * DAY_MS;
  const last = Math.floor(to / DAY_MS) * DAY_MS;
  if (last <= first) return undefined;
  const day = (ms: number) => new Date(ms).toISOString().slice(0, 10);
  try {
    await runStatement(db, (target) =>
      target.execute(
        sql`select credit_ledger.credit_usage_roll_up(${day(first)}::date, ${day(last)}::date)`,
      ),
    );
  } catch (error) {
    if (sqlStateOf(error) !== '25006') throw error;
  }
  const done = rowsOf(
    await db.execute(sql`
      select pg_catalog.to_char(day, 'YYYY-MM-DD') as day from credit_ledger.credit_usage_day_done
       where day >= ${day(first)}::date and day < ${day(last)}::date order by day`),
  );
  let end = first;
  for (const row of done) {
    if (String(row.day) !== day(end)) break;
    end += DAY_MS;
  }
  return end > first ? { from: first, to: end } : undefined;
}
