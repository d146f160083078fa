import type postgres from 'postgres';

/**
 * Session advisory locks of the harness, in the two-key form (class, hashtext(name)) so
 * they cannot collide with the application's single-key locks.
 * - BUILD: one run at a time builds, adopts, releases or removes a given template;
 * - USE: held shared by every run using a template, so the last one out drops it;
 * - RUN: held by a run for its lifetime; free means the run is gone and its databases
 *   are leftovers.
 */
export const LockClass = { BUILD: 1_651_663_207, USE: 1_651_663_208, RUN: 1_651_663_209 } as const;
type LockClassValue = (typeof LockClass)[keyof typeof LockClass];

export async function lock(sql: postgres.Sql, cls: LockClassValue, name: string): Promise<void> {
  await sql`select pg_advisory_lock(${cls}, hashtext(${name}))`;
}

export async function tryLock(
  sql: postgres.Sql,
  cls: LockClassValue,
  name: string,
): Promise<boolean> {
  const [row] = await sql<
    { ok: boolean }[]
  >`select pg_try_advisory_lock(${cls}, hashtext(${name})) as ok`;
  return row?.ok ?? false;
}

export async function unlock(sql: postgres.Sql, cls: LockClassValue, name: string): Promise<void> {
  await sql`select pg_advisory_unlock(${cls}, hashtext(${name}))`;
}

export async function lockShared(
  sql: postgres.Sql,
  cls: LockClassValue,
  name: string,
): Promise<void> {
  await sql`select pg_advisory_lock_shared(${cls}, hashtext(${name}))`;
}

export async function unlockShared(
  sql: postgres.Sql,
  cls: LockClassValue,
  name: string,
): Promise<void> {
  await sql`select pg_advisory_unlock_shared(${cls}, hashtext(${name}))`;
}
