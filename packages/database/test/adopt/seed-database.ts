import type postgres from 'postgres';

/**
 * A live database built the way the seed plan builds it, before this package: nullable
 * counters on "User" among the app's own columns, a seven-column "CreditTransaction" log
 * (`timestamp` without time zone, no amount check, the seed's three indexes), the seed's
 * two enums, and an app table of its own. Not this repository's 0000/0001.
 */
export const SEED_SCHEMA = `
  CREATE TYPE "public"."operation_type" AS ENUM ('deduct', 'refund', 'grant');
  CREATE TYPE "public"."feature_type" AS ENUM ('document_generation', 'workstream_clustering', 'chat_tool_call', 'chat_message');
  CREATE TYPE "public"."user_level" AS ENUM ('free', 'basic', 'pro');
  CREATE TABLE "public"."User" (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email varchar(64) NOT NULL,
    password varchar(64),
    name varchar(256),
    level "public"."user_level" NOT NULL DEFAULT 'free',
    stripe_customer_id text,
    free_credits integer,
    free_chat_messages integer,
    created_at timestamp NOT NULL DEFAULT now(),
    updated_at timestamp NOT NULL DEFAULT now()
  );
  CREATE TABLE "public"."CreditTransaction" (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES "public"."User"(id) ON DELETE CASCADE,
    amount integer NOT NULL,
    operation "public"."operation_type" NOT NULL,
    feature_type "public"."feature_type" NOT NULL,
    metadata jsonb,
    created_at timestamp NOT NULL DEFAULT now()
  );
  CREATE INDEX credit_tx_user_id_idx ON "public"."CreditTransaction" (user_id);
  CREATE INDEX credit_tx_created_at_idx ON "public"."CreditTransaction" (created_at);
  CREATE INDEX credit_tx_user_created_at_idx ON "public"."CreditTransaction" (user_id, created_at);
  CREATE TABLE "public"."StripeEvent" (
    id text PRIMARY KEY,
    user_id uuid REFERENCES "public"."User"(id) ON DELETE SET NULL,
    type text NOT NULL,
    payload jsonb NOT NULL,
    received_at timestamp NOT NULL DEFAULT now()
  );
`;

// now() as the UTC wall-clock time a `timestamp without time zone` column holds.
const sqlNowUtc = `(now() at time zone 'UTC')`;

export interface SeedData {
  users: number;
  logRows: number;
  /** PRNG seed of setseed(): the same data on every run. */
  seed?: number;
}

/**
 * Fills the seed database with what a year and a half of the app leaves: a quarter of the
 * users never initialised (NULL counters), balances the log does and does not explain,
 * deductions, uncapped refunds and grants of every feature, metadata objects, NULL and the
 * odd array, microsecond times from many months, and a few rows of amount 0 or less (the seed
 * had no check). Times are UTC wall-clock times, as the seed's `timestamp` column held them,
 * and all in the past whatever today is: users from 600 to 400 days ago, each one's rows in
 * the 399 days after it signed up. Generated in SQL, so a million rows take seconds.
 */
export async function fillSeedDatabase(pool: postgres.Sql, data: SeedData): Promise<void> {
  // One transaction, so that setseed() seeds the session that draws.
  await pool.begin((sql) => fill(sql, data));
}

async function fill(sql: postgres.TransactionSql, data: SeedData): Promise<void> {
  await sql`select setseed(${data.seed ?? 0.42})`;
  await sql.unsafe(`
    insert into "User" (id, email, name, level, stripe_customer_id, free_credits,
                        free_chat_messages, created_at, updated_at)
    select gen_random_uuid(), 'user' || i || '@example.com', 'User ' || i,
           (array['free', 'basic', 'pro'])[1 + (i % 3)]::user_level,
           case when i % 4 = 1 then 'cus_' || md5(i::text) end,
           case when random() < 0.25 then null else floor(random() * 60)::int end,
           case when random() < 0.25 then null else floor(random() * 40)::int end,
           ${sqlNowUtc} - interval '600 days' + random() * interval '200 days',
           ${sqlNowUtc} - random() * interval '100 days'
      from generate_series(1, ${Math.floor(data.users)}) i`);
  await sql`
    insert into "StripeEvent" (id, user_id, type, payload, received_at)
    select 'evt_' || md5(u.id::text), u.id, 'checkout.session.completed',
           jsonb_build_object('customer', u.stripe_customer_id, 'amount_total', 900),
           u.created_at + interval '3 days'
      from "User" u where u.stripe_customer_id is not null`;
  // Rows drawn uniformly over the users (numbered, so each row's user is one lookup), each
  // with its feature and operation; times spread over 18 months from the user's sign-up.
  await sql`
    with numbered as (
      select id, created_at, row_number() over (order by id) - 1 as n from "User"
    ), drawn as (
      select floor(random() * ${data.users})::int as n, random() as kind, random() as op,
             random() as odd, random() as size, random() as at
        from generate_series(1, ${data.logRows})
    )
    insert into "CreditTransaction" (id, user_id, amount, operation, feature_type, metadata, created_at)
    select gen_random_uuid(), u.id,
           case when d.odd < 0.0005 then 0
                when d.odd < 0.001 then -1 - floor(d.size * 5)::int
                when d.kind < 0.4 then 1
                else 1 + floor(d.size * 5)::int end,
           (case when d.op < 0.85 then 'deduct' when d.op < 0.93 then 'refund' else 'grant' end)::operation_type,
           (case when d.kind < 0.4 then 'chat_message'
                 when d.kind < 0.7 then 'document_generation'
                 when d.kind < 0.85 then 'workstream_clustering'
                 else 'chat_tool_call' end)::feature_type,
           case when d.odd > 0.98 then null
                when d.odd > 0.975 then jsonb_build_array('legacy', floor(d.size * 100)::int)
                when d.kind < 0.4 then jsonb_build_object('chatId', md5(d.at::text))
                else jsonb_build_object('documentId', md5(d.size::text), 'model', 'gpt-4o-mini') end,
           u.created_at + d.at * interval '399 days'
      from drawn d join numbered u on u.n = d.n`;
}
