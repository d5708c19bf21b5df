import { randomBytes } from 'node:crypto';
import { link, unlink, writeFile } from 'node:fs/promises';

/**
 * Creates `file` with `content` (mode 0600) only if it does not exist yet, atomically:
 * the content is written to a uniquely named temp file and hard-linked into place, which
 * fails if another writer got there first. Returns true when this call created the file.
 * Readers never see a partial file, and concurrent first starts agree on one winner.
 */
export async function createFileOnce(file: string, content: string | Uint8Array): Promise<boolean> {
  const temp = `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  await writeFile(temp, content, { mode: 0o600, flag: 'wx' });
  try {
    await link(temp, file);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  } finally {
    await unlink(temp).catch(() => undefined);
  }
}
