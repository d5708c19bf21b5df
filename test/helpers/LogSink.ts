import { Writable } from 'node:stream';

/** A pino destination that keeps every record, so tests can assert what is and is not logged. */
export class LogSink extends Writable {
  readonly lines: string[] = [];

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    this.lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
    callback();
  }

  get records(): Array<Record<string, unknown>> {
    return this.lines.map((line) => JSON.parse(line) as Record<string, unknown>);
  }

  contains(text: string): boolean {
    return this.lines.some((line) => line.includes(text));
  }
}
