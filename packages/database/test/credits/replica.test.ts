import {
  findDebianPostgres,
  type ReplicatedPair,
  startReplicatedPair,
} from '@bragdoc/test-postgres';
import { sql } from 'drizzle-orm';
import { withReplicas } from 'drizzle-orm/pg-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type Database } from '../../src/client.js';
import {
  ConnectionLostError,
  CreditsError,
  deductCredits,
  getCreditBalance,
  getCreditStatement,
  getCreditUsage,
  grantCredits,
  holdCredits,
  listCreditTransactions,
  verifyLedger,
} from '../../src/credits/index.js';
import { rowsOf } from '../../src/credits/prepared.js';
import { migrate } from '../../src/migrate/index.js';
import { runScript } from '../run-script.js';
import { buildStory, type Story } from './story.js';

// The embedded run uses a pair of the embedded PostgreSQL 17 (the standby a copy of the
// stopped primary's data directory); the run against the machine's server (TEST_DATABASE_URL)
// a pair of its Debian binaries (the standby from pg_basebackup). Never that shared server.
const source = process.env.TEST_DATABASE_URL ? 'debian' : 'embedded';
const debian = findDebianPostgres();
const missing = source === 'debian' && 'missing' in debian ? debian.missing : undefined;
if (missing) console.warn(`replica.test.ts: skipped: ${missing}`);

let pair: ReplicatedPair;
let primary: { db: Database; close: () => Promise<void> };
let replica: { db: Database; close: () => Promise<void> };
let story: Story;

const count = async (db: Database, userId: string) =>
  rowsOf<{ n: number }>(
    await db.execute(
      sql`select count(*)::int as n from "CreditTransaction" where user_id = ${userId}`,
    ),
  )[0]?.n;

describe.skipIf(missing !== undefined)(`reads on a streaming replica (${source})`, () => {
  beforeAll(async () => {
    pair = await startReplicatedPair(source);
    await migrate(pair.primaryUrl);
    primary = createDatabase(pair.primaryUrl, { max: 4 });
    replica = createDatabase(pair.replicaUrl, { max: 4 });
    story = await buildStory(primary.db);
    await pair.caughtUp();
  }, 120_000);
  afterAll(async () => {
    await primary?.close();
    await replica?.close();
    await pair?.stop();
  });

  it('is a real standby: in recovery, streaming from the primary', async () => {
    const [row] = rowsOf<{ recovery: boolean; status: string }>(
      await replica.db.execute(
        sql`select pg_is_in_recovery() as recovery, (select status from pg_stat_wal_receiver) as status`,
      ),
    );
    expect(row).toEqual({ recovery: true, status: 'streaming' });
  });

  it('serves history, usage figures, the statement and verification as the primary does', async () => {
    const page = { userId: story.userId, limit: 100 };
    expect(await listCreditTransactions(replica.db, page)).toEqual(
      await listCreditTransactions(primary.db, page),
    );
    const range = { from: new Date(Date.now() - 3_600_000), to: new Date(Date.now() + 60_000) };
    expect(await getCreditUsage(replica.db, { ...range, userId: story.userId })).toEqual(
      await getCreditUsage(primary.db, { ...range, userId: story.userId }),
    );
    expect(await getCreditUsage(replica.db, range)).toEqual(
      await getCreditUsage(primary.db, range),
    );
    expect((await verifyLedger(replica.db)).ok).toBe(true);
    const onReplica = await getCreditStatement(replica.db, { user: story.email });
    const onPrimary = await getCreditStatement(primary.db, { user: story.email });
    expect(onReplica.rows).toEqual(onPrimary.rows);
    expect(onReplica.balance).toEqual(onPrimary.balance);
    expect(onReplica.source).toMatchObject({ replica: true, caughtUp: true });
    expect(onReplica.source.lagSeconds).toBeGreaterThanOrEqual(0);
    expect(onPrimary.source.replica).toBe(false);
  });

  it('computes due expiries on a balance read without writing: the overdue hold and an expired grant', async () => {
    const u = await buildStory(primary.db, 'Due');
    // A write gives back the story's overdue hold: a new one is due after the last write.
    // Both fall due seconds later, so the grant's write comes before the hold is due even on
    // a busy machine.
    const hold = await holdCredits(primary.db, {
      userId: u.userId,
      amount: 1,
      featureType: 'chat_tool_call',
      expiresInMs: 3000,
    });
    const grant = await grantCredits(primary.db, {
      userId: u.userId,
      amount: 7,
      source: 'promotional',
      expiresAt: new Date(Date.now() + 3000),
    });
    await pair.caughtUp();
    const due = Math.max(+hold.expiresAt, +(grant.transaction.grantExpiresAt ?? 0)) + 50;
    while (Date.now() < due) await new Promise((r) => setTimeout(r, 100));
    const rows = await count(replica.db, u.userId);
    const balance = await getCreditBalance(replica.db, u.userId);
    // Computed: the 7 expired credits are not counted; the overdue hold still is (held).
    expect(balance).toMatchObject({ freeCredits: 24, heldCredits: 6 });
    expect(balance.grants.every((g) => g.expiresAt === null || g.expiresAt > new Date())).toBe(
      true,
    );
    expect(await count(primary.db, u.userId)).toBe(rows);
    // The primary's balance read writes them: the grant's expiry and the hold's.
    expect(await getCreditBalance(primary.db, u.userId)).toMatchObject({
      freeCredits: 25,
      heldCredits: 5,
    });
    expect(await count(primary.db, u.userId)).toBe((rows ?? 0) + 2);
  });

  it('refuses a write with a typed error and writes nothing; the same write on the primary reaches it', async () => {
    const rows = await count(primary.db, story.userId);
    const error = await deductCredits(replica.db, {
      userId: story.userId,
      amount: 1,
      featureType: 'chat_tool_call',
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CreditsError);
    expect(error).toMatchObject({ code: 'READ_ONLY_DATABASE' });
    expect(await count(primary.db, story.userId)).toBe(rows);
    const done = await deductCredits(primary.db, {
      userId: story.userId,
      amount: 1,
      featureType: 'chat_tool_call',
    });
    await pair.caughtUp();
    const statement = await getCreditStatement(replica.db, { user: story.userId, limit: 1 });
    expect(statement.rows[0]?.transaction.id).toBe(done.transaction.id);
  });

  it("through drizzle's withReplicas: writes and balance reads on its primary, history and statements on its replica", async () => {
    const both = withReplicas(primary.db, [replica.db]);
    const change = {
      userId: story.userId,
      amount: 1,
      featureType: 'chat_tool_call' as const,
      idempotencyKey: `replicated-${Date.now()}`,
    };
    const first = await deductCredits(both, change);
    // The retry's lookup of the first result reads the primary, which has it.
    const retry = await deductCredits(both, change);
    expect(retry).toMatchObject({ replayed: true, transaction: { id: first.transaction.id } });
    expect((await getCreditBalance(both, story.userId)).freeCredits).toBe(first.balance);
    expect((await getCreditStatement(both, { user: story.userId })).source.replica).toBe(true);
  });

  it("credits:trail on the replica's URL says so, with its lag, in text and on the page", async () => {
    const text = await runScript('scripts/credits-trail.ts', [story.email], {
      env: { DATABASE_URL: pair.replicaUrl },
    });
    expect(text.stderr).toBe('');
    expect(text.code).toBe(0);
    expect(text.stdout).toContain('on a replica');
    expect(text.stdout).toMatch(
      /replica lag: its last replayed change was committed \d+\.\d s before this read/,
    );
    const json = await runScript('scripts/credits-trail.ts', [story.email, '--json'], {
      env: { DATABASE_URL: pair.replicaUrl },
    });
    expect(JSON.parse(json.stdout).source).toMatchObject({ replica: true });
  });

  it("credits:verify checks the ledger on the replica's URL", async () => {
    const result = await runScript('scripts/credits-verify.ts', [], {
      env: { DATABASE_URL: pair.replicaUrl },
    });
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^credits:verify: OK/);
  });

  it('after the primary stops, the promoted replica takes the writes and still verifies; the old URL fails typed', async () => {
    const before = await getCreditBalance(primary.db, story.userId);
    await pair.caughtUp();
    await pair.failOver();
    const lost = await getCreditBalance(primary.db, story.userId).catch((e: unknown) => e);
    expect(lost).toBeInstanceOf(ConnectionLostError);
    // The promoted server: no longer in recovery, every committed change there, writable.
    expect(await getCreditBalance(replica.db, story.userId)).toEqual(before);
    const written = await deductCredits(replica.db, {
      userId: story.userId,
      amount: 1,
      featureType: 'chat_tool_call',
    });
    expect(written.balance).toBe(before.freeCredits - 1);
    expect((await verifyLedger(replica.db)).ok).toBe(true);
    expect((await getCreditStatement(replica.db, { user: story.userId })).source.replica).toBe(
      false,
    );
  });
});
