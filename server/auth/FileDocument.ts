import { mkdir, open, readFile, stat, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DocumentBusyError, type DocumentChange, type StateDocument } from './StateDocument.js';
import { writeFileAtomic } from './writeFileAtomic.js';

/** A lock file older than this was left by a process that died mid-write (a write takes milliseconds). */
const STALE_LOCK_MS = 10_000;
const LOCK_WAIT_MS = 5_000;
const LOCK_RETRY_MS = 15;

/**
 * A document in a file of the data dir (mode 0600, replaced atomically), shared with the
 * `parley` commands run beside the server. Invariants:
 * - `read` re-reads the file only when it changed (inode, size, times), so a change made by
 *   another process is seen from the next read on.
 * - `update` reads the file as it is now and writes under an in-process queue and, with
 *   `lock`, a lock file (`<file>.lock`) across processes; a lock older than STALE_LOCK_MS is
 *   broken (its process died).
 */
export class FileDocument implements StateDocument {
  private cache: { signature: string; text: string } | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly lockFile: string | undefined;
  readonly name: string;

  constructor(
    readonly file: string,
    options: { readonly lock?: boolean } = {},
  ) {
    this.name = file;
    this.lockFile = options.lock ? `${file}.lock` : undefined;
  }

  async read(): Promise<string | undefined> {
    let signature: string;
    try {
      const info = await stat(this.file, { bigint: true });
      signature = `${info.ino}:${info.size}:${info.mtimeNs}:${info.ctimeNs}`;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
    if (this.cache?.signature === signature) return this.cache.text;
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
    // The content read is at least as new as the signature taken before it, so the cache is never staler than one change.
    this.cache = { signature, text };
    return text;
  }

  update<T>(change: (current: string | undefined) => DocumentChange<T>): Promise<T> {
    const run = this.queue.then(() =>
      this.locked(async () => {
        this.cache = undefined;
        const outcome = change(await this.read());
        if (outcome.text !== undefined) {
          await writeFileAtomic(this.file, outcome.text);
          this.cache = undefined;
        }
        return outcome.result;
      }),
    );
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Resolves once every update asked of this document so far is written (or failed). */
  async settled(): Promise<void> {
    await this.queue;
  }

  private async locked<T>(work: () => Promise<T>): Promise<T> {
    await mkdir(dirname(this.file), { recursive: true, mode: 0o700 });
    const lockFile = this.lockFile;
    if (lockFile === undefined) return work();
    const deadline = Date.now() + LOCK_WAIT_MS;
    for (;;) {
      try {
        await (await open(lockFile, 'wx', 0o600)).close();
        break;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      }
      const since = await stat(lockFile).then((info) => info.mtimeMs, () => undefined);
      if (since !== undefined && Date.now() - since > STALE_LOCK_MS) {
        await unlink(lockFile).catch(() => undefined);
        continue;
      }
      if (Date.now() > deadline) throw new DocumentBusyError(`${lockFile} is held by another process; try again.`);
      await sleep(LOCK_RETRY_MS);
    }
    try {
      return await work();
    } finally {
      await unlink(lockFile).catch(() => undefined);
    }
  }
}
