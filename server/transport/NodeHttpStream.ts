import type { ServerResponse } from 'node:http';
import { HttpStreamBase } from './HttpStreamBase.js';

/**
 * A streamed body on a node:http response. `res.write`'s return value is the backpressure
 * signal (the socket's buffer passed its high-water mark) and `drain` its end. `close` fires
 * both when the response finished and when the connection dropped first; after `end` the phase
 * is already `ended` (`res.writableFinished` would say the same), so only a peer that left is
 * reported as one.
 */
export class NodeHttpStream extends HttpStreamBase {
  constructor(
    private readonly res: ServerResponse,
    onError: (error: unknown, context: string) => void,
  ) {
    super(onError);
    res.on('drain', () => this.drained());
    res.on('close', () => {
      if (!res.writableFinished) this.peerLeft();
    });
  }

  /** Writes the status and headers now, not with the first chunk, so the client sees them at once. */
  open(status: number, headers: Readonly<Record<string, string>>): void {
    this.res.writeHead(status, headers);
    this.res.flushHeaders();
  }

  protected writeChunk(chunk: string): boolean {
    return this.res.write(chunk);
  }

  protected endResponse(): void {
    this.res.end();
  }

  protected cutConnection(): void {
    this.res.destroy();
  }
}
