import type { HttpResponse as UwsHttpResponse } from '@trufflesuite/uws-js-unofficial';
import { HttpStreamBase } from './HttpStreamBase.js';
import { httpStatusLine } from './httpStatusLine.js';

/**
 * A streamed body on a uWS response. Rules uWS imposes (docs/DEVELOPERS.md):
 * - every write is corked: they come from async callbacks;
 * - `res` is never touched after `onAborted` ran or `end` was called (uWS crashes): the base
 *   class's phase guards every call;
 * - `res.write` starts chunked encoding and returns false when any byte stays in uWS's own
 *   buffer: that is the backpressure signal;
 * - with `onWritable` registered, uWS does not flush that buffer on its own when the socket
 *   becomes writable: the handler must write. A drain listener's write flushes it first; an
 *   empty cork flushes it too (uncorking writes the buffer out), so bytes never wait for the
 *   next token. `onWritable` must return true. JS cannot read how much uWS still holds, so the
 *   drain listeners run on the writable event itself; if bytes remain, their next `write`
 *   returns false again and uWS, still polling, calls `onWritable` once more.
 * - `onWritable` also keeps the socket's timeout hung (0) after a backpressure episode; without
 *   it uWS would arm its 10 s HTTP idle timeout after a drain and cut a slow reply.
 * uWS completes the head (Date, Transfer-Encoding, the blank line) only with the first `write`:
 * until then a client has the status line and headers but not their end.
 */
export class UwsHttpStream extends HttpStreamBase {
  constructor(
    private readonly res: UwsHttpResponse,
    onError: (error: unknown, context: string) => void,
  ) {
    super(onError);
  }

  /** Writes the status and headers and keeps the response open. Call once, before `start`, on a live response. */
  open(status: number, headers: Readonly<Record<string, string>>): void {
    this.res.cork(() => {
      this.res.writeStatus(httpStatusLine(status));
      for (const [name, value] of Object.entries(headers)) this.res.writeHeader(name, value);
    });
    this.res.onWritable(() => {
      if (!this.closed) this.res.cork(() => this.drained());
      return true;
    });
  }

  protected writeChunk(chunk: string): boolean {
    let written = false;
    this.res.cork(() => {
      written = this.res.write(chunk);
    });
    return written;
  }

  protected endResponse(): void {
    this.res.cork(() => this.res.end());
  }

  protected cutConnection(): void {
    // Runs the route's onAborted, which finds the stream already closed.
    this.res.close();
  }
}
