import { MaxRetriesPerRequestError } from 'ioredis';

/**
 * What ioredis (and rate-limiter-flexible's readiness check) say when a command could not reach
 * Redis: the socket is gone or not yet back, or Redis did not answer within the command timeout.
 */
const UNREACHABLE_MESSAGES = ["Stream isn't writeable", 'Connection is closed', 'Redis connection is not ready', 'Command timed out'] as const;
const SOCKET_CODES: ReadonlySet<string> = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);

/**
 * Whether a failed Redis command failed because Redis could not be reached, rather than for
 * what the command did. Also true in the moment after a crash before the client has noticed it
 * (its status still `ready`, its socket already unwritable).
 */
export function isRedisUnreachable(error: unknown): boolean {
  if (error instanceof MaxRetriesPerRequestError) return true;
  if (!(error instanceof Error)) return false;
  const { code } = error as NodeJS.ErrnoException;
  if (code !== undefined && SOCKET_CODES.has(code)) return true;
  return UNREACHABLE_MESSAGES.some((message) => error.message.startsWith(message));
}
