import type { ServerFrame, TerminalFrame } from '../../shared/protocol.js';
import { isTerminalFrame } from '../../shared/protocol.js';

export interface AssembledReply {
  readonly text: string;
  readonly lastSeq: number;
  readonly terminals: readonly TerminalFrame[];
}

/**
 * Rebuilds reply `id` from the frames several connections received, in connection order (the
 * first socket, then the one that resumed, ...). Throws on any seq gap or duplicate, so a caller
 * that gets a result knows the text has neither.
 */
export function assembleReply(id: string, connections: ReadonlyArray<readonly ServerFrame[]>): AssembledReply {
  let text = '';
  let lastSeq = -1;
  const terminals: TerminalFrame[] = [];
  for (const frames of connections) {
    for (const frame of frames) {
      if (frame.type === 'delta' && frame.id === id) {
        if (frame.seq !== lastSeq + 1) throw new Error(`reply ${id}: expected seq ${lastSeq + 1}, got ${frame.seq}`);
        lastSeq = frame.seq;
        text += frame.text;
      } else if (isTerminalFrame(frame) && frame.id === id) {
        terminals.push(frame);
      }
    }
  }
  return { text, lastSeq, terminals };
}
