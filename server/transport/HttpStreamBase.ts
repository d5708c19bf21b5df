import type { HttpStream, HttpStreamResponse } from './Transport.js';

export const StreamPhase = {
  /** Writes go to the peer. */
  open: 'open',
  /** `end` was called: the terminating chunk is written; nothing more is. */
  ended: 'ended',
  /** The connection is gone: the peer left, or the transport cut it (shutdown, a failed `start`). */
  cut: 'cut',
} as const;
export type StreamPhase = (typeof StreamPhase)[keyof typeof StreamPhase];

/**
 * The transport-neutral half of an `HttpStream`: the phase, the listeners and the invariants
 * (writes after close are dropped and return false; `onClose` runs exactly once; `onDrain` runs
 * once per backpressure episode). A subclass only translates to its transport and reports
 * `drained()` and `peerLeft()`, and is never asked to touch its response once the phase left `open`.
 */
export abstract class HttpStreamBase implements HttpStream {
  private phase: StreamPhase = StreamPhase.open;
  private needsDrain = false;
  private readonly drainListeners: Array<() => void> = [];
  private readonly closeListeners: Array<(peerLeft: boolean) => void> = [];

  constructor(private readonly onError: (error: unknown, context: string) => void) {}

  /** Writes one chunk; false means buffered beyond the peer's pace (or closed). */
  protected abstract writeChunk(chunk: string): boolean;
  /** Writes the end of the body. */
  protected abstract endResponse(): void;
  /** Drops the connection at once, so the client sees a cut body rather than a complete one. */
  protected abstract cutConnection(): void;
  /** Writes the status line and headers. */
  abstract open(status: number, headers: Readonly<Record<string, string>>): void;

  /**
   * Hands this stream to `response.start`. It is opened with `headers` and kept in `live` until it
   * closes; a peer that left before the head gets a stream that is already closed, so `onClose(true)`
   * still reaches the handler. A `start` that throws cuts the stream.
   */
  startResponse(response: HttpStreamResponse, headers: Readonly<Record<string, string>>, live: Set<HttpStreamBase>, peerGone: boolean): void {
    if (peerGone) {
      this.peerLeft();
    } else {
      this.open(response.status, headers);
      live.add(this);
      this.onClose(() => live.delete(this));
    }
    try {
      response.start(this);
    } catch (error) {
      this.onError(error, 'http stream');
      this.abort();
    }
  }

  get closed(): boolean {
    return this.phase !== StreamPhase.open;
  }

  write(chunk: string): boolean {
    if (this.phase !== StreamPhase.open) return false;
    const written = this.writeChunk(chunk);
    if (!written) this.needsDrain = true;
    return written;
  }

  end(): void {
    if (this.phase !== StreamPhase.open) return;
    this.phase = StreamPhase.ended;
    this.endResponse();
    this.emitClose(false);
  }

  onDrain(listener: () => void): void {
    this.drainListeners.push(listener);
  }

  onClose(listener: (peerLeft: boolean) => void): void {
    if (this.phase === StreamPhase.open) {
      this.closeListeners.push(listener);
      return;
    }
    // Registered after the fact (the peer left before `start`, or a late listener): it still runs once.
    const peerLeft = this.phase === StreamPhase.cut;
    queueMicrotask(() => this.call(() => listener(peerLeft), 'http stream close'));
  }

  /** Cuts the connection: shutdown, or a `start` that threw. The listeners see `peerLeft: true`. */
  abort(): void {
    if (this.phase !== StreamPhase.open) return;
    this.markCut();
    this.cutConnection();
  }

  /** The transport reports that the peer's connection is gone. */
  peerLeft(): void {
    if (this.phase === StreamPhase.open) this.markCut();
  }

  /** The subclass reports that its buffer drained. */
  protected drained(): void {
    if (this.phase !== StreamPhase.open || !this.needsDrain) return;
    this.needsDrain = false;
    for (const listener of [...this.drainListeners]) this.call(listener, 'http stream drain');
  }

  private markCut(): void {
    this.phase = StreamPhase.cut;
    this.emitClose(true);
  }

  private emitClose(peerLeft: boolean): void {
    const listeners = this.closeListeners.splice(0);
    this.drainListeners.length = 0;
    for (const listener of listeners) this.call(() => listener(peerLeft), 'http stream close');
  }

  /** Listeners run inside transport callbacks (uWS's native ones among them): a throw must not escape there. */
  private call(listener: () => void, context: string): void {
    try {
      listener();
    } catch (error) {
      this.onError(error, context);
    }
  }
}
