import { isTerminalFrame, type ServerFrame } from '../../shared/protocol.js';
import { SendStatus, type Connection } from '../transport/Connection.js';

/** `bytes` is what this item added to `queuedBytes`, so removal subtracts exactly that. */
type Pending = { kind: 'frame'; text: string; bytes: number; ends?: string } | { kind: 'delta'; id: string; text: string; bytes: number };

/**
 * Ordered, backpressure-aware writer for one connection.
 *
 * Invariants:
 * - Frames leave in the order they were produced, per request id.
 * - No delta text is ever dropped: while the socket is backed up, deltas of one request are
 *   merged into one pending delta, so memory grows with at most the text of the replies in
 *   flight (bounded by their token caps) and not with the number of tokens.
 * - `seq` is assigned when a delta is actually written, so it stays gap-free after merging.
 * - Past `maxQueuedBytes` the peer is too slow to serve: `onOverflow` runs (the owner closes).
 */
export class Outbox {
  private readonly queue: Pending[] = [];
  /** For each request id, its delta still waiting in `queue`, if any. */
  private readonly openDelta = new Map<string, Pending & { kind: 'delta' }>();
  private readonly nextSeq = new Map<string, number>();
  private queuedBytes = 0;
  private blocked = false;
  private overflowed = false;

  constructor(
    private readonly connection: Connection,
    private readonly options: { highWaterBytes: number; maxQueuedBytes: number; onOverflow: () => void },
  ) {}

  send(frame: ServerFrame): void {
    const ends = isTerminalFrame(frame) ? frame.id : undefined;
    // Deltas produced after a terminal frame must not merge into one queued before it.
    if (ends !== undefined) this.openDelta.delete(ends);
    const text = JSON.stringify(frame);
    this.enqueue({ kind: 'frame', text, bytes: Buffer.byteLength(text), ends });
  }

  delta(id: string, text: string): void {
    const open = this.openDelta.get(id);
    if (open) {
      const bytes = Buffer.byteLength(text);
      open.text += text;
      open.bytes += bytes;
      this.queuedBytes += bytes;
      this.checkOverflow();
      return;
    }
    const pending: Pending & { kind: 'delta' } = { kind: 'delta', id, text, bytes: Buffer.byteLength(text) };
    if (this.blocked) this.openDelta.set(id, pending);
    this.enqueue(pending);
  }

  /** The transport drained: write what waited. */
  drain(): void {
    this.blocked = false;
    this.flush();
  }

  get pendingBytes(): number {
    return this.queuedBytes;
  }

  private enqueue(pending: Pending): void {
    this.queue.push(pending);
    this.queuedBytes += pending.bytes;
    this.flush();
    this.checkOverflow();
  }

  /** Only text still waiting counts; reported once. */
  private checkOverflow(): void {
    if (this.overflowed || this.queuedBytes <= this.options.maxQueuedBytes) return;
    this.overflowed = true;
    this.options.onOverflow();
  }

  private flush(): void {
    while (!this.blocked && this.queue.length > 0) {
      if (!this.connection.isOpen) {
        this.queue.length = 0;
        this.openDelta.clear();
        this.queuedBytes = 0;
        return;
      }
      const pending = this.queue.shift() as Pending;
      this.queuedBytes -= pending.bytes;
      let text = pending.text;
      if (pending.kind === 'delta') {
        if (this.openDelta.get(pending.id) === pending) this.openDelta.delete(pending.id);
        const seq = this.nextSeq.get(pending.id) ?? 0;
        this.nextSeq.set(pending.id, seq + 1);
        text = JSON.stringify({ type: 'delta', id: pending.id, seq, text: pending.text });
      } else if (pending.ends !== undefined) {
        this.nextSeq.delete(pending.ends);
      }
      const status = this.connection.send(text);
      if (status === SendStatus.backpressure || this.connection.bufferedAmount() >= this.options.highWaterBytes) {
        this.blocked = true;
      }
    }
  }
}
