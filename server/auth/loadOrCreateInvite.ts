import { randomBytes, timingSafeEqual, createHash } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createFileOnce } from './createFileOnce.js';
import { writeFileAtomic } from './writeFileAtomic.js';

export const INVITE_FILE = 'invite.txt';

export interface Invite {
  /** The current code; it changes when the invite is rotated. */
  readonly code: string;
  /** True when the code came from --invite: it cannot be rotated. */
  readonly pinned: boolean;
  /** Constant-time comparison, so response timing reveals nothing about the code. */
  matches(candidate: string): boolean;
  /**
   * Replaces the code with a new random one, in memory and in the data dir, so the old code
   * stops working at once and after a restart. Rejects with InvitePinnedError for a pinned code.
   */
  rotate(): Promise<string>;
}

export class InvitePinnedError extends Error {
  override name = 'InvitePinnedError';
  constructor() {
    super('The invite is pinned with --invite (or PARLEY_INVITE); change it there.');
  }
}

/**
 * The invite code that lets a person on the LAN get a token. A pinned code (from --invite)
 * wins; otherwise a random 128-bit code is generated once and kept (mode 0600) in the data dir.
 */
export async function loadOrCreateInvite(dataDir: string, pinned?: string): Promise<Invite> {
  const file = join(dataDir, INVITE_FILE);
  let code = pinned;
  if (code === undefined) {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
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
  let current = code;
  let expected = digest(code);
  return {
    get code() {
      return current;
    },
    pinned: pinned !== undefined,
    matches: (candidate) => timingSafeEqual(digest(candidate), expected),
    async rotate() {
      if (pinned !== undefined) throw new InvitePinnedError();
      const next = randomBytes(16).toString('base64url');
      await writeFileAtomic(file, `${next}\n`);
      current = next;
      expected = digest(next);
      return next;
    },
  };
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}
