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
} as const;
export type AbortReason = (typeof AbortReason)[keyof typeof AbortReason];
