import { ErrorCode } from '../../../shared/errorCodes.js';
import type { ErrorFrame, LimitsInfo } from '../../../shared/protocol.js';

/** "12 s", "3 min": how long until a retry is allowed. */
export function formatWait(ms: number): string {
  const seconds = Math.max(1, Math.ceil(ms / 1000));
  if (seconds < 90) return `${seconds} s`;
  return `${Math.ceil(seconds / 60)} min`;
}

/** A refusal from the server, in words a person can act on. */
export function describeError(frame: Pick<ErrorFrame, 'code' | 'message' | 'retryAfterMs'>, limits?: LimitsInfo): string {
  const wait = frame.retryAfterMs === undefined ? '' : ` Try again in ${formatWait(frame.retryAfterMs)}.`;
  switch (frame.code) {
    case ErrorCode.rateLimited:
      return `Rate limit reached.${wait || ' Try again shortly.'}`;
    case ErrorCode.limiterUnavailable:
      return `The server cannot check its rate limits right now.${wait || ' Try again shortly.'}`;
    case ErrorCode.messageTooLong:
      return limits
        ? `Your message is too long: the limit is ${limits.maxTextChars.toLocaleString('en')} characters.`
        : `Your message is too long. ${frame.message}`;
    case ErrorCode.contextOverflow:
      return "Your message is too long for the model's context window.";
    case ErrorCode.queueFull:
      return 'Too many replies are waiting right now. Try again in a moment.';
    case ErrorCode.conversationBusy:
      return 'This conversation already has a reply in progress.';
    case ErrorCode.shuttingDown:
      return 'The server is shutting down. Try again when it is back.';
    case ErrorCode.engineError:
      return 'The model failed on this reply.';
    case ErrorCode.tokenExpired:
      return 'Your sign-in expired during this reply.';
    case ErrorCode.revoked:
      return 'You were signed out during this reply.';
    default:
      return frame.message || 'The server refused this request.';
  }
}
