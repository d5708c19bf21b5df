import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { parseClientFrame } from '../../shared/parseClientFrame.js';
import type { LlamaEngine } from '../../server/engine/LlamaEngine.js';
import { loadTinyEngine, startTestServer, TRANSPORTS } from '../helpers/startTestServer.js';

/** Frames that are not valid client frames: noise, wrong shapes, near misses of real frames. */
const invalidFrame = fc
  .oneof(
    fc.string({ maxLength: 200 }),
    fc.json({ maxDepth: 6 }),
    fc.jsonValue({ maxDepth: 6 }).map((value) => JSON.stringify(value)),
    fc.record({
      type: fc.constantFrom('send', 'cancel', 'refresh', 'SEND', '', '__proto__', 'constructor'),
      id: fc.oneof(fc.string({ maxLength: 80 }), fc.integer(), fc.constant(null)),
      text: fc.oneof(fc.string({ maxLength: 50 }), fc.integer(), fc.object()),
      extra: fc.anything(),
    }).map((value) => JSON.stringify(value)),
    fc.string({ maxLength: 100 }).map((key) => `{"type":"cancel","id":"x","${key.replace(/["\\]/g, '')}":1}`),
    fc.constant('{"type":"send","id":"a","text":"hi","__proto__":{"admin":true}}'),
    fc.constant('['.repeat(500) + ']'.repeat(500)),
  )
  .filter((text) => Buffer.byteLength(text) < 8 * 1024 && !parseClientFrame(text).ok);

const FRAMES_PER_CLIENT = 700;

for (const transport of TRANSPORTS) {
  describe(`fuzzing over ${transport}`, () => {
    let engine: LlamaEngine;
    before(async () => {
      engine = await loadTinyEngine({ slots: 2, contextSize: 2048 });
    });
    after(async () => {
      await engine.dispose();
    });

    test('thousands of malformed frames from several sockets each get exactly one error; other streams complete', async () => {
      const server = await startTestServer(transport, engine, { framesPerSecond: 100_000, frameBurst: 100_000, maxTokens: 400 });
      const unhandled: unknown[] = [];
      const onUnhandled = (reason: unknown) => unhandled.push(reason);
      process.on('unhandledRejection', onUnhandled);
      try {
        const honest = await server.client('honest');
        const fuzzers = await Promise.all([0, 1, 2].map((n) => server.client(`fuzzer${n}`)));
        const stream = honest.send('tell me a story');
        const samples = fuzzers.map((_, index) => fc.sample(invalidFrame, { numRuns: FRAMES_PER_CLIENT, seed: 1000 + index }));
        fuzzers.forEach((client, index) => {
          for (const frame of samples[index] ?? []) client.sendRaw(frame);
          client.sendRaw(Buffer.from([0xff, 0x00, 0x01]), true);
        });
        const expected = FRAMES_PER_CLIENT + 1;
        for (const client of fuzzers) {
          await client.waitFor(() => client.frames.filter((frame) => frame.type === 'error').length >= expected, 30_000);
        }
        const done = await honest.terminal(stream, 30_000);
        assert.equal(done.type, 'done');
        honest.replyText(stream);
        // Let any extra (wrong) answers arrive before counting.
        await new Promise((resolve) => setTimeout(resolve, 200));
        for (const client of fuzzers) {
          const errors = client.frames.filter((frame) => frame.type === 'error');
          assert.equal(errors.length, expected);
          assert.ok(errors.every((frame) => frame.type === 'error' && frame.id === undefined && frame.message.length > 0));
          assert.equal(client.closeCode, undefined);
        }
        // The server still serves a fresh client.
        const late = await server.client('late');
        assert.equal((await late.terminal(late.send('still alive?'))).type, 'done');
        assert.deepEqual(unhandled, []);
      } finally {
        process.off('unhandledRejection', onUnhandled);
        await server.stop();
      }
    });
  });
}
