import type postgres from 'postgres';
import { explainNodes, seqScansOf } from '../test/explain.js';

/** The scan nodes of a query's plan as run (EXPLAIN ANALYZE), e.g. "Index Scan Backward using credit_tx_user_seq_idx (51 rows read)". */
export async function planSummary(
  sql: postgres.Sql,
  query: { toSQL: () => { sql: string; params: unknown[] } },
  values: Record<string, unknown>,
): Promise<string> {
  const nodes = await explainNodes(sql, query, values, { analyze: true });
  const scans = nodes.filter((n) => n['Node Type'].includes('Scan'));
  const seq = seqScansOf(nodes, 'CreditTransaction').length > 0;
  // Rows read = returned + thrown away by a filter: what tells a page of one user's rows
  // from a walk through other users' rows.
  const read = (n: (typeof nodes)[number]) =>
    `${(n['Actual Rows'] ?? 0) + (n['Rows Removed by Filter'] ?? 0)} rows read`;
  return `${scans.map((n) => `${n['Node Type']}${n['Index Name'] ? ` using ${n['Index Name']}` : ''} (${read(n)})`).join(', ')}${seq ? '  ← Seq Scan on "CreditTransaction"' : ''}`;
}
