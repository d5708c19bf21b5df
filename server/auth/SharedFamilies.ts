import type { FamilyRecord } from './SessionStore.js';

/**
 * Refresh sessions (families) kept where every gateway sees them (RedisFamilies), so a session
 * begun on one gateway refreshes on any. SessionStore keeps its own map as a cache of them.
 */
export interface SharedFamilies {
  /** The family as stored now; undefined when it is unknown or gone. */
  load(family: string): Promise<FamilyRecord | undefined>;
  /**
   * Compare-and-set of one family: `change` sees it as stored now and must be pure (it may run
   * again); its `record` is written only if no other gateway wrote the family in between.
   */
  update<T>(family: string, change: (record: FamilyRecord | undefined) => { readonly record?: FamilyRecord; readonly result: T }): Promise<T>;
  /** Stores a new family and indexes it under its user; past `maxPerUser`, the user's oldest families go. */
  add(family: string, record: FamilyRecord, maxPerUser: number): Promise<void>;
  /** Ids of the user's stored families. */
  familiesOf(userId: string): Promise<string[]>;
}
