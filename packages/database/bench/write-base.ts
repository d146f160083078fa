import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import postgres from 'postgres';
import { defaultMigrationsFolder, migrate } from '../src/migrate/index.js';
import { backendCpu, commitLoop } from './backend-cpu.js';
import { type Figure, figure, median, percentile, slug } from './stats.js';

/**
 * The ledger as migrated against the ledger as of an earlier migration (`--base-migration
 * 0005`), in the same process: two databases of one server, one migrated to the end and one
 * only up to the base, each write measured on both in alternating rounds as the backend's CPU
 * time (backend-cpu.ts). Runs apart in time on a shared machine differ by more than
 * the change being measured (the same code measured 20–40% apart between runs here); rounds
 * taken side by side do not.
 */

const USER = '00000000-0000-4000-8000-00000000ba5e';
const FEATURE = 'chat_tool_call';
const insert = (columns: string, values: string) =>
  `INSERT INTO "CreditTransaction" (user_id, amount, operation, feature_type${columns})
    VALUES ('${USER}', ${values}) RETURNING * INTO r;`;

/** What one loop iteration writes; each is its own transaction (the loop commits each). */
const WRITES: { name: string; per: string; statement: string }[] = [
  { name: 'deduction', per: 'write', statement: insert('', `1, 'deduct', '${FEATURE}'`) },
  {
    name: 'deduction with a new idempotency key',
    per: 'write',
    statement: insert(', idempotency_key', `1, 'deduct', '${FEATURE}', 'bench-' || i || '-' || n`),
  },
  {
    name: 'deduction, then a capped refund of it',
    per: 'pair',
    statement:
      insert('', `1, 'deduct', '${FEATURE}'`) +
      insert(', refund_of', `1, 'refund', '${FEATURE}', r.id`),
  },
  {
    name: 'hold, then its settlement',
    per: 'pair',
    statement:
      insert(', hold_expires_at', `2, 'hold', '${FEATURE}', now() + interval '1 hour'`) +
      insert(', hold_id', `1, 'settle', '${FEATURE}', r.id`),
  },
];

export async function measureAgainstBase(
  base: { url: string },
  current: { url: string },
  options: { baseMigration: string; rounds: number; perRound: number },
  log: (line: string) => void,
): Promise<Figure[]> {
  const folder = migrationsUpTo(options.baseMigration);
  const sides = [
    { name: 'base', url: base.url },
    { name: 'current', url: current.url },
  ];
  try {
    await migrate(base.url, { migrationsFolder: folder.path });
  } finally {
    rmSync(folder.path, { recursive: true, force: true });
  }
  const sessions = await Promise.all(
    sides.map(async (side) => {
      const sql = postgres(side.url, { max: 1, onnotice: () => {} });
      await sql`insert into "User" (id, email, free_credits, free_chat_messages)
                values (${USER}, 'bench-base@example.com', 2000000000, 0)`;
      await sql`set synchronous_commit = off`;
      return { ...side, sql, cpu: await backendCpu(sql) };
    }),
  );
  const measured = sessions.flatMap((s) => (s.cpu ? [{ ...s, cpu: s.cpu }] : []));
  if (measured.length < sessions.length) {
    log('  against the base: skipped (the server is not on this machine: no per-backend CPU time)');
    await Promise.all(sessions.map((s) => s.sql.end()));
    return [];
  }
  const figures: Figure[] = [];
  // `n` numbers the loops, so that idempotency keys never repeat between them.
  let n = 0;
  const loop = (statement: string, count: number) =>
    commitLoop(statement, count, ` n int := ${++n};`);
  try {
    log(
      `  server µs CPU per write, the ledger as of ${folder.last} (base) and as migrated, side by side ` +
        `(${options.rounds} alternating rounds of ${options.perRound}, one user, synchronous_commit off):`,
    );
    for (const write of WRITES) {
      const samples = new Map<string, number[]>(measured.map((s) => [s.name, []]));
      // Warm both (plans, caches), and ANALYZE so that neither plans on an empty table's guess.
      for (const s of measured) {
        await s.sql.unsafe(loop(write.statement, 200));
        await s.sql`analyze "CreditTransaction", "User", "CreditHold"`;
      }
      for (let round = 0; round < options.rounds; round++) {
        const order = round % 2 === 0 ? measured : [...measured].reverse();
        for (const s of order) {
          const before = s.cpu();
          await s.sql.unsafe(loop(write.statement, options.perRound));
          samples.get(s.name)?.push((s.cpu() - before) / options.perRound);
        }
      }
      const a = samples.get('base') ?? [];
      const b = samples.get('current') ?? [];
      const p25 = (x: number[]) => percentile(x, 25);
      log(
        `    ${write.name} (per ${write.per}): base ${p25(a).toFixed(1)}, as migrated ${p25(b).toFixed(1)}; ` +
          `current/base ${(p25(b) / p25(a)).toFixed(3)} (p25 of the rounds; min ${Math.min(...a).toFixed(1)} → ` +
          `${Math.min(...b).toFixed(1)}, median ${median(a).toFixed(1)} → ${median(b).toFixed(1)})`,
      );
      figures.push({
        ...figure(
          `write_server_cpu_vs_${slug(options.baseMigration)}_${slug(write.name)}`,
          p25(b),
          'us_cpu',
          p25(a),
        ),
        baselineName: `the ledger as of ${folder.last}, same rounds`,
        spread: { min: Math.min(...b), max: Math.max(...b) },
        baselineSpread: { min: Math.min(...a), max: Math.max(...a) },
      });
    }
  } finally {
    await Promise.all(sessions.map((s) => s.sql.end()));
  }
  return figures;
}

/**
 * A copy of the migrations folder whose journal stops at the first migration whose tag
 * starts with `prefix` (drizzle applies what its journal lists).
 */
export function migrationsUpTo(prefix: string): { path: string; last: string } {
  const dir = mkdtempSync(path.join(tmpdir(), 'bragdoc-bench-base-'));
  cpSync(defaultMigrationsFolder, dir, { recursive: true });
  const journalFile = path.join(dir, 'meta', '_journal.json');
  const journal = JSON.parse(readFileSync(journalFile, 'utf8')) as {
    entries: { tag: string }[];
  };
  const end = journal.entries.findIndex((e) => e.tag.startsWith(prefix));
  if (end < 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(
      `--base-migration ${prefix}: no migration's tag starts with it (${journal.entries.map((e) => e.tag).join(', ')})`,
    );
  }
  journal.entries = journal.entries.slice(0, end + 1);
  writeFileSync(journalFile, JSON.stringify(journal, null, 2));
  return { path: dir, last: journal.entries[end]?.tag ?? prefix };
}
