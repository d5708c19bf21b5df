import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test, type TestContext } from 'node:test';
import fc from 'fast-check';
import { parseClientFrame } from '../../shared/parseClientFrame.js';
import type { Engine } from '../../server/engine/Engine.js';
import type { GatedEngine } from '../helpers/GatedEngine.js';
import { fuzzFrame } from '../helpers/fuzzFrame.js';
import { runFuzzer, type FuzzOutcome } from '../helpers/runFuzzer.js';
import { loadGatedTinyEngine, startTestServer, TRANSPORTS, type TestServer } from '../helpers/startTestServer.js';

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

/** The mixed fuzz: a small frame limit makes frames at and past it cheap to send. */
const FUZZ_LIMITS = { maxFrameBytes: 16 * 1024, maxTextChars: 2000 } as const;
const HONEST_CLIENTS = 2;
const REPLIES_PER_HONEST_CLIENT = 2;

interface MixedFuzz {
  readonly fuzzers: number;
  readonly framesPerFuzzer: number;
  readonly seed: number;
  /** Hold fuzzers to a low frame rate limit: they get refused and flood-closed (4429). */
  readonly rateLimited: boolean;
}

/** Sums the outcomes of several fuzzers. */
function totalOf(outcomes: readonly FuzzOutcome[]): { sent: number; answers: number; sockets: number; closes: Record<string, number> } {
  const closes: Record<string, number> = {};
  for (const outcome of outcomes) for (const [code, count] of Object.entries(outcome.closes)) closes[code] = (closes[code] ?? 0) + count;
  const sum = (pick: (outcome: FuzzOutcome) => number) => outcomes.reduce((total, outcome) => total + pick(outcome), 0);
  return { sent: sum((outcome) => outcome.sent), answers: sum((outcome) => outcome.answers), sockets: sum((outcome) => outcome.sockets), closes };
}

/**
 * Fuzzers write random and malformed frames while honest clients stream whole replies; then a
 * newcomer is served. Fails on any unhandled rejection or uncaught exception in this process
 * (the server runs in it) during the run.
 */
async function fuzzWhileStreaming(t: TestContext, transport: string, engine: Engine, plan: MixedFuzz): Promise<Record<string, number>> {
  const server: TestServer = await startTestServer(transport, engine, {
    ...FUZZ_LIMITS,
    maxTokens: 300,
    // Unless the run is about them, the frame limits stay out of the way: every frame is parsed.
    // Held to them, a fuzzer is refused after ~10 frames and flood-closed after ~10 refusals.
    ...(plan.rateLimited ? { framesPerSecond: 5, frameBurst: 5, floodStrikes: 10 } : { framesPerSecond: 100_000, frameBurst: 100_000 }),
    upgradesPerMinute: 100_000,
  });
  const faults: unknown[] = [];
  const onFault = (reason: unknown) => faults.push(reason);
  process.on('unhandledRejection', onFault);
  process.on('uncaughtException', onFault);
  try {
    const witness = await server.client('witness');
    const witnessId = witness.send('tell me the whole story');
    assert.equal((await witness.terminal(witnessId)).type, 'done');
    const reference = witness.replyText(witnessId);

    const samples = Array.from({ length: plan.fuzzers }, (_, index) => fc.sample(fuzzFrame(FUZZ_LIMITS), { numRuns: plan.framesPerFuzzer, seed: plan.seed + index }));
    const honest = async (index: number): Promise<string[]> => {
      const client = await server.client(`honest${index}`);
      const texts: string[] = [];
      let conversationId: string | undefined;
      for (let turn = 0; turn < REPLIES_PER_HONEST_CLIENT; turn++) {
        const id = client.send(`tell me a story, part ${turn}`, conversationId);
        conversationId = (await client.waitForType('accepted', id)).conversationId;
        const terminal = await client.terminal(id, 60_000);
        assert.equal(terminal.type, 'done', JSON.stringify(terminal));
        texts.push(client.replyText(id));
      }
      return texts;
    };
    const [streams, outcomes] = await Promise.all([
      Promise.all(Array.from({ length: HONEST_CLIENTS }, (_, index) => honest(index))),
      Promise.all(samples.map((frames, index) => runFuzzer(server, `fuzzer${index}`, frames, { rateLimited: plan.rateLimited }))),
    ]);

    const total = totalOf(outcomes);
    t.diagnostic(
      `${transport}: ${total.sent} fuzz frames on ${total.sockets} sockets, ${total.answers} answers, sockets closed by the server ${JSON.stringify(total.closes)}, ` +
        `${HONEST_CLIENTS * REPLIES_PER_HONEST_CLIENT} honest replies`,
    );
    for (const texts of streams) for (const text of texts) assert.equal(text, reference, 'a well-behaved stream came out whole and in order');
    assert.deepEqual(outcomes.flatMap((outcome) => outcome.problems), []);
    assert.equal(total.sent, plan.fuzzers * plan.framesPerFuzzer);

    // The server still serves a fresh client.
    const late = await server.client('late');
    const lateId = late.send('still alive?');
    assert.equal((await late.terminal(lateId)).type, 'done');
    assert.equal(late.replyText(lateId), reference);
    assert.deepEqual(faults, [], 'no unhandled rejection or uncaught exception');
    return total.closes;
  } finally {
    process.off('unhandledRejection', onFault);
    process.off('uncaughtException', onFault);
    await server.stop();
  }
}

for (const transport of TRANSPORTS) {
  describe(`fuzzing over ${transport}`, () => {
    let engine: GatedEngine;
    before(async () => {
      engine = await loadGatedTinyEngine({ slots: 2, contextSize: 2048 });
    });
    afterEach(() => engine.gate.open());
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
        // The honest reply streams a little and is still running through all of the fuzzing.
        engine.gate.hold(5);
        const stream = honest.send('tell me a story');
        await honest.waitForType('delta', stream);
        const samples = fuzzers.map((_, index) => fc.sample(invalidFrame, { numRuns: FRAMES_PER_CLIENT, seed: 1000 + index }));
        fuzzers.forEach((client, index) => {
          for (const frame of samples[index] ?? []) client.sendRaw(frame);
          client.sendRaw(Buffer.from([0xff, 0x00, 0x01]), true);
        });
        const expected = FRAMES_PER_CLIENT + 1;
        for (const client of fuzzers) {
          await client.waitFor(() => client.frames.filter((frame) => frame.type === 'error').length >= expected, 30_000);
        }
        assert.equal(honest.terminalsFor(stream).length, 0, 'the honest reply was streaming throughout');
        engine.gate.open();
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

    test('thousands of random, malformed and limit-edge frames leave well-behaved streams intact and crash nothing', async (t) => {
      const closes = await fuzzWhileStreaming(t, transport, engine, { fuzzers: 4, framesPerFuzzer: 1000, seed: 7100, rateLimited: false });
      // uWS ends an over-limit socket without a close frame: its client sees 1006 (uwsTransport.ts).
      assert.ok((closes[transport === 'uws' ? '1006' : '1009'] ?? 0) > 0, 'some frames were past maxFrameBytes');
    });

    test('fuzzers held to the frame rate limit are refused and flood-closed (4429), reconnect, and disturb nobody', async (t) => {
      const closes = await fuzzWhileStreaming(t, transport, engine, { fuzzers: 2, framesPerFuzzer: 400, seed: 7200, rateLimited: true });
      assert.ok((closes['4429'] ?? 0) > 0, 'some fuzzers were closed for flooding');
    });
  });
}
