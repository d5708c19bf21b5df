/** Why a request's AbortSignal fired. Every stop path aborts the same signal. */
export const AbortReason = {
  /** The client sent `cancel`. */
  cancel: 'cancel',
  /** The connection closed. */
  disconnect: 'disconnect',
  /** The wall-clock cap was reached. */
  timeLimit: 'time_limit',
  /** The server is shutting down. */
  shutdown: 'shutdown',
  /** The connection's access token expired without a refresh; the socket closes next (4401). */
  tokenExpired: 'token_expired',
  /** The user logged out or was revoked; the socket closes next (4403). */
  revoked: 'revoked',
} as const;
export type AbortReason = (typeof AbortReason)[keyof typeof AbortReason];
