import { readFileSync } from 'node:fs';
import type postgres from 'postgres';

/**
 * A reader of the CPU time (µs) the session's backend has used, from /proc/<pid>/schedstat,
 * when the server runs on this machine (the measure least disturbed by other work on the
 * cores); undefined otherwise.
 */
export async function backendCpu(sql: postgres.Sql): Promise<(() => number) | undefined> {
  const [row] = await sql<{ pid: number }[]>`select pg_backend_pid() as pid`;
  const file = `/proc/${row?.pid}/schedstat`;
  const read = () => Number(readFileSync(file, 'utf8').split(' ')[0]) / 1000;
  try {
    read();
    return read;
  } catch {
    return undefined;
  }
}

/**
 * `statement` run `count` times in a `DO` loop that commits after each, so that each pays
 * what a write in a transaction of its own pays. The statement may use `r` (a record) and
 * `i` (the iteration), and whatever `declarations` adds.
 */
export const commitLoop = (statement: string, count: number, declarations = '') =>
  `DO $$ DECLARE r record;${declarations} BEGIN FOR i IN 1..${count} LOOP ${statement} COMMIT; END LOOP; END $$`;
