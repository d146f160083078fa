import { and, eq, type SQL, sql } from 'drizzle-orm';
import type { z } from 'zod';
import type { Database, Transaction } from '../client.js';
import { type CreditPlanChange, creditPlanChange } from '../schema.js';
import {
  constraintOf,
  IdempotencyConflictError,
  sqlStateOf,
  toLedgerWriteError,
  UserNotFoundError,
} from './errors.js';
import { runStatement } from './ledger.js';
import { rowsOf } from './prepared.js';
import { onPrimary, onReplica } from './replicas.js';
import { withRetry } from './retry.js';
import { withinBudget } from './timeout.js';
import { parse, setPlanInput, userIdInput } from './validation.js';

export interface SetUserPlanInput {
  userId: string;
  /** A plan of credit_ledger.credit_plan (`free`, `paid`, `demo` ship with the ledger). */
  plan: string;
  /**
   * When the plan ends (a yearly plan: a year after its last payment): the user is then back
   * on the default plan, recorded by the ledger as a change of its own (reason `lapsed`).
   * Must be in the future. No end when omitted.
   */
  until?: Date;
  /** Why, for support (recorded on the row): "Stripe invoice in_123 paid". */
  reason?: string;
  /** Who made the change: support's e-mail, an admin tool, a webhook. */
  actor?: string;
  /** The same key for the same user changes the plan once; a retry gets the first change back. */
  idempotencyKey?: string;
}

export interface SetUserPlanResult {
  /** The recorded change: from which plan, to which, until when, by whom and why. */
  change: CreditPlanChange;
  /** True when the idempotency key had been used: nothing was written. */
  replayed: boolean;
}

/** A user's plan as of now. */
export interface UserPlan {
  /** The plan's name; the default plan when the user never changed plan or its plan ended. */
  plan: string;
  /** Whether its deductions and holds move no balance (they are recorded all the same). */
  unlimited: boolean;
  /** When it ends, or null for no end. */
  until: Date | null;
}

/**
 * Changes a user's plan, through the ledger: one row of "CreditPlanChange", written under the
 * user's lock (so every credit operation of the user is entirely before or after it) and
 * hash-chained with the user's earlier changes. Throws PlanNotFoundError for a plan that is
 * not a row of credit_ledger.credit_plan, InvalidInputError for an `until` not in the future
 * (or on the default plan), UserNotFoundError; on any error nothing is written.
 */
export async function setUserPlan(
  db: Database | Transaction,
  input: SetUserPlanInput,
): Promise<SetUserPlanResult> {
  db = onPrimary(db);
  const parsed = parse(setPlanInput, input);
  // Retried after a lost connection only with a key: the key applies once.
  return withRetry(db, 'setUserPlan', parsed.idempotencyKey !== undefined, () =>
    withinBudget(db, 'setUserPlan', () => changePlan(db, parsed)),
  );
}

async function changePlan(
  db: Database | Transaction,
  input: z.output<typeof setPlanInput>,
): Promise<SetUserPlanResult> {
  const values = {
    userId: input.userId,
    plan: input.plan,
    until: input.until ?? null,
    reason: input.reason ?? null,
    actor: input.actor ?? null,
    idempotencyKey: input.idempotencyKey ?? null,
  };
  try {
    const [row] = await runStatement(db, (target) =>
      target.insert(creditPlanChange).values(values).returning(),
    );
    if (!row) throw new Error('INSERT … RETURNING returned no row');
    return { change: row, replayed: false };
  } catch (error) {
    if (
      input.idempotencyKey !== undefined &&
      sqlStateOf(error) === '23505' &&
      constraintOf(error) === 'credit_plan_change_user_idempotency_key_idx'
    ) {
      const [first] = await db
        .select()
        .from(creditPlanChange)
        .where(
          and(
            eq(creditPlanChange.userId, input.userId),
            eq(creditPlanChange.idempotencyKey, input.idempotencyKey),
          ),
        );
      if (!first)
        throw new Error(
          `Idempotency key "${input.idempotencyKey}" of user ${input.userId} vanished`,
        );
      const same =
        first.plan === values.plan &&
        (first.until?.getTime() ?? null) === (values.until?.getTime() ?? null) &&
        first.reason === values.reason &&
        first.actor === values.actor;
      if (!same) throw new IdempotencyConflictError(input.userId, input.idempotencyKey, first.id);
      return { change: first, replayed: true };
    }
    throw toLedgerWriteError(error, input.userId);
  }
}

/**
 * The SQL of a user's plan as of now, for a user id expression: the user's plan until it
 * ends, then the default plan, computed without writing (the user's next deduction or plan
 * change writes the lapse under its lock). Used by getUserPlan and getCreditBalance.
 */
export const currentPlanSql = (userId: SQL) => sql`(
  select pg_catalog.json_build_object('plan', e.plan, 'unlimited', coalesce(c.unlimited, false), 'until', e.until)
    from (select case when p.plan is not null and (p.until is null or p.until > pg_catalog.clock_timestamp())
                      then p.plan
                      else (select d.plan from credit_ledger.credit_plan d where d.is_default) end as plan,
                 case when p.until > pg_catalog.clock_timestamp() then p.until end as until
            from (select 1) one left join credit_ledger.user_plan p on p.user_id = ${userId}) e
    left join credit_ledger.credit_plan c on c.plan = e.plan)`;

/**
 * The SQL of whether a user's plan grants an allowance whose current period was not granted
 * yet (the user's first write or balance read in the period grants it), for a user id expression.
 */
export const allowanceDueSql = (userId: SQL) => sql`coalesce((
  select coalesce(a.period_start < pg_catalog.date_trunc(c.allowance_period, pg_catalog.clock_timestamp(), 'UTC'), true)
    from credit_ledger.credit_plan c
    left join credit_ledger.user_allowance a on a.user_id = ${userId}
   where c.allowance_period is not null
     and c.plan = coalesce(
       (select p.plan from credit_ledger.user_plan p
         where p.user_id = ${userId} and (p.until is null or p.until > pg_catalog.clock_timestamp())),
       (select d.plan from credit_ledger.credit_plan d where d.is_default))), false)`;

/** Reads currentPlanSql's JSON (a string or an object, whichever the driver returns). */
export function toUserPlan(value: unknown): UserPlan {
  const parsed = (typeof value === 'string' ? JSON.parse(value) : value) as {
    plan: string | null;
    unlimited: boolean;
    until: string | null;
  };
  return {
    plan: parsed.plan ?? '',
    unlimited: parsed.unlimited === true,
    until: parsed.until === null ? null : new Date(parsed.until),
  };
}

/** The user's plan as of now (the default plan when it never changed or its plan ended). */
export async function getUserPlan(db: Database | Transaction, userId: string): Promise<UserPlan> {
  db = onPrimary(db);
  const id = parse(userIdInput, userId, 'userId');
  return withRetry(db, 'getUserPlan', true, () =>
    withinBudget(db, 'getUserPlan', async () => {
      const [row] = rowsOf(
        await db.execute(
          sql`select ${currentPlanSql(sql`u.id`)}::text as plan from public."User" u where u.id = ${id}::uuid`,
        ),
      );
      if (!row) throw new UserNotFoundError(id);
      return toUserPlan(row.plan);
    }),
  );
}

/** A user's plan changes, newest first (at most `limit`, default 100). */
export async function listPlanChanges(
  db: Database | Transaction,
  userId: string,
  limit = 100,
): Promise<CreditPlanChange[]> {
  db = onReplica(db);
  const id = parse(userIdInput, userId, 'userId');
  return db
    .select()
    .from(creditPlanChange)
    .where(eq(creditPlanChange.userId, id))
    .orderBy(sql`${creditPlanChange.seq} desc`)
    .limit(Math.max(1, Math.min(1000, Math.trunc(limit))));
}
