import { is, Placeholder } from 'drizzle-orm';
import type postgres from 'postgres';

export interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  'Index Cond'?: string;
  Filter?: string;
  /** With `analyze`: rows a node returned, and rows it read and threw away. */
  'Actual Rows'?: number;
  'Rows Removed by Filter'?: number;
  Plans?: PlanNode[];
}

/**
 * EXPLAIN of a query built with placeholders, filled with `values`: every node of the plan,
 * root first. Used by the tests and the benchmark to prove which index serves a list, and
 * (with `analyze`, which runs the query) how many rows it really read.
 */
export async function explainNodes(
  sql: postgres.Sql,
  query: { toSQL: () => { sql: string; params: unknown[] } },
  values: Record<string, unknown>,
  options: { analyze?: boolean } = {},
): Promise<PlanNode[]> {
  const { sql: text, params } = query.toSQL();
  const filled = params.map((p) => (is(p, Placeholder) ? values[p.name] : p));
  const [row] = await sql.unsafe(
    `explain (format json${options.analyze ? ', analyze, timing off' : ''}) ${text}`,
    filled as never[],
  );
  const root = (row?.['QUERY PLAN'] as { Plan: PlanNode }[] | undefined)?.[0]?.Plan;
  if (!root) throw new Error('EXPLAIN returned no plan');
  const flatten = (node: PlanNode): PlanNode[] => [node, ...(node.Plans ?? []).flatMap(flatten)];
  return flatten(root);
}

export const indexesUsed = (nodes: PlanNode[]) =>
  nodes.map((n) => n['Index Name']).filter((name): name is string => Boolean(name));

export const seqScansOf = (nodes: PlanNode[], relation: string) =>
  nodes.filter((n) => n['Node Type'] === 'Seq Scan' && n['Relation Name'] === relation);
