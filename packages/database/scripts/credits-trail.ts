import { writeFileSync } from 'node:fs';
import { createDatabase } from '../src/client.js';
import {
  type CreditStatement,
  DEFAULT_STATEMENT_ROWS,
  getCreditStatement,
  MAX_STATEMENT_ROWS,
} from '../src/credits/statement.js';
import { renderCreditStatementHtml } from '../src/credits/statement-html.js';
import { redactUrl } from '../src/migrate/redact.js';
import { runCommand } from './run-command.js';
import {
  databaseUrl,
  isoInstant,
  parseCommandLine,
  UsageError,
  wholeNumber,
} from './support-args.js';
import { say, shortJson } from './support-print.js';

const usage = `Usage: pnpm credits:trail <e-mail | user id> [--since DATE] [--limit N] [--json] [--html FILE] [--no-verify]

Prints a user's credits story from DATABASE_URL (the primary, or a streaming replica's URL):
the plan, the balances and the grants they are made of, open holds, plan changes, the trail
newest first with both balances after each row and the refunds of each charge, and this
user's credits:verify. Reads only: due holds and grants are shown as given back or expired,
never written.

  --since DATE   only rows written at or after DATE (ISO 8601, e.g. 2026-11-01 or 2026-11-01T12:00Z)
  --limit N      the newest N rows, 1–${MAX_STATEMENT_ROWS} (default ${DEFAULT_STATEMENT_ROWS})
  --json         print the statement as JSON (format "bragdoc.credits.statement/1") instead
  --html FILE    also write it as one self-contained page (no network) with a chart of each balance
  --no-verify    skip the user's credits:verify (faster on a very long trail)`;

const pad = (s: string | number, n: number) => String(s).padEnd(n);
const padStart = (s: string | number, n: number) => String(s).padStart(n);
// A date the database holds as infinity reads as an invalid Date: shown, never thrown on.
const time = (d: Date | null) => (d ? (Number.isNaN(+d) ? 'infinity' : d.toISOString()) : '—');

/** The statement as `--json` prints it: dates as ISO 8601 strings, under a named format. */
export function statementJson(statement: CreditStatement): string {
  return JSON.stringify({ format: 'bragdoc.credits.statement/1', ...statement }, null, 2);
}

function printText(s: CreditStatement, url: string): void {
  const out: string[] = [];
  const { balance } = s;
  out.push(
    `credits:trail: ${s.user.email} (user ${s.user.id}${s.user.name ? `, ${s.user.name}` : ''}), read ${time(s.readAt)} on ${s.source.replica ? 'a replica' : 'the primary'} ${redactUrl(url)}`,
  );
  if (s.source.replica)
    out.push(
      s.source.lagSeconds === null
        ? '  replica: it has replayed nothing yet'
        : `  replica lag: its last replayed change was committed ${s.source.lagSeconds.toFixed(1)} s before this read${s.source.caughtUp ? ' (it has replayed all it received)' : ' (still replaying)'}`,
    );
  out.push(
    `Plan: ${balance.plan.plan} (${balance.plan.unlimited ? 'unlimited: uses are recorded, no balance moves' : 'metered'})${balance.plan.until ? ` until ${time(balance.plan.until)}` : ''}`,
  );
  out.push(
    `Credits: ${balance.freeCredits}${balance.heldCredits ? ` (${balance.heldCredits} held)` : ''}   Chat messages: ${balance.freeChatMessages}${balance.heldChatMessages ? ` (${balance.heldChatMessages} held)` : ''}`,
  );
  out.push('Grants (soonest-expiring spent first):');
  for (const g of balance.grants)
    out.push(
      `  ${pad(g.balance === 'free_credits' ? 'credits' : 'chat msgs', 10)}${pad(g.source, 13)}${padStart(g.remaining, 8)} of ${pad(g.amount, 8)} ${g.expiresAt ? `expires ${time(g.expiresAt)}` : 'never expires'}  (granted ${time(g.createdAt)})`,
    );
  if (balance.grants.length === 0) out.push('  none');
  out.push(`Open holds: ${s.holds.length === 0 ? 'none' : ''}`);
  for (const h of s.holds)
    out.push(
      `  ${h.id}  ${h.amount} ${h.featureType === 'chat_message' ? 'chat messages' : 'credits'} for ${h.featureType}, expires ${time(h.expiresAt)}${h.overdue ? ' (overdue: given back at the next write)' : ''}${h.coveredByPlan ? ` (covered by ${h.coveredByPlan})` : ''}`,
    );
  if (s.planChanges.length > 0) {
    out.push('Plan changes (newest first):');
    for (const p of s.planChanges)
      out.push(
        `  ${time(p.createdAt)}  ${p.fromPlan ?? '—'} → ${p.plan}${p.until ? ` until ${time(p.until)}` : ''}${p.reason ? `  "${p.reason}"` : ''}${p.actor ? ` by ${p.actor}` : ''}`,
      );
  }
  const v = s.verification;
  if (v === null) out.push('Verification: skipped (--no-verify)');
  else if (v.ok)
    out.push(`Verification: ✓ OK: ${v.rows} rows gapless, hash-chained, adding up to the balances`);
  else {
    out.push(
      `Verification: ✗ ${v.violationCount} problem${v.violationCount === 1 ? '' : 's'}: the balances are not fully explained by the trail`,
    );
    for (const f of v.violations)
      out.push(`  ✗ ${pad(f.kind, 24)}${f.seq === null ? '' : ` seq ${f.seq}`}: ${f.detail}`);
  }
  out.push(
    `Trail, newest first (${s.rows.length} of ${s.rowCount} row${s.rowCount === 1 ? '' : 's'}):`,
  );
  out.push(
    `  ${padStart('seq', 6)}  ${pad('when (UTC)', 24)} ${pad('operation', 12)} ${pad('feature', 20)} ${padStart('change', 7)} ${padStart('credits', 8)} ${padStart('chats', 6)}  what`,
  );
  for (const r of s.rows) {
    const t = r.transaction;
    const links = [
      ...r.refunds.map((f) => `refunded ${f.amount} by ${f.id}`),
      t.actor ? `by ${t.actor}` : '',
      t.metadata && Object.keys(t.metadata).length > 0 ? shortJson(t.metadata) : '',
    ].filter(Boolean);
    out.push(
      `  ${padStart(t.seq, 6)}  ${pad(time(t.createdAt), 24)} ${pad(t.operation, 12)} ${pad(t.featureType, 20)} ${padStart(r.change > 0 ? `+${r.change}` : r.change, 7)} ${padStart(r.credits, 8)} ${padStart(r.chatMessages, 6)}  ${r.description}  [${t.id}]${links.length ? `  ${links.join('; ')}` : ''}`,
    );
  }
  for (const line of out) say(line);
}

async function run(): Promise<number> {
  const { values, positionals } = parseCommandLine({
    allowPositionals: true,
    options: {
      since: { type: 'string' },
      limit: { type: 'string' },
      json: { type: 'boolean', default: false },
      html: { type: 'string' },
      'no-verify': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(usage);
    return 0;
  }
  const [who, ...extra] = positionals;
  if (!who || extra.length > 0) throw new UsageError(`give one e-mail or user id.\n\n${usage}`);
  const limit = wholeNumber('limit', values.limit) ?? DEFAULT_STATEMENT_ROWS;
  if (limit > MAX_STATEMENT_ROWS)
    throw new UsageError(`--limit must be at most ${MAX_STATEMENT_ROWS}, got ${limit}.`);
  const since = isoInstant('since', values.since);
  const url = databaseUrl('credits:trail');
  const { db, close } = createDatabase(url, { max: 1, applicationName: 'credits:trail' });
  const started = performance.now();
  try {
    const statement = await getCreditStatement(db, {
      user: who,
      limit,
      verify: !values['no-verify'],
      ...(since ? { since } : {}),
    });
    if (values.json) console.log(statementJson(statement));
    else printText(statement, url);
    if (values.html !== undefined) {
      writeFileSync(values.html, renderCreditStatementHtml(statement));
      (values.json ? console.error : say)(
        `credits:trail: wrote ${values.html} (${statement.rows.length} rows) in ${Math.round(performance.now() - started)} ms.`,
      );
    }
    return 0;
  } finally {
    await close();
  }
}

runCommand('credits:trail', run, (error) => error instanceof UsageError);
