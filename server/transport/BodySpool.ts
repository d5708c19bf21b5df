import { mkdtemp, open, rm, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A request body written to a private temporary file as it arrives (uploads), instead of held in
 * memory. The file lives in a fresh 0700 directory under the system temp dir, named by Parley,
 * never by the client; `discard` removes it, and the transports call it once the response is
 * written (or the upload is cut off), whatever happened.
 *
 * `write` may be called before the file is open and never waits: writes are chained in order.
 */
export class BodySpool {
  private readonly opened: Promise<{ dir: string; file: string; handle: FileHandle }>;
  private chain: Promise<void>;
  private failed: unknown;
  private discarded = false;

  constructor() {
    this.opened = (async () => {
      const dir = await mkdtemp(join(tmpdir(), 'parley-upload-'));
      const file = join(dir, 'body');
      const handle = await open(file, 'wx', 0o600);
      return { dir, file, handle };
    })();
    this.chain = this.opened.then(() => undefined);
    // A failure is kept and reported by finish(); it must not go unhandled meanwhile.
    this.chain.catch((error: unknown) => (this.failed = error));
  }

  write(chunk: Buffer): void {
    if (this.discarded) return;
    this.chain = this.chain.then(async () => {
      if (this.discarded) return;
      const { handle } = await this.opened;
      await handle.write(chunk);
    });
    this.chain.catch((error: unknown) => (this.failed ??= error));
  }

  /** Waits for every write and closes the file; resolves with its path. */
  async finish(): Promise<string> {
    await this.chain.catch(() => undefined);
    if (this.failed !== undefined) throw this.failed;
    const { file, handle } = await this.opened;
    await handle.close();
    return file;
  }

  /** Removes the file and its directory; safe to call twice, and before the file exists. */
  async discard(): Promise<void> {
    if (this.discarded) return;
    this.discarded = true;
    await this.chain.catch(() => undefined);
    const opened = await this.opened.catch(() => undefined);
    if (opened === undefined) return;
    await opened.handle.close().catch(() => undefined);
    await rm(opened.dir, { recursive: true, force: true });
  }
}
