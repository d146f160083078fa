import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createTestDatabase } from '@bragdoc/test-postgres';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type Database } from '../../src/client.js';
import { getCreditBalance } from '../../src/credits/index.js';
import { rowsOf } from '../../src/credits/prepared.js';
import { runScript } from '../run-script.js';
import { buildStory, type Story } from './story.js';

let database: Awaited<ReturnType<typeof connectTestDatabase>>;
let db: Database;
let story: Story;
let dir: string;
const env = () => ({ env: { DATABASE_URL: database.url } });
const connectTestDatabase = () =>
  createTestDatabase({ connect: (url) => createDatabase(url, { max: 2 }) });
beforeAll(async () => {
  database = await connectTestDatabase();
  db = database.db;
  story = await buildStory(db);
  dir = mkdtempSync(path.join(tmpdir(), 'credits-trail-'));
});
afterAll(async () => {
  rmSync(dir, { recursive: true, force: true });
  await database.close();
});

const rowsOfUser = async (userId: string) =>
  rowsOf<{ n: number }>(
    await db.execute(
      sql`select count(*)::int as n from "CreditTransaction" where user_id = ${userId}`,
    ),
  )[0]?.n;

describe('pnpm credits:trail', () => {
  it('prints the plan, balances, grants, holds, verification and the trail with running balances', async () => {
    const result = await runScript('scripts/credits-trail.ts', [story.email], env());
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const out = result.stdout;
    expect(out).toContain(`credits:trail: ${story.email} (user ${story.userId}`);
    expect(out).toContain('read ');
    expect(out).toContain('on the primary');
    expect(out).toContain('Plan: free (metered)');
    expect(out).toContain('Credits: 24 (6 held)   Chat messages: 19');
    expect(out).toMatch(new RegExp(`${story.holds.overdue} .*overdue`));
    expect(out).toContain('Verification: ✓ OK');
    expect(out).toMatch(/Trail, newest first \(17 of 17 rows\)/);
    expect(out).toContain('"documentId":"doc-42"');
    expect(out).toMatch(
      new RegExp(
        `Used 3 credits for document generation  \\[${story.deductionId}\\]  refunded 2 by `,
      ),
    );
    // The password of the URL is never printed.
    expect(out).not.toMatch(/:\/\/[^@\s]*:[^@\s]+@/);
  });

  it('--json prints the documented shape, the same figures as the library', async () => {
    const result = await runScript(
      'scripts/credits-trail.ts',
      [story.userId, '--json', '--limit', '5'],
      env(),
    );
    expect(result.code).toBe(0);
    const json = JSON.parse(result.stdout);
    expect(json.format).toBe('bragdoc.credits.statement/1');
    expect(json.user.email).toBe(story.email);
    expect(json.balance).toMatchObject({ freeCredits: 24, heldCredits: 6, freeChatMessages: 19 });
    expect(json.rows).toHaveLength(5);
    expect(json.rowCount).toBe(17);
    expect(json.rows[0]).toMatchObject({ credits: 24, chatMessages: 19, unit: 'credits' });
    expect(typeof json.rows[0].transaction.createdAt).toBe('string');
    expect(json.verification.ok).toBe(true);
    expect(json.source.replica).toBe(false);
  });

  it('--html writes one self-contained page with a chart and the rows', async () => {
    const file = path.join(dir, 'story.html');
    const result = await runScript(
      'scripts/credits-trail.ts',
      [story.email, '--html', file],
      env(),
    );
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(`credits:trail: wrote ${file} (17 rows)`);
    const html = readFileSync(file, 'utf8');
    expect(html).toContain('data-chart="credits" data-points="17"');
    expect(html).toContain('data-verify="ok"');
  });

  it('shows control characters users wrote as escapes: a name or a reason cannot drive the terminal', async () => {
    const u = await buildStory(db, 'Eve\u001b[8m hidden \u001b]52;c;cm0gLXJmIH4K\u0007');
    const result = await runScript('scripts/credits-trail.ts', [u.userId], env());
    expect(result.code).toBe(0);
    // No control character but the line breaks.
    expect([...result.stdout].filter((c) => c < ' ' && c !== '\n')).toEqual([]);
    expect(result.stdout).toContain('Eve\\u001b[8m hidden');
  });

  it('refuses a date that is not one, and a time without its zone', async () => {
    for (const since of ['2026-11-01junk', '2027-02-29', '2026-12-01T10:00']) {
      const result = await runScript(
        'scripts/credits-trail.ts',
        [story.email, '--since', since],
        env(),
      );
      expect(result.code).toBe(2);
      expect(result.stderr).toContain('--since must be an ISO 8601 date');
    }
  });

  it('says in one line, hiding the password, when the server cannot be reached', async () => {
    const result = await runScript('scripts/credits-trail.ts', [story.email], {
      env: { DATABASE_URL: 'postgres://support:S3cret@127.0.0.1:1/nowhere' },
    });
    expect(result.code).toBe(1);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    expect(result.stderr).toMatch(/^credits:trail: .*ECONNREFUSED/);
    expect(result.stderr + result.stdout).not.toContain('S3cret');
    expect(result.stderr + result.stdout).not.toContain(story.email);
  });

  it('refuses in one line an unknown user, a bad flag, and no DATABASE_URL', async () => {
    const unknown = await runScript('scripts/credits-trail.ts', ['nobody@example.com'], env());
    expect(unknown.code).toBe(1);
    expect(unknown.stderr.trim().split('\n')).toEqual([
      'credits:trail: User nobody@example.com does not exist; nothing was written.',
    ]);
    const bad = await runScript('scripts/credits-trail.ts', [story.email, '--limit', 'x'], env());
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--limit must be a positive whole number');
    const none = await runScript('scripts/credits-trail.ts', [story.email]);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('DATABASE_URL');
  });
});

describe('support actions', () => {
  it('credits:refund refunds a deduction once per charge and amount, with who and why, and prints the balance', async () => {
    const u = await buildStory(db, 'Refund');
    const args = [u.deductionId, '--amount', '1', '--reason', 'ticket 381', '--by', 'sam@support'];
    const first = await runScript('scripts/credits-refund.ts', args, env());
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    expect(first.stdout).toContain(`refunded 1 credit of deduct ${u.deductionId}`);
    expect(first.stdout).toContain(`key support-refund:${u.deductionId}:1`);
    // The write first gave back the overdue hold (1), then refunded 1.
    expect(first.stdout).toContain(`${u.email} now has 26 credits (5 held)`);
    const rows = await rowsOfUser(u.userId);
    const again = await runScript('scripts/credits-refund.ts', args, env());
    expect(again.code).toBe(0);
    expect(again.stdout).toContain('already done');
    expect(await rowsOfUser(u.userId)).toBe(rows);
    const [row] = rowsOf<{ actor: string; metadata: unknown }>(
      await db.execute(
        sql`select actor, metadata from "CreditTransaction" where refund_of = ${u.deductionId} order by seq desc limit 1`,
      ),
    );
    expect(row).toEqual({ actor: 'sam@support', metadata: { reason: 'ticket 381' } });
  });

  it("credits:refund refunds a reservation's charge (a settlement)", async () => {
    const u = await buildStory(db, 'Settle');
    const result = await runScript(
      'scripts/credits-refund.ts',
      [u.settlementId, '--amount', '2', '--reason', 'render failed', '--by', 'sam@support'],
      env(),
    );
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(`refunded 2 credits of settle ${u.settlementId}`);
    expect((await getCreditBalance(db, u.userId)).freeCredits).toBe(27);
  });

  it('credits:refund refuses in one line what the ledger refuses, and writes nothing', async () => {
    const u = await buildStory(db, 'Refused');
    const rows = await rowsOfUser(u.userId);
    // The whole deduction (3) when 2 of it were refunded already.
    const over = await runScript(
      'scripts/credits-refund.ts',
      [u.deductionId, '--reason', 'again', '--by', 'sam'],
      env(),
    );
    expect(over.code).toBe(1);
    expect(over.stderr.trim().split('\n')).toHaveLength(1);
    expect(over.stderr).toMatch(/^credits:refund: .*exceed/i);
    const hold = await runScript(
      'scripts/credits-refund.ts',
      [u.holds.open, '--reason', 'x', '--by', 'sam'],
      env(),
    );
    expect(hold.code).toBe(1);
    expect(hold.stderr).toContain('is neither a deduction nor a settlement');
    const noReason = await runScript(
      'scripts/credits-refund.ts',
      [u.deductionId, '--by', 'sam'],
      env(),
    );
    expect(noReason.code).toBe(2);
    expect(noReason.stderr).toContain('--reason is required');
    expect(await rowsOfUser(u.userId)).toBe(rows);
  });

  it('credits:grant grants with a source, prints the key it used, and a retry with that key grants once', async () => {
    const u = await buildStory(db, 'Grant');
    const first = await runScript(
      'scripts/credits-grant.ts',
      [u.email, '15', '--reason', 'outage 2026-12', '--by', 'sam@support'],
      env(),
    );
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    expect(first.stdout).toContain(`granted 15 credits (support, never expiring) to ${u.email}`);
    const key = /rerun with --key (\S+)/.exec(first.stdout)?.[1];
    expect(key).toMatch(/^support-grant:/);
    expect(first.stdout).toContain(`${u.email} now has 40 credits`);
    const retry = await runScript(
      'scripts/credits-grant.ts',
      [u.email, '15', '--reason', 'outage 2026-12', '--by', 'sam@support', '--key', key ?? ''],
      env(),
    );
    expect(retry.code).toBe(0);
    expect(retry.stdout).toContain('already done');
    expect((await getCreditBalance(db, u.userId)).freeCredits).toBe(40);
    const [row] = rowsOf<{ actor: string; source: string; metadata: unknown }>(
      await db.execute(
        sql`select actor, source::text, metadata from "CreditTransaction" where user_id = ${u.userId} and idempotency_key = ${key}`,
      ),
    );
    expect(row).toEqual({
      actor: 'sam@support',
      source: 'support',
      metadata: { reason: 'outage 2026-12' },
    });
  });

  it('credits:grant retried with a retyped reason says it was already done, and grants nothing more', async () => {
    const u = await buildStory(db, 'Retyped');
    const key = `support-grant:${u.userId}`;
    const first = await runScript(
      'scripts/credits-grant.ts',
      [u.email, '5', '--reason', 'goodwill', '--by', 'ann', '--key', key],
      env(),
    );
    expect(first.code).toBe(0);
    const rows = await rowsOfUser(u.userId);
    const retyped = await runScript(
      'scripts/credits-grant.ts',
      [u.email, '5', '--reason', 'goodwill (typo fixed)', '--by', 'ann', '--key', key],
      env(),
    );
    expect(retyped.code).toBe(1);
    expect(retyped.stderr.trim().split('\n')).toHaveLength(1);
    expect(retyped.stderr).toContain(`credits:grant: already done under key ${key}`);
    expect(retyped.stderr).toContain('reason "goodwill", by ann');
    expect(await rowsOfUser(u.userId)).toBe(rows);
  });

  it('credits:grant refuses a bad amount or source in one line', async () => {
    const u = await buildStory(db, 'Bad grant');
    for (const args of [
      [u.email, '-3', '--reason', 'x', '--by', 'y'],
      [u.email, '3', '--reason', 'x', '--by', 'y', '--source', 'allowance'],
      [u.email, '3', '--reason', 'x', '--by', 'y', '--expires', '2001-01-01'],
      [u.email, '3', '--reason', 'x', '--by', 'y', '--expires', '2999-02-29'],
    ]) {
      const result = await runScript('scripts/credits-grant.ts', args, env());
      expect(result.code).not.toBe(0);
      expect(result.stderr.trim().split('\n')).toHaveLength(1);
    }
    // Nothing granted: 24, and the overdue hold's 1 the balance read gives back.
    expect((await getCreditBalance(db, u.userId)).freeCredits).toBe(25);
  });

  it('credits:void-hold releases a stuck hold with who and why, and refuses a second time', async () => {
    const u = await buildStory(db, 'Void');
    const args = [u.holds.open, '--reason', 'job died', '--by', 'sam@support'];
    const first = await runScript('scripts/credits-void-hold.ts', args, env());
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    expect(first.stdout).toContain(
      `released hold ${u.holds.open} of ${u.email}: 5 credits given back`,
    );
    expect(first.stdout).toContain(`${u.email} now has 30 credits`);
    const second = await runScript('scripts/credits-void-hold.ts', args, env());
    expect(second.code).toBe(1);
    expect(second.stderr.trim().split('\n')).toHaveLength(1);
    expect(second.stderr).toMatch(/^credits:void-hold: .*voided/);
  });
});
