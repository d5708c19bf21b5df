/** Why a request's AbortSignal fired. Every stop path aborts the same signal. */
export const AbortReason = {
  /** The client sent `cancel`. */
  cancel: 'cancel',
  /** The connection dropped and the reply could not be kept for a resume, or its grace period ended. */
  disconnect: 'disconnect',
  /** The connection was closed for flooding (4429). */
  flood: 'flood',
  /** The wall-clock cap was reached. */
  timeLimit: 'time_limit',
  /** The server is shutting down. */
  shutdown: 'shutdown',
  /** The connection's access token expired without a refresh; the socket closes next (4401). */
  tokenExpired: 'token_expired',
  /** The user logged out or was revoked; the socket closes next (4403). */
  revoked: 'revoked',
  /** An output rule of the content filter refused the reply; it ends with `content_filtered`. */
  contentFiltered: 'content_filter',
} as const;
export type AbortReason = (typeof AbortReason)[keyof typeof AbortReason];

const reasons: ReadonlySet<unknown> = new Set(Object.values(AbortReason));

export function isAbortReason(value: unknown): value is AbortReason {
  return reasons.has(value);
}
