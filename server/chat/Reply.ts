import type { ReplyOutcome } from './ReplyOutcome.js';
import type { Ticket } from './Scheduler.js';

/** Where an attached reply's events go: one surface's writer (a socket's outbox, an HTTP stream). */
export interface ReplyListener {
  /** The reply waits for a slot at this 1-based position (reported when it changes). */
  queued(reply: Reply, position: number): void;
  /** `reply` holds `bytes` more uncommitted text; the listener takes it with `takePending` when it writes. */
  textPending(reply: Reply, bytes: number): void;
  /** The reply ended; `reply.outcome` is set. Called once per attachment. */
  ended(reply: Reply): void;
  /** The reply moved to another listener of the same owner (a resume elsewhere). */
  released(reply: Reply): void;
}

/**
 * Sees a reply's commits and its end, whoever writes them (a copy for other gateways). It never
 * commits text itself: seqs are assigned only where the text is written.
 */
export interface ReplyTap {
  committed(reply: Reply, piece: CommittedText): void;
  queued(reply: Reply, position: number): void;
  /** The reply ended; text still pending is committed later, by whoever attaches. */
  ended(reply: Reply): void;
}

/** One commit of text: what a writer sends as one piece (a parley.v1 delta, an SSE chunk). */
export interface CommittedText {
  readonly seq: number;
  readonly text: string;
  readonly bytes: number;
}

/**
 * One admitted request's output, independent of any surface, so a reply outlives a dropped
 * connection and can be resumed on another.
 *
 * Invariants:
 * - Text is committed in seqs 0, 1, 2, ... with no gaps when a writer takes it. The text of every
 *   committed seq is kept while the reply is resumable, so a resumed listener gets exactly the
 *   seqs after the last one it saw.
 * - Text produced while no listener is attached, or not yet written, waits in `pending`: nothing
 *   is ever dropped.
 * - The outcome is recorded once; later `finish` calls are ignored.
 * - Past `maxBytes` of text the reply stops being resumable (its committed log is freed).
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
  private result: ReplyOutcome | undefined;
  private listener: ReplyListener | undefined;
  private observer: ReplyTap | undefined;

  constructor(
    readonly id: string,
    readonly userId: string,
    readonly conversationId: string,
    private readonly maxBytes: number,
  ) {}

  get outcome(): ReplyOutcome | undefined {
    return this.result;
  }

  get finished(): boolean {
    return this.result !== undefined;
  }

  get resumable(): boolean {
    return this.resumableLog;
  }

  /** Seq of the last committed text; -1 before the first. */
  get lastSeq(): number {
    return this.committedCount - 1;
  }

  get attached(): ReplyListener | undefined {
    return this.listener;
  }

  /** Text produced and not yet committed. */
  get hasPending(): boolean {
    return this.pendingBytes > 0;
  }

  /** Sets the one tap that sees every commit and the end from now on. */
  tap(observer: ReplyTap | undefined): void {
    this.observer = observer;
  }

  /** Attaches a listener: it is told of pending text and, if the reply has ended, of the end. */
  attach(listener: ReplyListener): void {
    this.listener = listener;
    if (this.pendingBytes > 0) listener.textPending(this, this.pendingBytes);
    if (this.result) listener.ended(this);
  }

  /** No listener: output waits here until one attaches. */
  detach(): void {
    this.listener = undefined;
  }

  /** The committed texts after seq `after`, for a listener resuming from there. */
  committedAfter(after: number): CommittedText[] {
    const texts: CommittedText[] = [];
    for (let seq = after + 1; seq < this.committedCount; seq++) {
      const text = this.committed[seq] as string;
      texts.push({ seq, text, bytes: Buffer.byteLength(text) });
    }
    return texts;
  }

  queued(position: number): void {
    this.queuePosition = position;
    this.listener?.queued(this, position);
    this.observer?.queued(this, position);
  }

  delta(text: string): void {
    if (text.length === 0 || this.result) return;
    const bytes = Buffer.byteLength(text);
    this.pending += text;
    this.pendingBytes += bytes;
    this.totalBytes += bytes;
    if (this.resumableLog && this.totalBytes > this.maxBytes) {
      this.resumableLog = false;
      this.committed.length = 0;
    }
    this.listener?.textPending(this, bytes);
  }

  /** Commits all pending text as the next seq. Called by the writer as it writes. */
  takePending(): CommittedText | undefined {
    if (this.pendingBytes === 0) return undefined;
    const taken = { seq: this.committedCount, text: this.pending, bytes: this.pendingBytes };
    if (this.resumableLog) this.committed.push(this.pending);
    this.committedCount++;
    this.pending = '';
    this.pendingBytes = 0;
    this.observer?.committed(this, taken);
    return taken;
  }

  finish(outcome: ReplyOutcome): void {
    if (this.result) return;
    this.result = outcome;
    this.queuePosition = undefined;
    this.listener?.ended(this);
    this.observer?.ended(this);
  }
}
