import { sql } from 'drizzle-orm';
import type { OperationType } from '../schema.js';

/**
 * What a row of each operation does to its balance, as credits:verify reads the trail. It is
 * the verifier's own statement of it, kept apart from the ledger's (the SQL function
 * credit_ledger.credit_balance_effect) on purpose: a replaced ledger function cannot change
 * what the check expects. A test runs every operation through both. A new operation fails
 * typecheck here until its effect is stated.
 */
export const BALANCE_EFFECT: Record<
  OperationType,
  'takes' | 'adds' | 'returns_unused' | 'returns_held'
> = {
  // Takes its amount from the balance.
  deduct: 'takes',
  hold: 'takes',
  // Takes off what remained of an expired grant.
  expire_grant: 'takes',
  // Adds its amount.
  grant: 'adds',
  refund: 'adds',
  // Charges its amount of the hold and gives the rest back: held − amount.
  settle: 'returns_unused',
  // Gives the whole hold back (its amount is the held amount).
  void: 'returns_held',
  expire: 'returns_held',
};

const BY_EFFECT = (effect: (typeof BALANCE_EFFECT)[OperationType]) =>
  Object.entries(BALANCE_EFFECT)
    .filter(([, e]) => e === effect)
    .map(([operation]) => operation);

/**
 * The signed change of a row to its balance, as SQL over the row's `operation` and `amount`,
 * the `held` amount of the hold it closes (NULL for other rows) and its `covered_by_plan`
 * (a row an unlimited plan covered moves no balance); NULL for an operation the map does not
 * know. Built from BALANCE_EFFECT alone.
 */
export function balanceDeltaSql(operation: string, amount: string, held: string, covered: string) {
  const list = (names: string[]) => `'{${names.join(',')}}'::pg_catalog.text[]`;
  return sql.raw(
    `case when ${covered} is not null then 0::pg_catalog.int8
          when ${operation}::pg_catalog.text = any(${list(BY_EFFECT('takes'))}) then -${amount}::pg_catalog.int8
          when ${operation}::pg_catalog.text = any(${list([...BY_EFFECT('adds'), ...BY_EFFECT('returns_held')])}) then ${amount}::pg_catalog.int8
          when ${operation}::pg_catalog.text = any(${list(BY_EFFECT('returns_unused'))}) then ${held}::pg_catalog.int8 - ${amount}::pg_catalog.int8
     end`,
  );
}
