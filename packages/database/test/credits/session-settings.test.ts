import { createTestDatabase } from '@bragdoc/test-postgres';
import { sql } from 'drizzle-orm';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type DatabaseHandle } from '../../src/client.js';
import {
  deductCredits,
  holdCredits,
  refundCredits,
  verifyLedger,
} from '../../src/credits/index.js';
import { createUser } from './fixtures.js';

// Every bound and every hash the ledger computes must be the same whatever the session that
// writes (or verifies) has set: TimeZone, DateStyle, IntervalStyle, extra_float_digits,
// search_path. A timestamptz plus '1 day' is a calendar day in the session's TimeZone, so a
// hold's "within a day" bound was 25 hours under a zone falling back from daylight time, and
// credits:verify (another session, another zone) then reported the hold.

let handle: DatabaseHandle;
let url = '';
let close: () => Promise<void>;

beforeAll(async () => {
  const database = await createTestDatabase({ connect: (u) => createDatabase(u, { max: 2 }) });
  ({ close } = database);
  handle = database;
  url = database.url;
});
afterAll(() => close());

/**
 * A POSIX time zone whose daylight time ends (clocks fall back an hour) `hoursAhead` hours
 * from now, whatever the date: standard time is UTC, daylight time UTC+1, and the rules name
 * days of the year (zero-based, counting 29 February) computed from today.
 */
function zoneFallingBackIn(hoursAhead: number): string {
  const at = new Date(Date.now() + hoursAhead * 3_600_000);
  const dayOfYear = (d: Date) =>
    Math.floor(
      (Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()) -
        Date.UTC(d.getUTCFullYear(), 0, 1)) /
        86_400_000,
    );
  const end = dayOfYear(at);
  // The transition's time is in daylight (local) time: UTC+1.
  const endHour = at.getUTCHours() + 1;
  const start = (end + 180) % 365;
  return `XST0XDT,${start}/2,${end}/${endHour}`;
}

async function session(settings: Record<string, string>) {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  for (const [name, value] of Object.entries(settings))
    await sql`select set_config(${name}, ${value}, false)`;
  return sql;
}

describe('session settings', () => {
  it('the hostile zone used below really makes a calendar day 25 hours long from now', async () => {
    const sql = await session({ TimeZone: zoneFallingBackIn(12) });
    try {
      const [row] = await sql<{ hours: string }[]>`
        select extract(epoch from (now() + interval '1 day') - now()) / 3600 as hours`;
      expect(Number(row?.hours)).toBe(25);
    } finally {
      await sql.end();
    }
  });

  it('a hold expiring in 24 hours 30 minutes is refused under a zone where today has 25 hours', async () => {
    const user = await createUser(handle.db);
    const sql = await session({ TimeZone: zoneFallingBackIn(12) });
    try {
      const error = await sql`
        insert into "CreditTransaction" (user_id, amount, operation, feature_type, hold_expires_at)
        values (${user.id}, 1, 'hold', 'chat_tool_call', clock_timestamp() + interval '24 hours 30 minutes')`.catch(
        (e: unknown) => e as { code?: string },
      );
      expect(error).toMatchObject({ code: 'BC016' });
    } finally {
      await sql.end();
    }
  });

  it('rows written under hostile settings hash and verify the same under others', async () => {
    const user = await createUser(handle.db);
    const hostile = await session({
      TimeZone: zoneFallingBackIn(6),
      DateStyle: 'SQL, DMY',
      IntervalStyle: 'iso_8601',
      extra_float_digits: '-15',
      search_path: 'pg_temp, pg_catalog',
    });
    try {
      await hostile`insert into public."CreditTransaction" (user_id, amount, operation, feature_type, metadata)
                    values (${user.id}, 3, 'deduct', 'chat_tool_call', '{"price": 0.1, "at": "2026-01-01"}')`;
      await hostile`insert into public."CreditTransaction" (user_id, amount, operation, feature_type, hold_expires_at)
                    values (${user.id}, 2, 'hold', 'chat_tool_call', clock_timestamp() + interval '23 hours')`;
    } finally {
      await hostile.end();
    }
    // Settings of another kind for every new connection: the package's own calls and the check.
    const admin = postgres(url, { max: 1, onnotice: () => {} });
    const [{ name } = { name: '' }] = await admin<
      { name: string }[]
    >`select current_database() as name`;
    for (const setting of [
      "timezone = 'Pacific/Chatham'",
      "datestyle = 'German'",
      "intervalstyle = 'sql_standard'",
    ])
      await admin.unsafe(`alter database "${name}" set ${setting}`);
    await admin.end();
    const other = createDatabase(url, { max: 1 });
    try {
      const [zone] = (await other.db.execute(sql`show timezone`)) as unknown as {
        TimeZone: string;
      }[];
      expect(zone?.TimeZone).toBe('Pacific/Chatham');
      const { transaction } = await deductCredits(other.db, {
        userId: user.id,
        amount: 1,
        featureType: 'chat_tool_call',
      });
      await refundCredits(other.db, {
        userId: user.id,
        amount: 1,
        featureType: 'chat_tool_call',
        refundOf: transaction.id,
      });
      await holdCredits(other.db, {
        userId: user.id,
        amount: 1,
        featureType: 'chat_tool_call',
        expiresInMs: 86_400_000,
      });
      const result = await verifyLedger(other.db, { userId: user.id });
      expect(result.violations).toEqual([]);
      expect(result.rows).toBe(7);
    } finally {
      await other.close();
    }
  });
});
