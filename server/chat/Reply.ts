import type { ServerFrame, TerminalFrame } from '../../shared/protocol.js';
import type { Ticket } from './Scheduler.js';

/** Where an attached reply's frames go: one connection's ordered writer. */
export interface ReplyTarget {
  /** Writes a whole frame after everything already queued. */
  send(frame: ServerFrame): void;
  /** `reply` holds `bytes` more uncommitted text; the target takes it with `takePending` when it writes. */
  deltaPending(reply: Reply, bytes: number): void;
  /** The reply ended; its terminal frame has been handed to `send`. */
  settled(reply: Reply): void;
}

/** What `takePending` hands to the writer: one delta frame's worth of text. */
export interface CommittedDelta {
  readonly seq: number;
  readonly text: string;
  readonly bytes: number;
}

/**
 * One accepted request's output, independent of any connection, so a reply outlives a dropped
 * socket and can be resumed on another.
 *
 * Invariants:
 * - Delta seqs are assigned when text is committed (written to a connection): 0, 1, 2, ... with
 *   no gaps. The text of every committed seq is kept while the reply is resumable, so a resumed
 *   client gets exactly the seqs after the last one it saw.
 * - Text produced while no connection is attached, or not yet written, waits in `pending`:
 *   nothing is ever dropped.
 * - The terminal frame is recorded once; later `finish` calls are ignored.
 * - Past `maxBytes` of text the reply stops being resumable (its committed log is freed); a
 *   reply that is not resumable is cancelled when its connection drops.
 */
export class Reply {
  readonly controller = new AbortController();
  ticket: Ticket | undefined;
  /** The last queue position reported, while the reply waits for a slot. */
  queuePosition: number | undefined;
  private readonly committed: string[] = [];
  private committedCount = 0;
  private pending = '';
  private pendingBytes = 0;
  private totalBytes = 0;
  private resumableLog = true;
  private terminalFrame: TerminalFrame | undefined;
  private target: ReplyTarget | undefined;

  constructor(
    readonly id: string,
    readonly userId: string,
    readonly conversationId: string,
    private readonly maxBytes: number,
  ) {}

  get terminal(): TerminalFrame | undefined {
    return this.terminalFrame;
  }

  get finished(): boolean {
    return this.terminalFrame !== undefined;
  }

  get resumable(): boolean {
    return this.resumableLog;
  }

  /** Seq of the last delta written to a connection; -1 before the first. */
  get lastSeq(): number {
    return this.committedCount - 1;
  }

  get attachedTarget(): ReplyTarget | undefined {
    return this.target;
  }

  attach(target: ReplyTarget): void {
    this.target = target;
    if (this.pendingBytes > 0) target.deltaPending(this, this.pendingBytes);
    if (this.terminalFrame) {
      target.send(this.terminalFrame);
      target.settled(this);
    }
  }

  /**
   * Attaches a new connection after a drop: `resumed`, the committed deltas after `after`, the
   * queue position, then whatever is pending and the terminal frame if there is one.
   */
  resume(target: ReplyTarget, after: number): void {
    target.send({ type: 'resumed', id: this.id, conversationId: this.conversationId, after });
    for (let seq = after + 1; seq < this.committedCount; seq++) {
      target.send({ type: 'delta', id: this.id, seq, text: this.committed[seq] as string });
    }
    if (this.queuePosition !== undefined && !this.terminalFrame) target.send({ type: 'queued', id: this.id, position: this.queuePosition });
    this.attach(target);
  }

  /** The connection is gone; output waits here until a resume. */
  detach(): void {
    this.target = undefined;
  }

  /** A non-terminal frame (queue position). Not replayed; a resume sends the current position. */
  emit(frame: ServerFrame): void {
    this.target?.send(frame);
  }

  delta(text: string): void {
    if (text.length === 0 || this.terminalFrame) return;
    const bytes = Buffer.byteLength(text);
    this.pending += text;
    this.pendingBytes += bytes;
    this.totalBytes += bytes;
    if (this.resumableLog && this.totalBytes > this.maxBytes) {
      this.resumableLog = false;
      this.committed.length = 0;
    }
    this.target?.deltaPending(this, bytes);
  }

  /** Commits all pending text as the next seq. Called by the writer as it writes. */
  takePending(): CommittedDelta | undefined {
    if (this.pendingBytes === 0) return undefined;
    const taken = { seq: this.committedCount, text: this.pending, bytes: this.pendingBytes };
    if (this.resumableLog) this.committed.push(this.pending);
    this.committedCount++;
    this.pending = '';
    this.pendingBytes = 0;
    return taken;
  }

  finish(terminal: TerminalFrame): void {
    if (this.terminalFrame) return;
    this.terminalFrame = terminal;
    this.queuePosition = undefined;
    if (this.target) {
      this.target.send(terminal);
      this.target.settled(this);
    }
  }
}
