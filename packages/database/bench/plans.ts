import type postgres from 'postgres';
import { explainNodes, seqScansOf } from '../test/explain.js';

/** The scan nodes of a query's plan, e.g. "Index Scan Backward using credit_tx_user_created_at_idx". */
export async function planSummary(
  sql: postgres.Sql,
  query: { toSQL: () => { sql: string; params: unknown[] } },
  values: Record<string, unknown>,
): Promise<string> {
  const nodes = await explainNodes(sql, query, values);
  const scans = nodes.filter((n) => n['Node Type'].includes('Scan'));
  const seq = seqScansOf(nodes, 'CreditTransaction').length > 0;
  return `${scans.map((n) => `${n['Node Type']}${n['Index Name'] ? ` using ${n['Index Name']}` : ''}`).join(', ')}${seq ? '  ← Seq Scan on "CreditTransaction"' : ''}`;
}
