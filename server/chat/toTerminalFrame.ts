import type { TerminalFrame } from '../../shared/protocol.js';
import type { ReplyOutcome } from './ReplyOutcome.js';
import { toErrorFrame } from './toErrorFrame.js';

/** A reply's outcome as its parley.v1 terminal frame. */
export function toTerminalFrame(id: string, outcome: ReplyOutcome): TerminalFrame {
  switch (outcome.kind) {
    case 'finished':
      return { type: 'done', id, stopReason: outcome.stopReason, usage: outcome.usage, timing: outcome.timing };
    case 'cancelled':
      return { type: 'cancelled', id };
    case 'failed':
      return toErrorFrame(outcome.error, id) as TerminalFrame;
  }
}
