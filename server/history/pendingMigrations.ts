/** What every store's migration has: its place in the list and a name for errors. */
export interface VersionedMigration {
  /** 1 for the first, then each one more; the store records the last one applied. */
  readonly version: number;
  readonly name: string;
}

/**
 * The migrations a store at schema version `current` still needs, in order. Checks the list is
 * numbered 1, 2, 3… and refuses a store newer than the list: this code would misread it.
 */
export function pendingMigrations<M extends VersionedMigration>(migrations: readonly M[], current: number): readonly M[] {
  migrations.forEach((migration, index) => {
    if (migration.version !== index + 1) throw new Error(`migration "${migration.name}" has version ${migration.version}, expected ${index + 1}`);
  });
  if (current > migrations.length) {
    throw new Error(`the history database has schema version ${current}, newer than this Parley knows (${migrations.length}); upgrade Parley or restore an older copy`);
  }
  return migrations.slice(current);
}
