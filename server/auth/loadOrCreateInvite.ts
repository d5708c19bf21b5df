import { randomBytes, timingSafeEqual, createHash } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as z from 'zod/mini';
import { createFileOnce } from './createFileOnce.js';
import { writeFileAtomic } from './writeFileAtomic.js';

export const INVITE_FILE = 'invite.txt';
/** An admin's rotation of a pinned code: `{replaces: sha256 of the pinned code (hex), code}`. */
export const ROTATED_PIN_FILE = 'invite-rotated.json';

export interface Invite {
  /** The current code; it changes when the invite is rotated. */
  readonly code: string;
  /** True when the code came from --invite (or PARLEY_INVITE). */
  readonly pinned: boolean;
  /**
   * True when an admin rotated the pinned code: the pinned code stays refused, across
   * restarts, until --invite names a different code.
   */
  readonly pinRotated: boolean;
  /** Constant-time comparison, so response timing reveals nothing about the code. */
  matches(candidate: string): boolean;
  /**
   * Replaces the code with a new random one, in memory and in the data dir, so the old code
   * stops working at once and after a restart. A pinned code is replaced too: the new code is
   * kept in `invite-rotated.json` with the pinned code's digest, and wins over that same
   * pinned code at every start, so an admin can cut off an invite holder without the operator.
   */
  rotate(): Promise<string>;
}

const RotatedPin = z.strictObject({ replaces: z.string().check(z.regex(/^[0-9a-f]{64}$/)), code: z.string().check(z.minLength(8)) });

/**
 * The invite code that lets a person on the LAN get a token. A pinned code (from --invite)
 * wins, unless an admin rotated that very code (then the rotated one does); otherwise a random
 * 128-bit code is generated once and kept (mode 0600) in the data dir.
 */
export async function loadOrCreateInvite(dataDir: string, pinned?: string): Promise<Invite> {
  const file = join(dataDir, INVITE_FILE);
  const rotatedPinFile = join(dataDir, ROTATED_PIN_FILE);
  let code = pinned;
  let pinRotated = false;
  if (pinned !== undefined) {
    const rotated = await readRotatedPin(rotatedPinFile);
    if (rotated && rotated.replaces === digest(pinned).toString('hex')) {
      code = rotated.code;
      pinRotated = true;
    }
  }
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
    get pinRotated() {
      return pinRotated;
    },
    matches: (candidate) => timingSafeEqual(digest(candidate), expected),
    async rotate() {
      const next = randomBytes(16).toString('base64url');
      if (pinned === undefined) {
        await writeFileAtomic(file, `${next}\n`);
      } else {
        await mkdir(dataDir, { recursive: true, mode: 0o700 });
        await writeFileAtomic(rotatedPinFile, `${JSON.stringify({ replaces: digest(pinned).toString('hex'), code: next })}\n`);
        pinRotated = true;
      }
      current = next;
      expected = digest(next);
      return next;
    },
  };
}

/** The rotation of a pinned code, if one was made; a damaged file is an error, never ignored. */
async function readRotatedPin(path: string): Promise<z.infer<typeof RotatedPin> | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    value = undefined;
  }
  const parsed = RotatedPin.safeParse(value);
  if (!parsed.success) throw new Error(`${path} is not a valid rotated invite; delete it to use --invite again.`);
  return parsed.data;
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}
