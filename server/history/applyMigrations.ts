import type { Database } from 'better-sqlite3';
import type { Migration } from './migrations.js';
import { pendingMigrations } from './pendingMigrations.js';

/**
 * Brings the database up to the last of `migrations`. Each runs in its own write transaction
 * together with the `PRAGMA user_version` that records it, so a migration that fails leaves
 * neither its changes nor its version behind. Applied ones are skipped (checked again inside the
 * transaction, so two processes opening at once apply each migration once), which makes this safe
 * on every open. Returns the versions this call applied.
 * A database newer than the list is refused (pendingMigrations).
 */
export function applyMigrations(db: Database, migrations: readonly Migration[]): number[] {
  const applied: number[] = [];
  for (const migration of pendingMigrations(migrations, userVersion(db))) {
    const ran = db.transaction(() => {
      if (userVersion(db) >= migration.version) return false;
      migration.up(db);
      // PRAGMA takes no bound parameters; the version is an integer checked above.
      db.pragma(`user_version = ${migration.version}`);
      return true;
    }).immediate();
    if (ran) applied.push(migration.version);
  }
  return applied;
}

function userVersion(db: Database): number {
  return db.pragma('user_version', { simple: true }) as number;
}
