import type postgres from 'postgres';
import { checkBalancesFit, readSeedShape, SEED_OPERATIONS, type SeedShape } from './adopt-shape.js';
import { AdoptionRefusedError } from './errors.js';
import { readMigrations } from './migrations.js';
import {
  compare,
  connect,
  defaultMigrationsFolder,
  disconnect,
  ensureBookkeeping,
  lockInTransaction,
  publicFirst,
  readApplied,
  record,
} from './migrator.js';
import { redactUrl } from './redact.js';

/**
 * `db:adopt`: takes over a live database built the seed plan's way (nullable counters on
 * "User", a seven-column "CreditTransaction" log) in place. It brings the two tables to
 * the shape migrations 0000 and 0001 build, applying 0001 itself, and records both; then
 * `db:migrate` installs the ledger, whose migration 0003 turns the log into the trail
 * (opening rows, running balances, chain). Everything happens in one transaction: a refusal
 * or a failure changes nothing, and a second run finds 0000/0001 recorded and does nothing.
 */

export interface AdoptOptions {
  migrationsFolder?: string;
  /** The zone a `timestamp without time zone` log time is read in. Default `UTC`. */
  logTimeZone?: string;
  /** What a NULL free_credits becomes (NULL meant "use the default"). Default 10. */
  nullCredits?: number;
  /** What a NULL free_chat_messages becomes. Default 20. */
  nullChatMessages?: number;
  /** How long one attempt waits for "User"'s lock (lock_timeout). Default 5 s. */
  lockTimeoutMs?: number;
  /** How long to keep trying to lock both tables before giving up. Default 60 s. */
  lockWaitMs?: number;
  log?: (line: string) => void;
}

export interface AdoptResult {
  /** false when the database was adopted (or migrated) already: nothing was done. */
  adopted: boolean;
  users: number;
  /** Users whose NULL counter became the default; their opening row explains it. */
  nullBalancesDefaulted: number;
  /** Log rows kept, to become trail rows. */
  logRows: number;
  /** Log rows the ledger cannot hold (amount ≤ 0, an operation it does not know), moved out. */
  skippedRows: number;
  /** How long the tables were locked (app writes waited), in ms. */
  lockedMs: number;
  /** On which attempt both tables' locks were taken. */
  attempts: number;
}

/** The key every adopted log row's metadata carries, telling it apart from ledger-written rows. */
export const ADOPTED_METADATA_KEY = 'adopted_from_log';
/** Where rows the ledger cannot hold are kept, with their values. */
export const SKIPPED_ROWS_TABLE = 'drizzle.adoption_skipped_log_row';
/** One row per adoption: when, how, and the counts. */
export const ADOPTION_TABLE = 'drizzle.adoption';

const ADOPTED_MIGRATIONS = 2; // 0000 and 0001

export async function adopt(url: string, options: AdoptOptions = {}): Promise<AdoptResult> {
  const log = options.log ?? (() => {});
  const files = readMigrations(options.migrationsFolder ?? defaultMigrationsFolder);
  const adopted = files.slice(0, ADOPTED_MIGRATIONS);
  const target = redactUrl(url);
  const settings = {
    logTimeZone: options.logTimeZone ?? 'UTC',
    nullCredits: options.nullCredits ?? 10,
    nullChatMessages: options.nullChatMessages ?? 20,
  };
  for (const [name, value] of [
    ['--null-credits', settings.nullCredits],
    ['--null-chat-messages', settings.nullChatMessages],
  ] as const) {
    if (!Number.isInteger(value) || value < 0 || value > 2_147_483_647) {
      throw new AdoptionRefusedError(
        `${name} must be a whole number from 0 to 2147483647, got ${value}.`,
      );
    }
  }

  const sql = connect(url);
  try {
    await checkTimeZone(sql, settings.logTimeZone);
    return await sql.begin(async (tx) => {
      await lockInTransaction(tx, 60_000, log);
      // 0001's statements name the log without a schema, meaning public's.
      await tx.unsafe(publicFirst(true));
      // A client that dies mid-way (a killed deploy job) stops the conversion within a
      // second, rather than leaving the tables locked until its statement ends (PG 14+).
      await tx.unsafe(`
        select set_config('client_connection_check_interval', '1000', true)
          from pg_settings where name = 'client_connection_check_interval'`);
      const rows = await readApplied(tx);
      if (rows.length > 0) return alreadyManaged(tx, files, rows, target, log);
      // Refuse a foreign database before taking any table lock it would not need.
      const before = await readSeedShape(tx, settings.logTimeZone);
      await checkBalancesFit(tx, { ...settings, logTimeWithoutZone: before.logTimeWithoutZone });
      const { attempts, started } = await lockTables(tx, {
        lockTimeoutMs: options.lockTimeoutMs ?? 5000,
        lockWaitMs: options.lockWaitMs ?? 60_000,
      });
      // Read under the locks: what was checked is what is converted.
      const shape = await readSeedShape(tx, settings.logTimeZone);
      const result = await convert(tx, shape, settings);
      // 0001 as its file says it (the log's new columns), then both recorded: the database
      // is now exactly where db:migrate would have left it after 0001.
      for (const statement of adopted.at(-1)?.statements ?? []) await tx.unsafe(statement);
      await ensureBookkeeping(tx);
      for (const migration of adopted) await record(tx, migration);
      const lockedMs = Math.round(performance.now() - started);
      await tx`
        insert into drizzle.adoption (log_time_zone, null_credits, null_chat_messages,
          users, null_balances_defaulted, log_rows, skipped_rows, locked_ms)
        values (${settings.logTimeZone}, ${settings.nullCredits}, ${settings.nullChatMessages},
          ${shape.users}, ${shape.usersWithNullBalance}, ${result.logRows},
          ${result.skippedRows}, ${lockedMs})`;
      log(
        `Adopted ${target}: ${shape.users} user(s), ${shape.usersWithNullBalance} with a NULL ` +
          `balance set to the default (${settings.nullCredits} credits, ` +
          `${settings.nullChatMessages} chat messages); ${result.logRows} log row(s) kept ` +
          `(times read as ${settings.logTimeZone}, metadata marked "${ADOPTED_METADATA_KEY}"); ` +
          `${result.skippedRows} the ledger cannot hold moved to ${SKIPPED_ROWS_TABLE}. ` +
          `The app's writes waited at most ${lockedMs} ms (the tables' locks, taken on attempt ${attempts}).`,
      );
      log(
        `Recorded ${adopted.map((m) => m.name).join(' and ')} as applied; ` +
          `${files.length - adopted.length} pending: run pnpm db:migrate to install the ledger ` +
          '(it turns the log into the trail, with opening and reconciliation rows).',
      );
      return {
        adopted: true,
        users: shape.users,
        nullBalancesDefaulted: shape.usersWithNullBalance,
        ...result,
        lockedMs,
        attempts,
      };
    });
  } finally {
    await disconnect(sql);
  }
}

async function checkTimeZone(sql: postgres.Sql, zone: string): Promise<void> {
  try {
    await sql`select now() at time zone ${zone}`;
  } catch (error) {
    // 22023: time zone "…" not recognized. Anything else (a lost connection) is not the zone's.
    if ((error as { code?: string }).code !== '22023') throw error;
    throw new AdoptionRefusedError(
      `--log-time-zone ${JSON.stringify(zone)} is not a time zone this server knows (see pg_timezone_names).`,
    );
  }
}

async function alreadyManaged(
  tx: postgres.TransactionSql,
  files: ReturnType<typeof readMigrations>,
  rows: Awaited<ReturnType<typeof readApplied>>,
  target: string,
  log: (line: string) => void,
): Promise<AdoptResult> {
  const status = compare(files, rows);
  const applied = status.migrations
    .slice(0, ADOPTED_MIGRATIONS)
    .every((m) => m.state === 'applied');
  if (!applied || status.unknownApplied.length > 0) {
    throw new AdoptionRefusedError(
      `${target} records ${rows.length} migration(s) already, not as db:adopt or db:migrate leaves ` +
        'them: see pnpm db:status.',
    );
  }
  // A database db:migrate built has no adoption record.
  const [record] = await tx<{ exists: boolean }[]>`
    select to_regclass('drizzle.adoption') is not null as exists`;
  const [when] = record?.exists
    ? await tx<{ at: string | null }[]>`select max(adopted_at)::text as at from drizzle.adoption`
    : [];
  log(
    `${target} is managed by db:migrate already${when?.at ? ` (adopted ${when.at})` : ''}: ` +
      'nothing to adopt, nothing changed. Run pnpm db:migrate for pending migrations.',
  );
  return {
    adopted: false,
    users: 0,
    nullBalancesDefaulted: 0,
    logRows: 0,
    skippedRows: 0,
    lockedMs: 0,
    attempts: 0,
  };
}

/**
 * A log row's metadata, marked: an object keeps its keys; anything else, and an object that
 * has the key already (its value is the app's), is kept whole under "value".
 */
function marked(metadata: string): string {
  const tag = `'{"${ADOPTED_METADATA_KEY}": true}'::jsonb`;
  return `CASE WHEN ${metadata} IS NULL THEN ${tag}
    WHEN jsonb_typeof(${metadata}) = 'object' AND NOT ${metadata} ? '${ADOPTED_METADATA_KEY}'
      THEN ${metadata} OPERATOR(pg_catalog.||) ${tag}
    ELSE jsonb_build_object('${ADOPTED_METADATA_KEY}', true, 'value', ${metadata}) END`;
}

/**
 * Locks both tables so that the app never deadlocks on them: the app takes them in either
 * order (its UPDATE of "User" then its log INSERT; an INSERT's foreign-key check on "User"
 * while it holds the log), so this never waits while it holds one. Each attempt waits for
 * "User" (lock_timeout), then takes the log only if it is free at once (NOWAIT); when it is
 * not, rolling back to the savepoint lets "User" go, and it tries again after a short pause,
 * until `lockWaitMs`. Returns the attempt that took both, and when its wait began (from
 * then on the app's writes wait).
 */
async function lockTables(
  tx: postgres.TransactionSql,
  options: { lockTimeoutMs: number; lockWaitMs: number },
): Promise<{ attempts: number; started: number }> {
  const deadline = performance.now() + options.lockWaitMs;
  await tx.unsafe(`set local lock_timeout = ${Math.max(1, Math.floor(options.lockTimeoutMs))}`);
  for (let attempt = 1; ; attempt++) {
    const started = performance.now();
    try {
      await tx.savepoint(async (sp) => {
        await sp`lock table "public"."User" in access exclusive mode`;
        await sp`lock table "public"."CreditTransaction" in access exclusive mode nowait`;
      });
      await tx.unsafe('set local lock_timeout to default');
      return { attempts: attempt, started };
    } catch (error) {
      // 55P03: a table was busy (longer than lock_timeout, or at the NOWAIT's instant).
      if ((error as { code?: string }).code !== '55P03') throw error;
      if (performance.now() > deadline) {
        throw new AdoptionRefusedError(
          `The app's transactions kept "User" or "CreditTransaction" busy for ${options.lockWaitMs} ms ` +
            `(${attempt} attempts): run db:adopt again when traffic is lower, or find the long ` +
            'transaction holding them (pg_stat_activity).',
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 10 + Math.random() * 40));
    }
  }
}

/** A log row the ledger cannot hold: no amount to move, or an operation it does not know. */
function cannotHold(row: '' | 'NEW.'): string {
  return `${row}amount <= 0 OR NOT (${row}operation::text = ANY ('{${SEED_OPERATIONS.join(',')}}'::text[]))`;
}

/** Why such a row stayed out of the trail, as drizzle.adoption_skipped_log_row says it. */
function skipReason(row: '' | 'NEW.'): string {
  return `CASE WHEN ${row}amount <= 0 THEN 'amount_not_positive' ELSE 'operation_not_in_seed' END`;
}

const quote = (value: string) => `'${value.replaceAll("'", "''")}'`;

async function convert(
  tx: postgres.TransactionSql,
  shape: SeedShape,
  settings: { logTimeZone: string; nullCredits: number; nullChatMessages: number },
): Promise<{ logRows: number; skippedRows: number }> {
  const instant = shape.logTimeWithoutZone
    ? `(created_at AT TIME ZONE ${quote(settings.logTimeZone)})`
    : 'created_at';

  await tx`create schema if not exists drizzle`;
  await tx`
    create table if not exists drizzle.adoption (
      adopted_at timestamptz primary key default now(),
      log_time_zone text not null,
      null_credits integer not null,
      null_chat_messages integer not null,
      users integer not null,
      null_balances_defaulted integer not null,
      log_rows bigint not null,
      skipped_rows bigint not null,
      locked_ms integer not null
    )`;
  // The log's rows as they were (created_at as the instant it meant), and why each stayed out.
  await tx`
    create table if not exists drizzle.adoption_skipped_log_row (
      id uuid primary key,
      user_id uuid not null,
      amount integer not null,
      operation text not null,
      feature_type text not null,
      metadata jsonb,
      created_at timestamptz not null,
      reason text not null
    )`;
  const skipped = await tx.unsafe(`
    INSERT INTO drizzle.adoption_skipped_log_row
    SELECT id, user_id, amount, operation::text, feature_type::text, metadata, ${instant},
           ${skipReason('')}
      FROM "public"."CreditTransaction" WHERE ${cannotHold('')}`);
  await tx.unsafe(`DELETE FROM "public"."CreditTransaction" WHERE ${cannotHold('')}`);

  // NULL meant "never initialised, use the default": the default is now the balance, and
  // 0003's opening row explains it.
  await tx`
    update "public"."User"
       set free_credits = coalesce(free_credits, ${settings.nullCredits}),
           free_chat_messages = coalesce(free_chat_messages, ${settings.nullChatMessages})
     where free_credits is null or free_chat_messages is null`;
  const userHas = (name: string) => shape.userColumns.some((c) => c.name === name);
  const userChanges = [
    'ALTER COLUMN free_credits SET DEFAULT 10',
    'ALTER COLUMN free_credits SET NOT NULL',
    'ALTER COLUMN free_chat_messages SET DEFAULT 20',
    'ALTER COLUMN free_chat_messages SET NOT NULL',
    'ADD CONSTRAINT "user_free_credits_non_negative" CHECK (free_credits >= 0)',
    'ADD CONSTRAINT "user_free_chat_messages_non_negative" CHECK (free_chat_messages >= 0)',
    // The ledger dates a user's opening rows by created_at and sets updated_at on each change.
    ...(userHas('created_at')
      ? []
      : ['ADD COLUMN created_at timestamp (3) with time zone DEFAULT now() NOT NULL']),
    ...(userHas('updated_at')
      ? []
      : ['ADD COLUMN updated_at timestamp (3) with time zone DEFAULT now() NOT NULL']),
  ];
  await tx.unsafe(`ALTER TABLE "public"."User" ${userChanges.join(', ')}`);

  // The seed's indexes (0000's), in case the app dropped one: the clustering below uses one.
  await tx.unsafe(
    'CREATE INDEX IF NOT EXISTS "credit_tx_user_id_idx" ON "public"."CreditTransaction" USING btree ("user_id")',
  );
  await tx.unsafe(
    'CREATE INDEX IF NOT EXISTS "credit_tx_created_at_idx" ON "public"."CreditTransaction" USING btree ("created_at")',
  );
  await tx.unsafe(
    'CREATE INDEX IF NOT EXISTS "credit_tx_user_created_at_idx" ON "public"."CreditTransaction" USING btree ("user_id", "created_at")',
  );
  // The log rewritten: its time as the instant it meant, at the ledger's milliseconds, and
  // every row's metadata marked. Then laid out for 0003, which walks the log user by user
  // and updates each row twice: each user's rows together (CLUSTER), on pages a third full
  // so that both updates stay on the row's page (HOT: no new index entries). At 1M rows
  // (bench:adopt) that took 0003 from 88–94 s to 52–58 s, for 5–8 s more here; 0011 resets the
  // fill factor.
  await tx.unsafe(`
    ALTER TABLE "public"."CreditTransaction"
      ALTER COLUMN created_at TYPE timestamp (3) with time zone USING ${instant},
      ALTER COLUMN created_at SET DEFAULT now(),
      ALTER COLUMN metadata TYPE jsonb USING ${marked('metadata')},
      ADD CONSTRAINT "credit_tx_amount_positive" CHECK (amount > 0),
      SET (fillfactor = 30)`);
  await tx.unsafe('CLUSTER "public"."CreditTransaction" USING "credit_tx_user_created_at_idx"');
  await tx.unsafe('ALTER TABLE "public"."CreditTransaction" SET WITHOUT CLUSTER');
  // The app keeps writing its log until db:migrate installs the ledger: those rows are the
  // log's too, and are treated the same way: marked, or, when the ledger cannot hold them,
  // kept with the others moved out (as the table's owner: the app's role may not reach
  // drizzle). It stops once 0003 has numbered the trail ("User".ledger_seq exists: its
  // opening rows are the ledger's), and 0011 drops it.
  await tx.unsafe(`
    CREATE OR REPLACE FUNCTION drizzle.adoption_mark() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    BEGIN
      IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '"public"."User"'::regclass
                    AND attname = 'ledger_seq' AND NOT attisdropped) THEN
        RETURN NEW;
      END IF;
      IF ${cannotHold('NEW.')} THEN
        -- The log's own reference, which a row kept out of it would otherwise skip: only a
        -- user's rows, as before, get in (and the user is kept until this commits).
        PERFORM 1 FROM "public"."User" WHERE id = NEW.user_id FOR KEY SHARE;
        IF NOT FOUND THEN
          RAISE EXCEPTION 'insert or update on table "CreditTransaction" violates foreign key constraint "CreditTransaction_user_id_User_id_fk"'
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = format('Key (user_id)=(%s) is not present in table "User".', NEW.user_id);
        END IF;
        INSERT INTO drizzle.adoption_skipped_log_row
          VALUES (NEW.id, NEW.user_id, NEW.amount, NEW.operation::text, NEW.feature_type::text,
                  NEW.metadata, NEW.created_at, ${skipReason('NEW.')})
          ON CONFLICT (id) DO NOTHING;
        RETURN NULL;
      END IF;
      NEW.metadata := ${marked('NEW.metadata')};
      RETURN NEW;
    END;
    $$`);
  await tx.unsafe('REVOKE EXECUTE ON FUNCTION drizzle.adoption_mark() FROM PUBLIC');
  await tx.unsafe(`
    CREATE TRIGGER "credit_tx_adoption_mark" BEFORE INSERT ON "public"."CreditTransaction"
      FOR EACH ROW EXECUTE FUNCTION drizzle.adoption_mark()`);
  for (const rename of shape.constraintRenames) {
    await tx.unsafe(
      `ALTER TABLE "public"."${rename.table}" RENAME CONSTRAINT "${rename.from.replaceAll('"', '""')}" TO "${rename.to}"`,
    );
  }
  const [first] = await tx<
    { n: number }[]
  >`select count(*)::int as n from "public"."CreditTransaction"`;
  return { logRows: first?.n ?? 0, skippedRows: skipped.count };
}
