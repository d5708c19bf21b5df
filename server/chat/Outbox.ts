import type { ServerFrame } from '../../shared/protocol.js';
import { SendStatus, type Connection } from '../transport/Connection.js';
import type { Reply } from './Reply.js';

/** A whole frame, or a marker: "write this reply's pending text here". */
type Pending = { kind: 'frame'; text: string; bytes: number } | { kind: 'reply'; reply: Reply };

/**
 * Ordered, backpressure-aware writer for one connection.
 *
 * Invariants:
 * - Frames leave in the order they were produced.
 * - Delta text lives in its Reply until written. A reply has at most one marker in the queue;
 *   text produced while the socket is backed up joins the reply's pending text, so it leaves as
 *   one merged delta. Memory grows with the text of the replies in flight (bounded by their
 *   token caps), never with the number of tokens, and no text is dropped.
 * - A reply's seq is assigned when its text is written (`Reply.takePending`), so seqs stay
 *   gap-free after merging, and text never written (socket closed, reply moved to another
 *   connection) stays in the reply for a resume.
 * - Past `maxQueuedBytes` the peer is too slow to serve: `onOverflow` runs (the owner closes).
 */
export class Outbox {
  private readonly queue: Pending[] = [];
  /** Replies with a marker in `queue`, and the pending bytes counted for each. */
  private readonly markers = new Map<Reply, number>();
  private queuedBytes = 0;
  private blocked = false;
  private overflowed = false;

  constructor(
    private readonly connection: Connection,
    private readonly options: {
      highWaterBytes: number;
      maxQueuedBytes: number;
      onOverflow: () => void;
      /** Whether `reply` still writes through this outbox (it may have been resumed elsewhere). */
      owns: (reply: Reply) => boolean;
    },
  ) {}

  send(frame: ServerFrame): void {
    const text = JSON.stringify(frame);
    const bytes = Buffer.byteLength(text);
    this.queue.push({ kind: 'frame', text, bytes });
    this.queuedBytes += bytes;
    this.flush();
    this.checkOverflow();
  }

  /** `reply` has `bytes` more text to write; it leaves with the reply's marker. */
  deltaPending(reply: Reply, bytes: number): void {
    const counted = this.markers.get(reply);
    if (counted === undefined) {
      this.markers.set(reply, bytes);
      this.queue.push({ kind: 'reply', reply });
    } else {
      this.markers.set(reply, counted + bytes);
    }
    this.queuedBytes += bytes;
    this.flush();
    this.checkOverflow();
  }

  /** The transport drained: write what waited. */
  drain(): void {
    this.blocked = false;
    this.flush();
  }

  get pendingBytes(): number {
    return this.queuedBytes;
  }

  /** True when nothing waits to be written. */
  get idle(): boolean {
    return this.queue.length === 0;
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
        // Frames for a closed socket are gone; replies keep their unwritten text.
        this.queue.length = 0;
        this.markers.clear();
        this.queuedBytes = 0;
        return;
      }
      const pending = this.queue.shift() as Pending;
      let text: string;
      if (pending.kind === 'frame') {
        this.queuedBytes -= pending.bytes;
        text = pending.text;
      } else {
        const { reply } = pending;
        this.queuedBytes -= this.markers.get(reply) ?? 0;
        this.markers.delete(reply);
        // A reply resumed on another connection takes its pending text with it.
        const taken = this.options.owns(reply) ? reply.takePending() : undefined;
        if (!taken) continue;
        text = JSON.stringify({ type: 'delta', id: reply.id, seq: taken.seq, text: taken.text });
      }
      const status = this.connection.send(text);
      if (status === SendStatus.backpressure || this.connection.bufferedAmount() >= this.options.highWaterBytes) {
        this.blocked = true;
      }
    }
  }
}
