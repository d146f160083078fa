import type { TestProject } from 'vitest/node';
import { startTestPostgres, type TestPostgresOptions } from './harness.js';

export type TestPostgresSetupOptions = Omit<TestPostgresOptions, 'log'>;

/**
 * A vitest `globalSetup`: one server and one migrated template per run, handed to the
 * workers through `provide`; the returned teardown drops every database of the run.
 *
 *   // test/global-setup.ts
 *   export default setupTestPostgres({ migrate: (url) => migrate(url), migrationsFolder });
 */
export function setupTestPostgres(options: TestPostgresSetupOptions) {
  return async function setup(project: TestProject): Promise<() => Promise<void>> {
    const started = performance.now();
    const pg = await startTestPostgres(options);
    project.provide('testPostgres', pg.context);
    const { serverMs, templateMs, templateBuilt } = pg.timings;
    const notes = [
      ...pg.server.skipped.map((s) => `skipped ${s}`),
      ...(pg.removed.length > 0
        ? [`removed ${pg.removed.length} leftover(s) of earlier runs`]
        : []),
    ];
    console.log(
      `test-postgres: provider=${pg.server.provider} postgres=${pg.server.version} ` +
        `ready in ${Math.round(performance.now() - started)} ms (server ${Math.round(serverMs)} ms, ` +
        `template ${templateBuilt ? 'built' : 'reused'} in ${Math.round(templateMs)} ms)` +
        notes.map((n) => `\n  ${n}`).join(''),
    );
    return pg.teardown;
  };
}
