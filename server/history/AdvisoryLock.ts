/**
 * The first key of each kind of PostgreSQL advisory lock Parley takes (the two-key form:
 * `pg_advisory_lock(kind, key)`), so locks of different kinds never collide. Each is below 2^31:
 * the keys are int4.
 */
export const AdvisoryLock = {
  /** Key 0: held by the transaction that applies migrations. */
  migrations: 0x50726c01,
  /** Key: a gateway's presence key, held by its presence session for as long as it runs (PostgresPresence). */
  presence: 0x50726c02,
  /** Key: hashtext(owner id), held by the transaction that checks and adds to an owner's stored documents. */
  ownerDocuments: 0x50726c03,
} as const;
