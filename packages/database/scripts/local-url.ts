/**
 * The local embedded PostgreSQL that `pnpm db:migrate` starts when DATABASE_URL is unset
 * (outside CI) and that `pnpm db:dev` keeps running. Trust auth on 127.0.0.1 only, so the
 * URL holds no password. LOCAL_POSTGRES_PORT overrides the port.
 */
export const LOCAL_POSTGRES_PORT = 54329;
export const LOCAL_DATABASE_NAME = 'bragdoc';

export function localDatabaseUrl(port: number = LOCAL_POSTGRES_PORT): string {
  return `postgres://postgres@127.0.0.1:${port}/${LOCAL_DATABASE_NAME}`;
}
