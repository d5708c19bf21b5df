import { hasPostgres, startPostgres, type TestPostgres } from './startPostgres.js';

/**
 * Why a suite that needs PostgreSQL cannot run here, or undefined when it can. In CI a missing
 * PostgreSQL is a failure, not a skip.
 */
export function postgresUnavailable(suite: string): string | undefined {
  if (hasPostgres()) return undefined;
  if (process.env.CI) throw new Error(`${suite} needs PostgreSQL; .ci/run installs it`);
  return 'needs PostgreSQL (apt-get install postgresql); skipped outside CI';
}

/** One PostgreSQL server for a test file, started when a suite first asks for a database; close() in the file's after(). */
export function lazyPostgres(): { createDatabase(): Promise<string>; close(): Promise<void> } {
  let server: Promise<TestPostgres> | undefined;
  return {
    async createDatabase() {
      server ??= startPostgres();
      return (await server).createDatabase();
    },
    async close() {
      const started = server;
      server = undefined;
      await (await started)?.close();
    },
  };
}
