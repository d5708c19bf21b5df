import type { TerminalFrame } from '../../shared/protocol.js';
import type { ReplyOutcome } from './ReplyOutcome.js';
import { toErrorFrame } from './toErrorFrame.js';

/** A reply's outcome as its parley.v1 terminal frame. */
export function toTerminalFrame(id: string, outcome: ReplyOutcome): TerminalFrame {
  switch (outcome.kind) {
    case 'finished':
      return {
        type: 'done',
        id,
        stopReason: outcome.stopReason,
        usage: outcome.usage,
        timing: outcome.timing,
        ...(outcome.sources === undefined || outcome.sources.length === 0 ? {} : { sources: outcome.sources.map(({ documentId, name, chunk }) => ({ documentId, name, chunk })) }),
      };
    case 'cancelled':
      return { type: 'cancelled', id };
    case 'failed':
      return toErrorFrame(outcome.error, id) as TerminalFrame;
  }
}
