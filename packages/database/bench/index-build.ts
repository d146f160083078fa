import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import postgres from 'postgres';
import { createDatabase } from '../src/client.js';
import { deductCredits } from '../src/credits/index.js';
import { defaultMigrationsFolder, migrate } from '../src/migrate/index.js';
import { appendMigration } from '../src/migrate/journal.js';
import { type Figure, figure, percentile } from './stats.js';

const CLIENTS = 16;

export interface IndexBuildScenario {
  name: 'none' | 'plain' | 'concurrently';
  /** How long the migration ran (for `none`, the window measured). */
  windowMs: number;
  deductions: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

/**
 * 16 clients deduct credits in a loop while this package's migrator adds an index to the
 * (seeded) "CreditTransaction": a plain CREATE INDEX, which holds a SHARE lock for the whole
 * build and so blocks every deduction's INSERT, and CREATE INDEX CONCURRENTLY, which does not;
 * beside a window of the same length with no migration. Latencies of the deductions that
 * started inside each window.
 */
export async function measureIndexBuild(
  url: string,
  log: (line: string) => void,
): Promise<IndexBuildScenario[]> {
  const admin = postgres(url, { max: 1, onnotice: () => {} });
  const { db, close } = createDatabase(url, { max: CLIENTS });
  const scratch = mkdtempSync(path.join(tmpdir(), 'bragdoc-bench-index-'));
  let stop = false;
  let clients: Promise<void>[] = [];
  try {
    const users = (
      await admin<{ id: string }[]>`
        insert into "User" (email, free_credits, free_chat_messages)
        select 'index-bench-' || n || '@example.com', 1000000000, 0
        from generate_series(1, ${CLIENTS}) n returning id`
    ).map((r) => r.id);

    const samples: { startedAt: number; ms: number }[] = [];
    // A deduction that fails is counted and printed, not thrown: a client that threw would
    // end the run's wait for the others, whose calls then fail on a closed pool.
    const failures = new Map<string, number>();
    clients = users.map(async (userId) => {
      while (!stop) {
        const startedAt = performance.now();
        try {
          await deductCredits(db, { userId, amount: 1, featureType: 'chat_tool_call' });
          samples.push({ startedAt, ms: performance.now() - startedAt });
        } catch (error) {
          const key =
            `${(error as { code?: string }).code ?? ''} ${(error as Error).message}`.slice(0, 200);
          failures.set(key, (failures.get(key) ?? 0) + 1);
        }
      }
    });
    const window = (name: IndexBuildScenario['name'], from: number, to: number) => {
      const inside = samples
        .filter((s) => s.startedAt >= from && s.startedAt < to)
        .map((s) => s.ms);
      return {
        name,
        windowMs: to - from,
        deductions: inside.length,
        p50Ms: percentile(inside, 50),
        p99Ms: percentile(inside, 99),
        maxMs: inside.reduce((max, ms) => Math.max(max, ms), Number.NEGATIVE_INFINITY),
      };
    };

    const build = async (name: 'plain' | 'concurrently') => {
      const folder = path.join(scratch, name);
      cpSync(defaultMigrationsFolder, folder, { recursive: true });
      const index = `bench_${name}_idx`;
      // Serves a per-feature report over time; any index on the big table costs the same.
      const statement =
        name === 'plain'
          ? `CREATE INDEX "${index}" ON "CreditTransaction" ("feature_type", "created_at")`
          : `CREATE INDEX CONCURRENTLY "${index}" ON "CreditTransaction" ("feature_type", "created_at")`;
      const tag = appendMigration(folder, index, [statement]);
      const from = performance.now();
      await migrate(url, { migrationsFolder: folder });
      const to = performance.now();
      // Leave the table as it was for the next scenario.
      await admin.unsafe(`drop index "${index}"`);
      await admin`delete from drizzle.__drizzle_migrations where hash = (
        select hash from drizzle.__drizzle_migrations order by id desc limit 1)`;
      log(`  ${tag}: ${Math.round(to - from)} ms`);
      return { from, to };
    };

    await new Promise((resolve) => setTimeout(resolve, 1000)); // warm up
    const results: IndexBuildScenario[] = [];
    const plain = await build('plain');
    results.push(window('plain', plain.from, plain.to));
    const concurrently = await build('concurrently');
    results.push(window('concurrently', concurrently.from, concurrently.to));
    const noneFrom = performance.now();
    const length = Math.max(plain.to - plain.from, concurrently.to - concurrently.from);
    await new Promise((resolve) => setTimeout(resolve, length));
    results.push(window('none', noneFrom, performance.now()));
    stop = true;
    await Promise.all(clients);
    for (const [message, count] of failures) log(`  ${count} deductions failed: ${message}`);
    return results;
  } finally {
    stop = true;
    await Promise.allSettled(clients);
    rmSync(scratch, { recursive: true, force: true });
    await close();
    await admin.end();
  }
}

/** Runs measureIndexBuild, prints each scenario, and returns its figures (beside no migration). */
export async function indexBuildFigures(
  url: string,
  rows: number,
  log: (line: string) => void,
): Promise<Figure[]> {
  log(
    `deductions of ${CLIENTS} clients while db:migrate adds an index to the ${rows.toLocaleString('en')}-row "CreditTransaction":`,
  );
  const scenarios = await measureIndexBuild(url, log);
  const none = scenarios.find((r) => r.name === 'none');
  const figures: Figure[] = [];
  for (const r of scenarios) {
    log(
      `  ${r.name.padEnd(12)} window ${Math.round(r.windowMs)} ms, ${r.deductions} deductions: ` +
        `p50 ${r.p50Ms.toFixed(1)} ms, p99 ${r.p99Ms.toFixed(1)} ms, max ${r.maxMs.toFixed(1)} ms`,
    );
    if (r.name !== 'none' && none) {
      figures.push(figure(`deduct_p99_during_index_${r.name}`, r.p99Ms, 'ms', none.p99Ms));
      figures.push(figure(`deduct_max_during_index_${r.name}`, r.maxMs, 'ms', none.maxMs));
    }
  }
  return figures;
}
