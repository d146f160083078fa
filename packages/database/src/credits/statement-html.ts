import type { CreditStatement, StatementRow } from './statement.js';

const ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};
/** Every value on the page is data a user or an app wrote (an e-mail, metadata): escaped. */
const esc = (value: unknown): string => String(value).replace(/[&<>"']/g, (c) => ESCAPES[c] ?? c);
// A date the database holds as infinity reads as an invalid Date: shown, never thrown on.
const time = (d: Date | null) =>
  d
    ? Number.isNaN(+d)
      ? 'infinity'
      : d.toISOString().replace('T', ' ').replace('.000Z', 'Z')
    : '—';
/** Metadata as shown on a row: whole up to 2,000 characters (raw SQL can write megabytes). */
const MAX_METADATA_SHOWN = 2000;
function shownMetadata(value: unknown): string {
  const text = JSON.stringify(value);
  return text.length <= MAX_METADATA_SHOWN
    ? text
    : `${text.slice(0, MAX_METADATA_SHOWN)}… (${text.length} characters in all)`;
}
const signed = (n: number) => (n > 0 ? `+${n}` : String(n));

const WIDTH = 900;
const HEIGHT = 220;
const PAD = { left: 56, right: 16, top: 16, bottom: 36 };

/**
 * A step chart of one balance over the rows shown, oldest to newest: inline SVG, drawn by the
 * server, so the page needs no script and no network to show it.
 */
function chart(rows: StatementRow[], series: 'credits' | 'chatMessages', title: string): string {
  const points = [...rows].reverse().map((r) => ({
    at: +r.transaction.createdAt,
    value: r[series],
    seq: r.transaction.seq,
  }));
  if (points.length === 0)
    return `<p class="empty" data-chart="${series}" data-points="0">No rows to chart.</p>`;
  const first = points[0] as { at: number };
  const last = points.at(-1) as { at: number };
  const span = Math.max(1, last.at - first.at);
  const max = Math.max(1, ...points.map((p) => p.value));
  const w = WIDTH - PAD.left - PAD.right;
  const h = HEIGHT - PAD.top - PAD.bottom;
  const x = (at: number) => PAD.left + ((at - first.at) / span) * w;
  const y = (v: number) => PAD.top + h - (v / max) * h;
  const path: string[] = [];
  let previous: number | undefined;
  for (const p of points) {
    const px = x(p.at).toFixed(1);
    if (previous !== undefined) path.push(`${px},${y(previous).toFixed(1)}`);
    path.push(`${px},${y(p.value).toFixed(1)}`);
    previous = p.value;
  }
  const ticks = [0, max / 2, max].map(
    (v) =>
      `<text x="${PAD.left - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${Math.round(v)}</text>` +
      `<line x1="${PAD.left}" x2="${WIDTH - PAD.right}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" class="grid"/>`,
  );
  return `<figure>
<figcaption>${esc(title)}</figcaption>
<svg data-chart="${series}" data-points="${points.length}" viewBox="0 0 ${WIDTH} ${HEIGHT}" width="${WIDTH}" height="${HEIGHT}" role="img" aria-label="${esc(title)}">
${ticks.join('\n')}
<text x="${PAD.left}" y="${HEIGHT - 10}">${esc(time(new Date(first.at)))}</text>
<text x="${WIDTH - PAD.right}" y="${HEIGHT - 10}" text-anchor="end">${esc(time(new Date(last.at)))}</text>
<polyline points="${path.join(' ')}" class="line"/>
</svg>
</figure>`;
}

const STYLE = `
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d2330;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.muted{color:#667}.ok{color:#116b3a}.bad{color:#a4161a;font-weight:600}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{border:1px solid #d8dce4;border-radius:8px;padding:10px 14px;min-width:150px}
.card b{display:block;font-size:22px}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{border-bottom:1px solid #e6e8ee;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f5f6f9;position:sticky;top:0}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.pos{color:#116b3a}td.neg{color:#a4161a}code{font-size:12px}
svg text{font-size:11px;fill:#556}svg .grid{stroke:#e6e8ee}svg .line{fill:none;stroke:#2557d6;stroke-width:2}
figure{margin:0 0 12px}caption{text-align:left;font-weight:600;padding:8px 0 4px}figcaption{font-weight:600;margin-bottom:4px}
.finding{background:#fff3f3;border:1px solid #f0b4b4;border-radius:6px;padding:8px 12px;margin:6px 0}
.warn{background:#fff8e6;border:1px solid #ecd28c;border-radius:6px;padding:8px 12px}`;

/**
 * The statement as one self-contained HTML page: no script, no stylesheet or font to fetch,
 * charts as inline SVG. For a support engineer who never saw SQL: what the user has, what
 * is held, what happened newest first with the balances after each step, and whether the
 * ledger checks out for this user.
 */
export function renderCreditStatementHtml(statement: CreditStatement): string {
  const { user, balance, source, verification } = statement;
  const creditsLive = balance.grants.filter((g) => g.balance === 'free_credits');
  const chatsLive = balance.grants.filter((g) => g.balance === 'free_chat_messages');
  const replica = source.replica
    ? `<p class="warn" data-source="replica">Read on a replica: ${
        source.lagSeconds === null
          ? 'it has replayed nothing yet'
          : `its last replayed change was committed ${source.lagSeconds.toFixed(1)} s before this page was read`
      }${source.caughtUp ? ' (it has replayed all it received)' : ''}. A change made in the last moments may not be shown yet.</p>`
    : '<p class="muted" data-source="primary">Read on the primary.</p>';
  const verify =
    verification === null
      ? '<p class="muted" data-verify="skipped">Not verified (skipped).</p>'
      : verification.ok
        ? `<p class="ok" data-verify="ok">✓ Verified: this user's ${verification.rows} rows are gapless, hash-chained and add up to the balances.</p>`
        : `<p class="bad" data-verify="failed">✗ ${verification.violationCount} problem${verification.violationCount === 1 ? '' : 's'} found: the balances are not fully explained by the trail. Escalate before acting on them.</p>
${verification.violations
  .map(
    (v) =>
      `<div class="finding" data-finding="${esc(v.kind)}"><b>${esc(v.kind)}</b>${v.seq === null ? '' : ` at row ${esc(v.seq)}`}: ${esc(v.detail)}</div>`,
  )
  .join('\n')}`;
  const grants = (list: typeof balance.grants, unit: string) =>
    list.length === 0
      ? `<p class="muted">No live ${unit.replace('-', ' ')} grants.</p>`
      : `<table data-table="grants-${unit}"><caption>${unit === 'credits' ? 'Credits' : 'Chat messages'}</caption><thead><tr><th>Source</th><th>Granted</th><th>Remaining</th><th>Expires</th><th>Granted at</th></tr></thead><tbody>
${list
  .map(
    (g) =>
      `<tr><td>${esc(g.source)}</td><td class="num">${g.amount}</td><td class="num">${g.remaining}</td><td>${g.expiresAt ? esc(time(g.expiresAt)) : 'never'}</td><td>${esc(time(g.createdAt))}</td></tr>`,
  )
  .join('\n')}</tbody></table>`;
  const holds =
    statement.holds.length === 0
      ? '<p class="muted" data-table="holds">No open holds.</p>'
      : `<table data-table="holds"><thead><tr><th>Hold</th><th>Amount</th><th>Feature</th><th>Held at</th><th>Expires</th></tr></thead><tbody>
${statement.holds
  .map(
    (h) =>
      `<tr><td><a href="#tx-${esc(h.id)}"><code>${esc(h.id)}</code></a></td><td class="num">${h.amount}${h.coveredByPlan ? ` (covered by ${esc(h.coveredByPlan)})` : ''}</td><td>${esc(h.featureType)}</td><td>${esc(time(h.createdAt))}</td><td>${esc(time(h.expiresAt))}${h.overdue ? ' <b>overdue: given back at the next write</b>' : ''}</td></tr>`,
  )
  .join('\n')}</tbody></table>`;
  const plans =
    statement.planChanges.length === 0
      ? '<p class="muted">Never changed plan.</p>'
      : `<table data-table="plans"><thead><tr><th>When</th><th>From</th><th>To</th><th>Until</th><th>Why</th><th>By</th></tr></thead><tbody>
${statement.planChanges
  .map(
    (p) =>
      `<tr><td>${esc(time(p.createdAt))}</td><td>${esc(p.fromPlan ?? '—')}</td><td>${esc(p.plan)}</td><td>${esc(time(p.until))}</td><td>${esc(p.reason ?? '')}</td><td>${esc(p.actor ?? '')}</td></tr>`,
  )
  .join('\n')}</tbody></table>`;
  const trail = statement.rows
    .map((r) => {
      const tx = r.transaction;
      const links = [
        tx.refundOf
          ? `refunds <a href="#tx-${esc(tx.refundOf)}">${esc(tx.refundOf.slice(0, 8))}</a>`
          : '',
        tx.holdId && tx.operation !== 'hold'
          ? `closes hold <a href="#tx-${esc(tx.holdId)}">${esc(tx.holdId.slice(0, 8))}</a>`
          : '',
        ...r.refunds.map(
          (f) => `refunded ${f.amount} by <a href="#tx-${esc(f.id)}">${esc(f.id.slice(0, 8))}</a>`,
        ),
      ].filter(Boolean);
      const metadata =
        tx.metadata && Object.keys(tx.metadata).length > 0
          ? `<br><code>${esc(shownMetadata(tx.metadata))}</code>`
          : '';
      return `<tr id="tx-${esc(tx.id)}" data-seq="${tx.seq}" data-credits="${r.credits}" data-chat-messages="${r.chatMessages}"><td class="num">${tx.seq}</td><td>${esc(time(tx.createdAt))}</td><td>${esc(tx.operation)}</td><td>${esc(tx.featureType)}</td><td class="num ${r.change > 0 ? 'pos' : r.change < 0 ? 'neg' : ''}">${r.change === 0 ? '0' : signed(r.change)}</td><td class="num">${r.credits}</td><td class="num">${r.chatMessages}</td><td>${esc(r.description)}${links.length ? `<br><span class="muted">${links.join(' · ')}</span>` : ''}${metadata}</td><td>${esc(tx.actor ?? '')}</td></tr>`;
    })
    .join('\n');
  const cut =
    statement.rowCount > statement.rows.length
      ? `<p class="muted">Showing the newest ${statement.rows.length} of ${statement.rowCount} rows.</p>`
      : '';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>Credits: ${esc(user.email)}</title>
<style>${STYLE}</style></head>
<body>
<h1>Credits of ${esc(user.email)}</h1>
<p class="muted">${user.name ? `${esc(user.name)} · ` : ''}user <code>${esc(user.id)}</code> · since ${esc(time(user.createdAt))} · read ${esc(time(statement.readAt))}</p>
${replica}
<div class="cards">
<div class="card" data-balance="credits">Credits<b>${balance.freeCredits}</b>${balance.heldCredits ? `<span class="muted">${balance.heldCredits} held</span>` : ''}</div>
<div class="card" data-balance="chat-messages">Chat messages<b>${balance.freeChatMessages}</b>${balance.heldChatMessages ? `<span class="muted">${balance.heldChatMessages} held</span>` : ''}</div>
<div class="card" data-plan="${esc(balance.plan.plan)}">Plan<b>${esc(balance.plan.plan)}</b><span class="muted">${balance.plan.unlimited ? 'unlimited: uses are recorded, no balance moves' : 'metered'}${balance.plan.until ? ` · until ${esc(time(balance.plan.until))}` : ''}</span></div>
</div>
<h2>Verification</h2>
${verify}
<h2>Balances over time</h2>
${chart(statement.rows, 'credits', 'Credits after each row')}
${chart(statement.rows, 'chatMessages', 'Chat messages after each row')}
<h2>Where the balances come from</h2>
${grants(creditsLive, 'credits')}
${grants(chatsLive, 'chat-messages')}
<h2>Open holds</h2>
${holds}
<h2>Plan changes</h2>
${plans}
<h2>Trail, newest first</h2>
${cut}
<table data-table="trail"><thead><tr><th>#</th><th>When (UTC)</th><th>Operation</th><th>Feature</th><th>Change</th><th>Credits after</th><th>Chat messages after</th><th>What</th><th>By</th></tr></thead>
<tbody>
${trail}
</tbody></table>
</body></html>
`;
}
