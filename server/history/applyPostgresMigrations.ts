import type pg from 'pg';
import { AdvisoryLock } from './AdvisoryLock.js';
import { pendingMigrations } from './pendingMigrations.js';
import type { PostgresMigration } from './postgresMigrations.js';
import { withTransaction } from './withTransaction.js';

/**
 * Brings the database up to the last of `migrations`, in one transaction that first takes the
 * migrations advisory lock: gateways starting at once wait for each other there, and each reads
 * `schema_migrations` only once it holds the lock, so every migration is applied once. A
 * migration that fails rolls back with everything this call did (PostgreSQL's DDL is
 * transactional). Safe on every open; returns the versions this call applied.
 * A database newer than the list is refused (pendingMigrations).
 */
export async function applyPostgresMigrations(pool: pg.Pool, migrations: readonly PostgresMigration[]): Promise<number[]> {
  return withTransaction(pool, async (client) => {
    await client.query('SELECT pg_advisory_xact_lock($1, 0)', [AdvisoryLock.migrations]);
    await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version INTEGER PRIMARY KEY,
      name TEXT NOT NULL,
      applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )`);
    const { rows } = await client.query<{ version: number }>('SELECT COALESCE(MAX(version), 0)::int AS version FROM schema_migrations');
    const applied: number[] = [];
    for (const migration of pendingMigrations(migrations, rows[0]?.version ?? 0)) {
      await client.query(migration.sql);
      await client.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [migration.version, migration.name]);
      applied.push(migration.version);
    }
    return applied;
  });
}
