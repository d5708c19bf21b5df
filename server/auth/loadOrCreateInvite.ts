import { randomBytes, timingSafeEqual, createHash } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createFileOnce } from './createFileOnce.js';

export const INVITE_FILE = 'invite.txt';

export interface Invite {
  readonly code: string;
  /** Constant-time comparison, so response timing reveals nothing about the code. */
  matches(candidate: string): boolean;
}

/**
 * The invite code that lets a person on the LAN get a token. A pinned code (from --invite)
 * wins; otherwise a random 128-bit code is generated once and kept (mode 0600) in the data dir.
 */
export async function loadOrCreateInvite(dataDir: string, pinned?: string): Promise<Invite> {
  let code = pinned;
  if (code === undefined) {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    const file = join(dataDir, INVITE_FILE);
    try {
      code = (await readFile(file, 'utf8')).trim();
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    if (!code) {
      // If another process created the invite meanwhile, its code wins.
      await createFileOnce(file, `${randomBytes(16).toString('base64url')}\n`);
      code = (await readFile(file, 'utf8')).trim();
    }
  }
  const expected = digest(code);
  return {
    code,
    matches: (candidate) => timingSafeEqual(digest(candidate), expected),
  };
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}
