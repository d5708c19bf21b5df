import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { parseClientFrame, type ParseResult } from '../../shared/parseClientFrame.js';
import { ClientFrame } from '../../shared/protocol.js';
import { ErrorCode } from '../../shared/errorCodes.js';
import { mulberry32 } from '../../models/mulberry32.js';

function expectError(text: string, code: ErrorCode, names: RegExp): void {
  const result = parseClientFrame(text);
  assert.equal(result.ok, false, `expected ${text.slice(0, 80)} to be refused`);
  if (result.ok) return;
  assert.equal(result.code, code);
  assert.match(result.message, names);
}

describe('parseClientFrame', () => {
  test('a valid send frame parses, with and without a conversationId', () => {
    assert.deepEqual(parseClientFrame('{"type":"send","id":"r-1","text":"hello"}'), {
      ok: true,
      frame: { type: 'send', id: 'r-1', text: 'hello' },
    });
    assert.deepEqual(parseClientFrame('{"type":"send","id":"r_2","text":"hi","conversationId":"c_9"}'), {
      ok: true,
      frame: { type: 'send', id: 'r_2', text: 'hi', conversationId: 'c_9' },
    });
  });

  test('a valid cancel frame parses', () => {
    assert.deepEqual(parseClientFrame('{"type":"cancel","id":"A1"}'), { ok: true, frame: { type: 'cancel', id: 'A1' } });
  });

  test('an id of exactly 64 characters is accepted', () => {
    assert.equal(parseClientFrame(JSON.stringify({ type: 'cancel', id: 'x'.repeat(64) })).ok, true);
  });

  test('text that is not JSON is refused with bad_json', () => {
    expectError('not json', ErrorCode.badJson, /not valid JSON/);
    expectError('{"type":"send"', ErrorCode.badJson, /not valid JSON/);
    expectError('', ErrorCode.badJson, /not valid JSON/);
  });

  test('a JSON array is refused with bad_frame: a frame must be an object', () => {
    expectError('[{"type":"cancel","id":"a"}]', ErrorCode.badFrame, /JSON object/);
  });

  test('a JSON string is refused with bad_frame: a frame must be an object', () => {
    expectError('"cancel"', ErrorCode.badFrame, /JSON object/);
  });

  test('JSON null is refused with bad_frame: a frame must be an object', () => {
    expectError('null', ErrorCode.badFrame, /JSON object/);
    expectError('42', ErrorCode.badFrame, /JSON object/);
  });

  test('an unknown or missing type is refused with bad_frame naming the allowed types', () => {
    expectError('{"type":"delete","id":"a"}', ErrorCode.badFrame, /type.*send, cancel/);
    expectError('{"id":"a"}', ErrorCode.badFrame, /type.*send, cancel/);
    expectError('{"type":7,"id":"a"}', ErrorCode.badFrame, /type/);
  });

  test('a missing id is refused with bad_frame naming id', () => {
    expectError('{"type":"cancel"}', ErrorCode.badFrame, /\bid\b/);
    expectError('{"type":"send","text":"hi"}', ErrorCode.badFrame, /\bid\b/);
  });

  test('an id with spaces is refused with bad_frame naming id', () => {
    expectError('{"type":"cancel","id":"a b"}', ErrorCode.badFrame, /\bid\b/);
  });

  test('an id over 64 characters is refused with bad_frame naming id and the limit', () => {
    expectError(JSON.stringify({ type: 'cancel', id: 'x'.repeat(65) }), ErrorCode.badFrame, /\bid\b.*64/);
  });

  test('an empty text is refused with bad_frame naming text', () => {
    expectError('{"type":"send","id":"a","text":""}', ErrorCode.badFrame, /\btext\b/);
  });

  test('a text that is not a string is refused with bad_frame naming text', () => {
    expectError('{"type":"send","id":"a","text":42}', ErrorCode.badFrame, /\btext\b.*string/);
    expectError('{"type":"send","id":"a","text":["hi"]}', ErrorCode.badFrame, /\btext\b/);
  });

  test('an extra key is refused with bad_frame naming the key', () => {
    expectError('{"type":"cancel","id":"a","extra":1}', ErrorCode.badFrame, /extra/);
    expectError('{"type":"cancel","id":"a","text":"hi"}', ErrorCode.badFrame, /\btext\b/);
  });

  test('a __proto__ key is refused with bad_frame and does not pollute any prototype', () => {
    expectError('{"type":"cancel","id":"a","__proto__":{"x":1}}', ErrorCode.badFrame, /__proto__/);
    assert.equal(({} as Record<string, unknown>).x, undefined);
  });

  test('a constructor key is refused with bad_frame naming it', () => {
    expectError('{"type":"cancel","id":"a","constructor":{"prototype":{"x":1}}}', ErrorCode.badFrame, /constructor/);
  });

  test('deep nesting is refused with bad_frame saying it is nested too deep', () => {
    let nested = '1';
    for (let depth = 0; depth < 10; depth++) nested = `{"k":${nested}}`;
    expectError(`{"type":"cancel","id":"a","x":${nested}}`, ErrorCode.badFrame, /nested deeper/);
  });

  test('very deep nesting (100,000 levels) is refused without a stack overflow', () => {
    const depth = 100_000;
    const text = `{"type":"cancel","id":"a","x":${'['.repeat(depth)}${']'.repeat(depth)}}`;
    const result = parseClientFrame(text);
    assert.equal(result.ok, false);
    if (!result.ok) assert.equal(result.code, ErrorCode.badFrame);
  });

  test('property: 2,000 random inputs never throw and always give a re-validating frame or a coded error with a message', () => {
    const random = mulberry32(0xc0ffee);
    const counts = { ok: 0, failed: 0 };
    for (let index = 0; index < 2000; index++) {
      const text = randomInput(random);
      let result: ParseResult;
      try {
        result = parseClientFrame(text);
      } catch (error) {
        assert.fail(`parseClientFrame threw ${String(error)} for ${JSON.stringify(text).slice(0, 200)}`);
      }
      if (result.ok) {
        counts.ok++;
        assert.ok(ClientFrame.safeParse(result.frame).success, `frame from ${text} does not re-validate`);
        assert.deepEqual(parseClientFrame(JSON.stringify(result.frame)), result, 'a parsed frame round-trips');
      } else {
        counts.failed++;
        assert.ok([ErrorCode.badJson, ErrorCode.badFrame].includes(result.code as 'bad_json' | 'bad_frame'), result.code);
        assert.equal(typeof result.message, 'string');
        assert.ok(result.message.length > 0);
      }
    }
    assert.equal(({} as Record<string, unknown>).polluted, undefined, 'no prototype was polluted');
    assert.ok(counts.ok > 100 && counts.failed > 100, `the generator covers both outcomes (${JSON.stringify(counts)})`);
  });
});

// ---- random input generation -------------------------------------------------

type Random = () => number;

const pick = <T>(random: Random, items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;

function randomString(random: Random, maxLength: number): string {
  const alphabet = ['a', 'Z', '0', '_', '-', ' ', '"', '\\', '{', '}', '[', ']', ':', ',', 'é', '🙂', '\u0000', '\n'];
  let text = '';
  const length = Math.floor(random() * (maxLength + 1));
  for (let index = 0; index < length; index++) text += pick(random, alphabet);
  return text;
}

function randomId(random: Random): unknown {
  return pick(random, [
    'r1',
    'abc_DEF-123',
    'x'.repeat(64),
    'x'.repeat(65),
    '',
    'a b',
    'ü',
    7,
    null,
    randomString(random, 6),
  ]);
}

function randomValue(random: Random, depth: number): unknown {
  const roll = random();
  if (depth > 6 || roll < 0.3) return pick(random, [null, true, false, 0, -1, 1.5, 1e308, randomString(random, 8)]);
  if (roll < 0.6) return Array.from({ length: Math.floor(random() * 3) }, () => randomValue(random, depth + 1));
  const object: Record<string, unknown> = {};
  const keys = ['type', 'id', 'text', 'conversationId', 'k', 'constructor', 'toString', 'valueOf'];
  for (let count = Math.floor(random() * 4); count > 0; count--) object[pick(random, keys)] = randomValue(random, depth + 1);
  return object;
}

/** Mostly near-valid frames (so both outcomes occur), plus arbitrary JSON and raw strings. */
function randomInput(random: Random): string {
  const roll = random();
  if (roll < 0.45) {
    const frame: Record<string, unknown> =
      random() < 0.5
        ? { type: 'send', id: randomId(random), text: pick(random, ['hi', 'héllo 🙂', '', 5, randomString(random, 12)]) }
        : { type: 'cancel', id: randomId(random) };
    if (frame.type === 'send' && random() < 0.3) frame.conversationId = randomId(random);
    if (random() < 0.1) frame[pick(random, ['extra', 'constructor', 'prototype'])] = randomValue(random, 1);
    if (random() < 0.05) delete frame.type;
    const text = JSON.stringify(frame);
    // Raw __proto__ keys only survive as text: JSON.parse makes them own properties.
    return random() < 0.05 ? text.replace(/^\{/, '{"__proto__":{"polluted":1},') : text;
  }
  if (roll < 0.75) return JSON.stringify(randomValue(random, 0)) ?? 'null';
  if (roll < 0.9) return randomString(random, 40);
  // A valid frame with a few random characters corrupted.
  const chars = [...'{"type":"cancel","id":"abc"}'];
  for (let count = 1 + Math.floor(random() * 3); count > 0; count--) {
    chars[Math.floor(random() * chars.length)] = pick(random, ['"', '{', '}', ':', ',', 'x', ' ', '\\']);
  }
  return chars.join('');
}

