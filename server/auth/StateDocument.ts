/** What a change of a document decides: the new text (none: leave the document as it is) and what the caller gets. */
export interface DocumentChange<T> {
  readonly text?: string;
  readonly result: T;
}

/**
 * One small document of auth state (the accounts, the API keys), kept as text by a store that
 * knows nothing of its shape: a file in the data dir (FileDocument) or, for gateways sharing
 * state, a Redis key (RedisDocument).
 *
 * Invariant: `update` is a compare-and-set. `change` sees the text as it is now and must be
 * pure (it may run again): its text is written only if nobody wrote in between, so a change can
 * never write back over another writer's (a revocation is never undone by a last-used stamp).
 */
export interface StateDocument {
  /** Where it is kept (a file's path, a Redis key), for messages. */
  readonly name: string;
  /** The text as last written; undefined while the document was never written. */
  read(): Promise<string | undefined>;
  /** Runs `change` on the current text and stores what it returns, atomically against every other writer. */
  update<T>(change: (current: string | undefined) => DocumentChange<T>): Promise<T>;
}

/** Another writer kept the document (a lock held too long, or a compare-and-set lost again and again). */
export class DocumentBusyError extends Error {
  override name = 'DocumentBusyError';
}
