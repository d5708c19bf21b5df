import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { ErrorCode } from '../../shared/errorCodes.js';
import { HISTORY_KEY_BYTES, HistoryCipher } from '../../server/history/HistoryCipher.js';
import { HistoryUnreadableError } from '../../server/history/HistoryUnreadableError.js';

const CONTEXT = ['message', 'c1', 'm1', 'text'];

function unreadable(run: () => unknown): HistoryUnreadableError {
  try {
    run();
  } catch (error) {
    assert.ok(error instanceof HistoryUnreadableError, `expected HistoryUnreadableError, got ${String(error)}`);
    assert.equal(error.code, ErrorCode.historyUnreadable);
    return error;
  }
  return assert.fail('decrypted instead of failing');
}

describe('HistoryCipher', () => {
  test('text round-trips under its context, whatever its content', () => {
    const cipher = new HistoryCipher(randomBytes(HISTORY_KEY_BYTES));
    for (const text of ['', 'hello', '\u0000🦊\r\n', 'ü'.repeat(1_000_000)]) assert.equal(cipher.decrypt(cipher.encrypt(text, CONTEXT), CONTEXT), text);
  });

  test('format v1: version byte, 12-byte nonce, ciphertext as long as the text, 16-byte tag; a fresh nonce every time', () => {
    const cipher = new HistoryCipher(randomBytes(HISTORY_KEY_BYTES));
    const first = cipher.encrypt('same text', CONTEXT);
    const second = cipher.encrypt('same text', CONTEXT);
    assert.equal(first[0], 0x01);
    assert.equal(first.length, 1 + 12 + Buffer.byteLength('same text') + 16);
    assert.notDeepEqual(first.subarray(1, 13), second.subarray(1, 13), 'nonces differ');
    assert.notDeepEqual(first, second, 'so equal texts do not look equal');
    assert.ok(!first.includes(Buffer.from('same text')));
  });

  test('another context fails: another row, another column, or the same parts joined differently', () => {
    const cipher = new HistoryCipher(randomBytes(HISTORY_KEY_BYTES));
    const sealed = cipher.encrypt('secret', CONTEXT);
    const error = unreadable(() => cipher.decrypt(sealed, ['message', 'c1', 'm2', 'text']));
    assert.equal(error.where, 'message:c1:m2:text', 'the log can say where');
    unreadable(() => cipher.decrypt(sealed, ['conversation', 'c1', 'm1', 'title']));
    const joined = cipher.encrypt('secret', ['a:b', 'c']);
    unreadable(() => cipher.decrypt(joined, ['a', 'b:c']));
  });

  test('any altered byte, a truncated value, an unknown version or another key fails', () => {
    const cipher = new HistoryCipher(randomBytes(HISTORY_KEY_BYTES));
    const sealed = cipher.encrypt('secret text', CONTEXT);
    for (let index = 0; index < sealed.length; index += 1) {
      const altered = Buffer.from(sealed);
      altered[index] = (altered[index] ?? 0) ^ 0x80;
      unreadable(() => cipher.decrypt(altered, CONTEXT));
    }
    for (const length of [0, 1, 13, 28, sealed.length - 1]) unreadable(() => cipher.decrypt(sealed.subarray(0, length), CONTEXT));
    unreadable(() => cipher.decrypt(Buffer.concat([Buffer.of(0x02), sealed.subarray(1)]), CONTEXT));
    unreadable(() => new HistoryCipher(randomBytes(HISTORY_KEY_BYTES)).decrypt(sealed, CONTEXT));
  });

  test('a key of another size is refused', () => {
    for (const size of [0, 16, 31, 33, 64]) assert.throws(() => new HistoryCipher(randomBytes(size)), RangeError);
  });

  test('the error a client would see names no row', () => {
    const cipher = new HistoryCipher(randomBytes(HISTORY_KEY_BYTES));
    const error = unreadable(() => cipher.decrypt(cipher.encrypt('x', CONTEXT), ['message', 'c_secret', 'm_secret', 'text']));
    assert.ok(!JSON.stringify(error.toWire()).includes('secret'));
    assert.equal(error.httpStatus, 500);
  });
});
