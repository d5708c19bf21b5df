/**
 * The history database was written with another key than the one given. Raised by `open()`,
 * before any conversation is read, so a replaced or lost key file stops the server at start
 * instead of failing on every read.
 */
export class HistoryKeyMismatchError extends Error {
  override name = 'HistoryKeyMismatchError';
  readonly code = 'history_key_mismatch' as const;
}
