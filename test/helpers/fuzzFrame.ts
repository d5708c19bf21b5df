import fc from 'fast-check';
import { parseClientFrame } from '../../shared/parseClientFrame.js';
import { CLIENT_FRAME_TYPES } from '../../shared/protocol.js';

/**
 * One thing a hostile client writes to the socket.
 * - `text`: a text frame within maxFrameBytes. It is answered by exactly one frame: the server
 *   never admits it as a reply (valid sends are only ever too long or aimed at an unknown
 *   conversation), so no `accepted`/`delta`/`done` can follow.
 * - `binary`: a binary frame within maxFrameBytes: one `binary_frame` error.
 * - `oversize`: a text or binary frame past maxFrameBytes: the socket closes (1009 on ws; uWS
 *   drops the TCP connection, which the client sees as 1006).
 * - `badUtf8`: a text frame that is not UTF-8: the transport closes the socket (RFC 6455 says
 *   1007; uWS drops the TCP connection, which the client sees as 1006).
 */
export type FuzzFrame =
  | { readonly kind: 'text'; readonly data: string }
  | { readonly kind: 'binary'; readonly data: Uint8Array }
  | { readonly kind: 'oversize'; readonly data: string | Uint8Array }
  | { readonly kind: 'badUtf8'; readonly data: Uint8Array };

export interface FuzzLimits {
  readonly maxFrameBytes: number;
  readonly maxTextChars: number;
}

const SPECIAL_KEYS = ['__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf', 'then'] as const;

/** A valid request id, so the frame passes the schema and reaches the server's logic. */
const validId = fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/);

/** Anything an id field might wrongly hold. */
const wrongId = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 80 }),
  fc.integer(),
  fc.constant(null),
  fc.constant(''),
  fc.constant('x'.repeat(65)),
  fc.string({ unit: 'grapheme', minLength: 1, maxLength: 20 }),
  fc.array(validId, { maxLength: 3 }),
);

/** Joins already-serialised key/value pairs into an object literal, keeping `__proto__` an own key. */
function objectText(pairs: ReadonlyArray<readonly [string, string]>): string {
  return `{${pairs.map(([key, value]) => `${JSON.stringify(key)}:${value}`).join(',')}}`;
}

/** Real frame types with every field wrong in some way, extra keys, special keys. */
const nearValid = fc
  .record({
    type: fc.oneof(fc.constantFrom(...CLIENT_FRAME_TYPES), fc.constantFrom('SEND', 'send ', '', 'ready', 'delta', ...SPECIAL_KEYS), fc.string({ maxLength: 12 })),
    id: fc.option(fc.oneof(validId, wrongId)),
    text: fc.option(fc.oneof(fc.string({ unit: 'binary', maxLength: 60 }), fc.integer(), fc.object(), fc.constant(''))),
    after: fc.option(fc.oneof(fc.integer({ min: -3, max: 5 }), fc.double(), fc.string({ maxLength: 5 }))),
    conversationId: fc.option(fc.oneof(validId, wrongId)),
    extra: fc.array(fc.tuple(fc.oneof(fc.constantFrom(...SPECIAL_KEYS), fc.string({ unit: 'binary', maxLength: 12 })), fc.jsonValue({ maxDepth: 3 })), { maxLength: 3 }),
  })
  .map(({ type, id, text, after, conversationId, extra }) => {
    const pairs: Array<readonly [string, string]> = [['type', JSON.stringify(type)]];
    if (id !== null) pairs.push(['id', JSON.stringify(id)]);
    if (text !== null) pairs.push(['text', JSON.stringify(text)]);
    if (after !== null) pairs.push(['after', JSON.stringify(after)]);
    if (conversationId !== null) pairs.push(['conversationId', JSON.stringify(conversationId)]);
    for (const [key, value] of extra) pairs.push([key, JSON.stringify(value)]);
    return objectText(pairs);
  });

/** Valid frames about things that do not exist: each gets one refusal, never a reply. */
function unknownTargets(limits: FuzzLimits) {
  return fc.oneof(
    fc.record({ type: fc.constant('cancel'), id: validId }),
    fc.record({ type: fc.constant('resume'), id: validId, after: fc.integer({ min: -1, max: 10_000 }) }),
    fc.constant({ type: 'list_conversations' }),
    fc.record({ type: fc.constant('get_conversation'), conversationId: validId }),
    fc.record({ type: fc.constant('refresh'), token: fc.string({ minLength: 1, maxLength: 300 }) }),
    fc.record({ type: fc.constant('send'), id: validId, text: fc.string({ unit: 'binary', minLength: 1, maxLength: 40 }), conversationId: validId }),
    fc.record({ type: fc.constant('send'), id: validId, text: fc.string({ unit: 'binary', minLength: 1, maxLength: 40 }), conversationId: validId, regenerate: fc.constant(true) }),
    fc.record({ type: fc.constant('send'), id: validId, text: fc.integer({ min: limits.maxTextChars + 1, max: limits.maxTextChars * 2 }).map((length) => 'ü'.repeat(length)) }),
  ).map((frame) => JSON.stringify(frame));
}

/** Nesting far past the parser's depth limit, as arrays or inside a real frame. */
const deepNesting = fc.integer({ min: 3, max: 2500 }).chain((depth) =>
  fc.constantFrom(
    '['.repeat(depth) + ']'.repeat(depth),
    `{"type":"send","id":"deep","text":"hi","x":${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}}`,
    `{"type":"cancel","id":${'['.repeat(depth)}"x"${']'.repeat(depth)}}`,
  ),
);

/** A frame of exactly `bytes` bytes: a too-long send (ASCII or 3-byte UTF-8), or junk. */
function frameOfBytes(bytes: number, filler: 'ascii' | 'multibyte' | 'junk'): string {
  if (filler === 'junk') return '~'.repeat(bytes);
  const head = '{"type":"send","id":"near-limit","text":"';
  const tail = '"}';
  const room = bytes - Buffer.byteLength(head + tail);
  const text = filler === 'ascii' ? 'a'.repeat(room) : '€'.repeat(Math.floor(room / 3)) + 'a'.repeat(room % 3);
  return head + text + tail;
}

/**
 * Random and malformed client frames, weighted towards what the parser sees most: noise, JSON
 * of every shape, near misses of real frames, and the edges of the frame size limit.
 */
export function fuzzFrame(limits: FuzzLimits): fc.Arbitrary<FuzzFrame> {
  const text = (arbitrary: fc.Arbitrary<string>) => arbitrary.map((data): FuzzFrame => ({ kind: 'text', data }));
  const nearLimit = fc.tuple(fc.integer({ min: 0, max: 64 }), fc.constantFrom('ascii', 'multibyte', 'junk') as fc.Arbitrary<'ascii' | 'multibyte' | 'junk'>);
  return fc
    .oneof(
      { weight: 10, arbitrary: text(fc.string({ unit: 'binary', maxLength: 200 })) },
      { weight: 10, arbitrary: text(fc.json({ maxDepth: 6 })) },
      { weight: 5, arbitrary: text(fc.jsonValue({ maxDepth: 6 }).map((value) => JSON.stringify(value))) },
      { weight: 25, arbitrary: text(nearValid) },
      { weight: 15, arbitrary: text(unknownTargets(limits)) },
      { weight: 3, arbitrary: text(deepNesting) },
      { weight: 2, arbitrary: text(fc.string({ minLength: 1000, maxLength: 6000 }).map((huge) => JSON.stringify({ type: 'cancel', id: huge }))) },
      { weight: 3, arbitrary: text(nearLimit.map(([gap, filler]) => frameOfBytes(limits.maxFrameBytes - gap, filler))) },
      { weight: 5, arbitrary: fc.uint8Array({ maxLength: 300 }).map((data): FuzzFrame => ({ kind: 'binary', data })) },
      { weight: 1, arbitrary: fc.constant<FuzzFrame>({ kind: 'binary', data: new Uint8Array(limits.maxFrameBytes).fill(0x41) }) },
      {
        weight: 1,
        arbitrary: fc
          .tuple(fc.integer({ min: 1, max: 3 * limits.maxFrameBytes }), fc.boolean())
          .map(([extra, binary]): FuzzFrame => ({ kind: 'oversize', data: binary ? new Uint8Array(limits.maxFrameBytes + extra) : frameOfBytes(limits.maxFrameBytes + extra, 'ascii') })),
      },
      { weight: 1, arbitrary: fc.constantFrom(Uint8Array.of(0x7b, 0xff, 0x7d), Uint8Array.of(0xc0, 0x80), Uint8Array.of(0xed, 0xa0, 0x80)).map((data): FuzzFrame => ({ kind: 'badUtf8', data })) },
    )
    .filter((frame) => frame.kind !== 'text' || !startsAReply(frame.data, limits));
}

/** Whether this text frame is a `send` the server would admit (it must never be: one answer per frame). */
function startsAReply(data: string, limits: FuzzLimits): boolean {
  const parsed = parseClientFrame(data);
  return parsed.ok && parsed.frame.type === 'send' && parsed.frame.conversationId === undefined && parsed.frame.text.length <= limits.maxTextChars;
}
