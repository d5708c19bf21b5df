import { createCipheriv, createDecipheriv, createSecretKey, hkdfSync, randomBytes, type KeyObject } from 'node:crypto';
import { HistoryUnreadableError } from './HistoryUnreadableError.js';

/** Size of the history key, the input of every format version. */
export const HISTORY_KEY_BYTES = 32;

const Format = { v1: 0x01 } as const;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const V1_KEY_INFO = 'parley history v1 aes-256-gcm';

/**
 * Encrypts the history values that carry content (message text, conversation titles).
 *
 * A sealed value, version 1: `[0x01][nonce: 12 bytes][ciphertext][tag: 16 bytes]`, AES-256-GCM
 * under HKDF-SHA256(history key, info "parley history v1 aes-256-gcm"), with
 * AAD = the version byte followed by the JSON of the value's context.
 *
 * - The context names the value's row and column (`['message', conversationId, id, 'text']`), so
 *   a sealed value copied into another row or column fails its tag instead of decrypting there.
 * - Every value gets a fresh random nonce. With one key that stays safe for 2^32 values
 *   (NIST SP 800-38D); a reply checkpointed every second for years stays far below.
 * - The first byte selects the format, so a later version can change algorithm or layout while
 *   old values still read.
 * - Decryption either returns the exact text that was sealed under this context, or throws
 *   HistoryUnreadableError.
 */
export class HistoryCipher {
  private readonly key: KeyObject;

  constructor(historyKey: Uint8Array) {
    if (historyKey.byteLength !== HISTORY_KEY_BYTES) {
      throw new RangeError(`a history key is ${HISTORY_KEY_BYTES} bytes, got ${historyKey.byteLength}`);
    }
    this.key = createSecretKey(Buffer.from(hkdfSync('sha256', historyKey, new Uint8Array(0), V1_KEY_INFO, 32)));
  }

  encrypt(plaintext: string, context: readonly string[]): Buffer {
    const nonce = randomBytes(NONCE_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.key, nonce, { authTagLength: TAG_BYTES });
    cipher.setAAD(additionalData(Format.v1, context));
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return Buffer.concat([Buffer.of(Format.v1), nonce, body, cipher.getAuthTag()]);
  }

  decrypt(sealed: Uint8Array, context: readonly string[]): string {
    const where = context.join(':');
    const bytes = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength);
    if (bytes.length < 1 + NONCE_BYTES + TAG_BYTES || bytes[0] !== Format.v1) throw new HistoryUnreadableError(where);
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.key, bytes.subarray(1, 1 + NONCE_BYTES), { authTagLength: TAG_BYTES });
      decipher.setAAD(additionalData(Format.v1, context));
      decipher.setAuthTag(bytes.subarray(bytes.length - TAG_BYTES));
      return Buffer.concat([decipher.update(bytes.subarray(1 + NONCE_BYTES, bytes.length - TAG_BYTES)), decipher.final()]).toString('utf8');
    } catch (error) {
      throw new HistoryUnreadableError(where, error);
    }
  }
}

/** JSON keeps the context unambiguous: `['a:b', 'c']` and `['a', 'b:c']` differ. */
function additionalData(version: number, context: readonly string[]): Buffer {
  return Buffer.concat([Buffer.of(version), Buffer.from(JSON.stringify(context), 'utf8')]);
}
