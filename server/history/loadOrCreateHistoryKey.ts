import { randomBytes } from 'node:crypto';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { createFileOnce } from '../auth/createFileOnce.js';
import { HISTORY_KEY_BYTES } from './HistoryCipher.js';

export const HISTORY_KEY_FILE = 'history.key';

export interface HistoryKeyOptions {
  readonly dataDir: string;
  /**
   * A key file kept elsewhere (another volume, a secrets mount). It must exist: Parley never
   * creates a key outside its data dir, because a fresh key there would silently hide the
   * history written under the old one.
   */
  readonly keyFile?: string;
}

/**
 * Loads the 32-byte key that encrypts stored history: raw bytes, from `history.key` in the data
 * dir (created on first start, mode 0600) or from the given key file. A key file of another size
 * is refused rather than padded or hashed, and so is one readable by group or others, because
 * whoever reads it reads every stored conversation.
 */
export async function loadOrCreateHistoryKey(options: HistoryKeyOptions): Promise<Buffer> {
  const file = options.keyFile ?? join(options.dataDir, HISTORY_KEY_FILE);
  if (options.keyFile === undefined) {
    await mkdir(options.dataDir, { recursive: true, mode: 0o700 });
    // If another process created the key meanwhile, its key wins and is read below.
    if (!(await exists(file))) await createFileOnce(file, randomBytes(HISTORY_KEY_BYTES));
  } else if (!(await exists(file))) {
    throw new Error(`history key file ${file} does not exist; create one with: head -c ${HISTORY_KEY_BYTES} /dev/urandom > ${file} && chmod 600 ${file}`);
  }
  const info = await stat(file);
  if (!info.isFile()) throw new Error(`history key ${file} is not a file`);
  if (process.platform !== 'win32' && (info.mode & 0o077) !== 0) {
    throw new Error(`${file} is readable by other users (mode ${(info.mode & 0o777).toString(8)}); run: chmod 600 ${file}`);
  }
  if (info.size !== HISTORY_KEY_BYTES) {
    throw new Error(`${file} is ${info.size} bytes; a history key is exactly ${HISTORY_KEY_BYTES} random bytes`);
  }
  const key = await readFile(file);
  if (key.length !== HISTORY_KEY_BYTES) throw new Error(`${file} changed while it was read`);
  return key;
}

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
}
