import { ErrorCode } from '../../shared/errorCodes.js';
import { ParleyError } from '../ParleyError.js';
import type { LimitDecision } from './Limiters.js';

/**
 * Every refusal by a limit, whatever the limit and whatever the surface: `rate_limited` (429)
 * with the time to wait, or `limiter_unavailable` (503) when the limiter itself failed, which is
 * a refusal too (fail closed); its message says when the gateways' shared state (`--redis`) is
 * the cause.
 */
export class LimitRefusedError extends ParleyError {
  override name = 'LimitRefusedError';

  constructor(decision: Extract<LimitDecision, { ok: false }>, message: string) {
    super(decision.failed ? ErrorCode.limiterUnavailable : ErrorCode.rateLimited, decision.failed ? failedMessage(decision) : message, {
      httpStatus: decision.failed ? 503 : 429,
      retryAfterMs: decision.retryAfterMs,
    });
  }
}

function failedMessage(decision: Extract<LimitDecision, { ok: false }>): string {
  return decision.sharedStateUnreachable === true
    ? "The servers' shared state (Redis) is unreachable, so new requests are refused until it is back; replies already running go on. Try again shortly."
    : 'Rate limiter unavailable; try again shortly.';
}
