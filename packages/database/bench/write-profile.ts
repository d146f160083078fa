import postgres from 'postgres';
import { createDatabase } from '../src/client.js';
import { deductCredits } from '../src/credits/index.js';
import { backendCpu, commitLoop } from './backend-cpu.js';
import { type Figure, figure, formatSpread, median, slug } from './stats.js';
import { createBaselineTables } from './writes.js';

/**
 * Where a ledger write's time goes. On the server: `EXPLAIN (ANALYZE, BUFFERS)` of one INSERT
 * (the time of each trigger), auto_explain's plans of the statements the triggers run, and the
 * server's CPU per write with the ledger as migrated, then with one piece of its work taken
 * out at a time (on a throwaway database, restored after), each beside the one-statement CTE
 * measured in the same rounds. On the client: Node's CPU per call, the package's deduction
 * against the CTE through postgres.js. What a piece costs is what taking it out saves; what it
 * buys is the guarantee it was there for (docs/BENCHMARKS.md, "Where a write's time goes").
 */

const USER = '00000000-0000-4000-8000-00000000b0b0';
const FEATURE = 'chat_tool_call';

interface Edit {
  fn: 'credit_tx_prepare' | 'credit_tx_apply' | 'user_ledger_guard';
  from: RegExp;
  to: string;
}

interface Variant {
  name: string;
  /** The guarantee the removed work buys. */
  buys: string;
  edits: Edit[];
}

const NO_INSTALLED_CHECK: Edit[] = [
  {
    fn: 'credit_tx_prepare',
    from: /\(SELECT coalesce\(sum\(CASE[\s\S]*?\) AS triggers/,
    to: '10::bigint AS triggers',
  },
];
const NO_FOREIGN_KEY_CENSUS: Edit[] = [
  {
    fn: 'credit_tx_prepare',
    from: /WHEN t\.tgisinternal THEN\s+CASE WHEN [\s\S]*?THEN 1048576 ELSE 0 END/,
    to: 'WHEN t.tgisinternal THEN 0',
  },
];
const NO_LOCK_TIMEOUT: Edit[] = [
  { fn: 'credit_tx_prepare', from: /\n SET lock_timeout TO '5s'/, to: '' },
];
const NO_LIMIT_READ: Edit[] = [
  {
    fn: 'credit_tx_prepare',
    from: /CASE WHEN NEW\.operation IN \('deduct', 'hold'\) THEN\s+\(SELECT l\.max_amount[\s\S]*?END AS daily_limit/,
    to: 'NULL::integer AS daily_limit',
  },
];
const NO_GUARD: Edit[] = [
  { fn: 'user_ledger_guard', from: /\nBEGIN\n/, to: '\nBEGIN\n  RETURN NEW;\n' },
];
const NO_HASH: Edit[] = [
  {
    fn: 'credit_tx_prepare',
    from: /NEW\.hash := "credit_ledger"\."credit_tx_hash"\([\s\S]*?\);/,
    to: "NEW.hash := 'x';",
  },
];
const NO_HOLDS: Edit[] = [
  {
    fn: 'credit_tx_prepare',
    from: /\(SELECT min\(h\.expires_at\) FROM "public"\."CreditHold" h WHERE h\.user_id = NEW\.user_id\)/,
    to: 'NULL::timestamptz',
  },
  { fn: 'credit_tx_apply', from: /IF NEW\.operation = 'hold' THEN/, to: 'IF false THEN' },
  { fn: 'credit_tx_apply', from: /ELSIF NEW\.hold_id IS NOT NULL THEN/, to: 'ELSIF false THEN' },
];

const VARIANTS: Variant[] = [
  { name: 'the ledger as migrated', buys: '', edits: [] },
  {
    name: 'without the census',
    buys: 'a write refuses while a ledger trigger is missing or disabled, a foreign one runs inside it, or another role\'s foreign key references the trail or "CreditHold"',
    edits: NO_INSTALLED_CHECK,
  },
  {
    name: 'without the census of foreign keys',
    buys: 'a write refuses while another role\'s foreign key references the trail or "CreditHold"',
    edits: NO_FOREIGN_KEY_CENSUS,
  },
  {
    name: 'without the lock_timeout',
    buys: 'a write waits at most 5 s for a lock another transaction holds on its user or hold',
    edits: NO_LOCK_TIMEOUT,
  },
  {
    name: 'without the daily limit read',
    buys: 'limits per feature and day, as data',
    edits: NO_LIMIT_READ,
  },
  {
    name: 'without the guard on "User"',
    buys: 'no UPDATE of anyone changes a balance without its trail row',
    edits: NO_GUARD,
  },
  { name: 'without the hash chain', buys: 'tamper evidence of every row', edits: NO_HASH },
  {
    name: 'without the hold lookups',
    buys: 'due holds expire on the next write of their user, with no background job',
    edits: NO_HOLDS,
  },
  {
    name: 'without all four',
    buys: '',
    edits: [...NO_INSTALLED_CHECK, ...NO_GUARD, ...NO_HASH, ...NO_HOLDS],
  },
];

// The floor of enforcing a ledger in triggers at all: BEFORE INSERT locks the user and numbers
// the row, AFTER INSERT applies it, the guard does nothing. No checks, no hash, no holds.
const SKELETON = {
  credit_tx_prepare: `
  SELECT free_credits, free_chat_messages, ledger_seq, ledger_hash INTO u
    FROM "public"."User" WHERE id = NEW.user_id FOR NO KEY UPDATE;
  NEW.seq := u.ledger_seq + 1;
  NEW.balance_after := CASE WHEN NEW.feature_type = 'chat_message' THEN u.free_chat_messages ELSE u.free_credits END - NEW.amount;
  NEW.created_at := clock_timestamp();
  NEW.hash := 'x';
  RETURN NEW;`,
  credit_tx_apply: `
  UPDATE "public"."User" SET free_credits = CASE WHEN NEW.feature_type = 'chat_message' THEN free_credits ELSE NEW.balance_after END, free_chat_messages = CASE WHEN NEW.feature_type = 'chat_message' THEN NEW.balance_after ELSE free_chat_messages END, ledger_seq = NEW.seq, ledger_hash = NEW.hash, updated_at = now() WHERE id = NEW.user_id;
  RETURN NULL;`,
  user_ledger_guard: `
  RETURN NEW;`,
};

const cte = `WITH u AS (UPDATE baseline."User" SET free_credits = free_credits - 1, updated_at = now()
    WHERE id = '${USER}' AND free_credits >= 1 RETURNING id, free_credits)
  INSERT INTO baseline."CreditTransaction" (user_id, amount, operation, feature_type, balance_after)
  SELECT id, 1, 'deduct', '${FEATURE}', free_credits FROM u RETURNING * INTO r;`;
const ledgerInsert = `INSERT INTO "CreditTransaction" (user_id, amount, operation, feature_type)
  VALUES ('${USER}', 1, 'deduct', '${FEATURE}') RETURNING * INTO r;`;

export async function measureWriteProfile(
  url: string,
  options: { rounds: number; perRound: number },
  log: (line: string) => void,
): Promise<Figure[]> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  const figures: Figure[] = [];
  const originals = new Map<string, string>();
  try {
    await sql`insert into "User" (id, email, free_credits, free_chat_messages)
              values (${USER}, 'profile@example.com', 2000000000, 0)`;
    await createBaselineTables(sql, [USER]);
    await sql`set synchronous_commit = off`;
    for (const fn of ['credit_tx_prepare', 'credit_tx_apply', 'user_ledger_guard']) {
      const [row] = await sql<{ def: string }[]>`
        select pg_get_functiondef(${`credit_ledger.${fn}()`}::regprocedure) as def`;
      originals.set(fn, row?.def ?? '');
    }

    log('  EXPLAIN (ANALYZE, BUFFERS) of one ledger INSERT:');
    const explained = await sql.unsafe(
      `explain (analyze, buffers) ${ledgerInsert.replace(' INTO r;', '')}`,
    );
    for (const line of explained.map((r) => String(r['QUERY PLAN'])))
      if (/Trigger|Execution Time|Planning Time|Buffers|Insert on/.test(line))
        log(`    ${line.trim()}`);
    await nestedStatements(url, log);

    const cpu = await serverClock(sql);
    log(
      `  server ${cpu.unit} per write (min over ${options.rounds} rounds of ${options.perRound} committed writes, one user, synchronous_commit off):`,
    );
    let asMigrated: number | undefined;
    for (const variant of [...VARIANTS, { name: 'skeleton', buys: '', edits: [] }]) {
      const skeleton = variant.name === 'skeleton';
      const replaced = skeleton ? skeletonDefinitions(originals) : edited(originals, variant.edits);
      if (typeof replaced === 'string') {
        log(`    ${variant.name}: skipped (${replaced})`);
        continue;
      }
      for (const def of replaced) await sql.unsafe(def);
      try {
        const pkg: number[] = [];
        const base: number[] = [];
        for (let round = 0; round < options.rounds; round++) {
          pkg.push(await cpu.perStatement(ledgerInsert, options.perRound));
          base.push(await cpu.perStatement(cte, options.perRound));
        }
        const value = Math.min(...pkg);
        const baseline = Math.min(...base);
        const saved = asMigrated === undefined ? '' : `, ${(asMigrated - value).toFixed(1)} less`;
        if (variant.edits.length === 0 && !skeleton) asMigrated = value;
        const label = skeleton
          ? 'skeleton: lock, number, apply; no check, guard, hash or hold'
          : variant.name;
        log(
          `    ${label}: ${value.toFixed(1)} ${cpu.unit} (median ${median(pkg).toFixed(1)}${saved}); CTE ${baseline.toFixed(1)}; ` +
            `ratio CTE/ledger ${(baseline / value).toFixed(2)}${variant.buys ? ` — buys: ${variant.buys}` : ''}`,
        );
        const name = `write_server_${cpu.unit === 'µs CPU' ? 'cpu' : 'wall'}_${slug(skeleton ? 'skeleton' : variant.name)}`;
        figures.push({
          ...figure(name, value, cpu.unit === 'µs CPU' ? 'us_cpu' : 'us', baseline),
          baselineName: 'one-statement CTE, same rounds',
          spread: { min: value, max: Math.max(...pkg) },
          baselineSpread: { min: baseline, max: Math.max(...base) },
        });
      } finally {
        for (const def of originals.values()) await sql.unsafe(def);
      }
    }
    figures.push(await clientCpu(url, log));
  } finally {
    for (const def of originals.values()) await sql.unsafe(def).catch(() => {});
    await sql.end();
  }
  return figures;
}

/** The definitions with the edits made, or why they could not be (a function changed). */
function edited(originals: Map<string, string>, edits: Edit[]): string[] | string {
  const defs = new Map(originals);
  for (const edit of edits) {
    const def = defs.get(edit.fn) ?? '';
    if (!edit.from.test(def)) return `${edit.fn} no longer has ${edit.from.source.slice(0, 40)}…`;
    defs.set(edit.fn, def.replace(edit.from, edit.to));
  }
  return [...defs.entries()].filter(([fn, def]) => def !== originals.get(fn)).map(([, d]) => d);
}

function skeletonDefinitions(originals: Map<string, string>): string[] | string {
  const out: string[] = [];
  for (const [fn, body] of Object.entries(SKELETON)) {
    const def = originals.get(fn) ?? '';
    const start = def.indexOf('AS $function$');
    if (start < 0) return `${fn}'s definition has no $function$ body`;
    out.push(
      `${def.slice(0, start)}AS $function$\nDECLARE\n  u record;\nBEGIN${body}\nEND;\n$function$`,
    );
  }
  return out;
}

/** The backend's CPU time per statement when the server runs on this machine, wall time otherwise. */
async function serverClock(sql: postgres.Sql) {
  const readCpu = await backendCpu(sql);
  return {
    unit: readCpu ? 'µs CPU' : 'µs',
    perStatement: async (statement: string, n: number) => {
      const cpu0 = readCpu?.() ?? 0;
      const wall0 = performance.now();
      await sql.unsafe(commitLoop(statement, n));
      return readCpu ? (readCpu() - cpu0) / n : ((performance.now() - wall0) * 1000) / n;
    },
  };
}

/** The plans and times of the statements the triggers run, from auto_explain (if it loads). */
async function nestedStatements(url: string, log: (line: string) => void) {
  const notices: string[] = [];
  const sql = postgres(url, { max: 1, onnotice: (n) => notices.push(String(n.message)) });
  try {
    await sql.unsafe(`LOAD 'auto_explain'`);
    await sql.unsafe(`set auto_explain.log_min_duration = 0; set auto_explain.log_analyze = on;
      set auto_explain.log_nested_statements = on; set auto_explain.log_level = notice;
      set auto_explain.log_timing = on; set auto_explain.log_buffers = on`);
    await sql.unsafe(`DO $$ DECLARE r record; BEGIN ${ledgerInsert} END $$`); // warm
    notices.length = 0;
    await sql.unsafe(`DO $$ DECLARE r record; BEGIN ${ledgerInsert} END $$`);
    log('  the statements one ledger INSERT runs (auto_explain, log_nested_statements):');
    for (const notice of notices) {
      const duration = /duration: ([\d.]+) ms/.exec(notice)?.[1];
      const text = /Query Text: ([^\n]+)/.exec(notice)?.[1] ?? '';
      if (duration)
        log(`    ${duration.padStart(7)} ms  ${text.replace(/\s+/g, ' ').slice(0, 110)}`);
    }
  } catch (error) {
    log(`  auto_explain: not available here (${(error as Error).message})`);
  } finally {
    await sql.end();
  }
}

/** Node's CPU per call, 16 concurrent callers: deductCredits against the CTE via postgres.js. */
async function clientCpu(url: string, log: (line: string) => void): Promise<Figure> {
  const handle = createDatabase(url, { max: 16 });
  const sql = postgres(url, { max: 16, onnotice: () => {} });
  const callers = 16;
  const perCaller = 150;
  const run = async (op: () => Promise<unknown>) => {
    const before = process.cpuUsage();
    await Promise.all(
      Array.from({ length: callers }, async () => {
        for (let i = 0; i < perCaller; i++) await op();
      }),
    );
    const used = process.cpuUsage(before);
    return (used.user + used.system) / (callers * perCaller);
  };
  const pkg = () => deductCredits(handle.db, { userId: USER, amount: 1, featureType: FEATURE });
  // Prepared, as the package's own statement is (a tagged template is).
  const base =
    () => sql`WITH u AS (UPDATE baseline."User" SET free_credits = free_credits - 1, updated_at = now()
      WHERE id = ${USER} AND free_credits >= 1 RETURNING id, free_credits)
    INSERT INTO baseline."CreditTransaction" (user_id, amount, operation, feature_type, balance_after)
    SELECT id, 1, 'deduct', ${FEATURE}, free_credits FROM u RETURNING *`;
  try {
    await run(pkg);
    await run(base);
    const a: number[] = [];
    const b: number[] = [];
    for (let round = 0; round < 5; round++) {
      a.push(await run(pkg));
      b.push(await run(base));
    }
    const f = {
      ...figure('write_client_cpu_deduct', Math.min(...a), 'us_cpu', Math.min(...b)),
      baselineName: 'one-statement CTE through postgres.js',
      spread: { min: Math.min(...a), max: Math.max(...a) },
      baselineSpread: { min: Math.min(...b), max: Math.max(...b) },
    };
    log(
      `  Node CPU per call (16 callers, min of 5 rounds): deductCredits ${f.value} µs ${formatSpread(f.spread)}, ` +
        `the CTE through postgres.js ${f.baseline} µs ${formatSpread(f.baselineSpread)}`,
    );
    return f;
  } finally {
    await handle.close();
    await sql.end();
  }
}
