import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { LlamaContext } from 'node-llama-cpp';
import { DecodeBarrier } from '../../server/engine/DecodeBarrier.js';

/** Lets every promise chain and I/O callback in flight run; timers do not advance. */
const flush = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** A decode request as node-llama-cpp 3.21.1 queues it (the fields the barrier reads). */
interface Request {
  sequenceId: number;
  tokens?: number[];
  logits?: boolean[];
  firstTokenSequenceIndex?: number;
}

/**
 * Stands in for node-llama-cpp's LlamaContext: records each queued decode and lets the test
 * finish it. A request with tokens resolves, as node-llama-cpp's does, with the results of the
 * tokens whose logits were asked for, by position; one without resolves with a label.
 */
class FakeContext {
  readonly queued: number[] = [];
  /** Every request with tokens: its sequence, token count and first position. */
  readonly requests: Array<{ sequenceId: number; tokens: number; first: number }> = [];
  private readonly pending = new Map<number, () => void>();

  _decodeTokens(request: Request): Promise<unknown> {
    this.queued.push(request.sequenceId);
    const { tokens, logits, firstTokenSequenceIndex: first = 0 } = request;
    if (tokens === undefined) return new Promise((resolve) => this.pending.set(request.sequenceId, () => resolve(`decoded ${request.sequenceId}`)));
    this.requests.push({ sequenceId: request.sequenceId, tokens: tokens.length, first });
    const results = (logits ?? []).flatMap((wanted, index) => (wanted ? [[first + index, tokens[index]]] : []));
    return new Promise((resolve) => this.pending.set(request.sequenceId, () => resolve(results)));
  }

  /** Finishes every decode in progress, over and over, until `requests` have all settled. */
  async drain(requests: readonly Promise<unknown>[]): Promise<void> {
    let settled = false;
    const all = Promise.all(requests).then(() => { settled = true; });
    while (!settled) {
      for (const id of [...this.pending.keys()]) this.finish(id);
      await flush();
    }
    await all;
    this.queued.length = 0;
  }

  /** Finishes the decode of a sequence, as the dispatcher does after llama_decode and sampling. */
  finish(sequenceId: number): void {
    const resolve = this.pending.get(sequenceId);
    assert.ok(resolve, `no decode in progress for sequence ${sequenceId}`);
    this.pending.delete(sequenceId);
    resolve();
  }
}

const MAX_WAIT_MS = 30;

function setup(options: { maxWaitMs?: number; promptsPerDecode?: number; promptChunkTokens?: number } = {}): {
  fake: FakeContext;
  barrier: DecodeBarrier;
  decode: (request: number | Request) => Promise<unknown>;
} {
  const fake = new FakeContext();
  const barrier = DecodeBarrier.install(fake as unknown as LlamaContext, { maxWaitMs: MAX_WAIT_MS, ...options });
  assert.ok(barrier);
  // Through the context's (wrapped) method, as node-llama-cpp's sequences call it.
  const decode = (request: number | Request): Promise<unknown> =>
    (fake as unknown as { _decodeTokens: (request: Request, mapper: unknown) => Promise<unknown> })._decodeTokens(typeof request === 'number' ? { sequenceId: request } : request, undefined);
  return { fake, barrier, decode };
}

test('prompts go to the context one at a time, in arrival order, each as soon as the one before is done', async () => {
  const { fake, barrier, decode } = setup();
  for (const id of [2, 0, 1]) barrier.begin(id);
  const prompts = [decode(2), decode(0), decode(1)];
  assert.deepEqual(fake.queued, [2], 'the first prompt goes at once');
  fake.finish(2);
  await prompts[0];
  assert.deepEqual(fake.queued, [2, 0], 'the next starts when the first is done');
  // Sequence 2 now generates: its step shares the decode with sequence 0's prompt.
  const step = decode(2);
  assert.deepEqual(fake.queued, [2, 0, 2]);
  fake.finish(0);
  fake.finish(2);
  await Promise.all([prompts[1], step]);
  assert.deepEqual(fake.queued, [2, 0, 2, 1]);
  fake.finish(1);
  await prompts[2];
  barrier.dispose();
});

test('a generation stopped while its prompt waits gets its request through at once, and the queue goes on', async () => {
  const { fake, barrier, decode } = setup();
  for (const id of [0, 1, 2]) barrier.begin(id);
  const prompts = [decode(0), decode(1), decode(2)];
  barrier.end(1);
  assert.deepEqual(fake.queued, [0, 1], 'the stopped one is not kept waiting (node-llama-cpp then sees the abort)');
  fake.finish(1);
  await prompts[1];
  fake.finish(0);
  await prompts[0];
  assert.deepEqual(fake.queued, [0, 1, 2], 'the remaining prompt follows the one in progress');
  fake.finish(2);
  await prompts[2];
  barrier.dispose();
});

test('in lockstep, requests reach the context together and in ascending order', async () => {
  const { fake, barrier, decode } = setup();
  for (const id of [0, 1, 2]) barrier.begin(id);
  // Each generation joins the lockstep with its first request.
  await fake.drain([decode(0), decode(1), decode(2)]);

  const step = [decode(2), decode(0)];
  assert.deepEqual(fake.queued, [], 'held until sequence 1 asks too');
  step.push(decode(1));
  assert.deepEqual(fake.queued, [0, 1, 2], 'all three, in id order, in the same tick');
  for (const id of [0, 1, 2]) fake.finish(id);
  assert.deepEqual(await Promise.all(step), ['decoded 2', 'decoded 0', 'decoded 1']);
  barrier.dispose();
});

test('a generation whose decode is in progress is waited for beyond maxWaitMs, so drifted groups merge', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const { fake, barrier, decode } = setup();
  barrier.begin(0);
  barrier.begin(1);
  await fake.drain([decode(0), decode(1)]);
  // A stall splits a step: the timer sends sequence 1 alone, and sequence 0 comes late.
  const late1 = decode(1);
  t.mock.timers.tick(MAX_WAIT_MS);
  await flush();
  assert.deepEqual(fake.queued, [1]);
  const late0 = decode(0);
  t.mock.timers.tick(MAX_WAIT_MS * 3);
  await flush();
  assert.deepEqual(fake.queued, [1], 'sequence 0 waits, without a time limit, for sequence 1 being decoded');
  fake.finish(1);
  await late1;
  const next1 = decode(1);
  assert.deepEqual(fake.queued, [1, 0, 1], 'back in one step');
  fake.finish(0);
  fake.finish(1);
  await Promise.all([late0, next1]);
  barrier.dispose();
});

test('a generation joining mid-flight does not stall the others while its prompt is decoded', async () => {
  const { fake, barrier, decode } = setup();
  barrier.begin(0);
  barrier.begin(1);
  await fake.drain([decode(0), decode(1)]);
  barrier.begin(2);
  const prompt = decode(2);
  const step = [decode(1), decode(0)];
  assert.deepEqual(fake.queued, [2, 0, 1], 'the step goes ahead while the newcomer\'s prompt is in progress');
  fake.finish(0);
  fake.finish(1);
  await Promise.all(step);
  fake.finish(2);
  await prompt;
  fake.queued.length = 0;
  const joined = [decode(2), decode(0)];
  assert.deepEqual(fake.queued, [], 'from its second request on, the newcomer is part of the step');
  joined.push(decode(1));
  assert.deepEqual(fake.queued, [0, 1, 2]);
  for (const id of [0, 1, 2]) fake.finish(id);
  await Promise.all(joined);
  barrier.dispose();
});

test('a generation that stalls between decodes holds the others back at most maxWaitMs', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const { fake, barrier, decode } = setup();
  barrier.begin(0);
  barrier.begin(1);
  await fake.drain([decode(0), decode(1)]);
  const held = decode(0);
  t.mock.timers.tick(MAX_WAIT_MS - 1);
  await flush();
  assert.deepEqual(fake.queued, [], 'held while the other may still come');
  t.mock.timers.tick(1);
  await flush();
  assert.deepEqual(fake.queued, [0], 'released alone after maxWaitMs');
  fake.finish(0);
  await held;
  barrier.dispose();
});

test('end() lets the others go at once and sends a held request of the ended generation ahead', async () => {
  const { fake, barrier, decode } = setup();
  for (const id of [0, 1, 2]) barrier.begin(id);
  // Each generation joins the lockstep with its first request.
  await fake.drain([decode(0), decode(1), decode(2)]);

  const own = decode(2);
  assert.deepEqual(fake.queued, []);
  barrier.end(2);
  assert.deepEqual(fake.queued, [2], 'the stopped generation does not wait for the step');
  const step = [decode(1)];
  barrier.end(0);
  assert.deepEqual(fake.queued, [2, 1], 'with sequence 0 gone, sequence 1 is the whole step');
  step.push(decode(0));
  assert.deepEqual(fake.queued, [2, 1, 0], 'a sequence that is not generating passes straight through');
  for (const id of [2, 1, 0]) fake.finish(id);
  await Promise.all([own, ...step]);
  barrier.dispose();
});

test('a lone generation is never held, and dispose() restores the context', async () => {
  const { fake, barrier, decode } = setup();
  barrier.begin(3);
  const lone = decode(3);
  assert.deepEqual(fake.queued, [3]);
  fake.finish(3);
  await lone;
  barrier.dispose();
  assert.equal(Object.hasOwn(fake, '_decodeTokens'), false, 'the own property is gone; the prototype method serves again');
});

test('a prompt that started while its generation was alone still goes before the next prompt, not in the same decode', async () => {
  // Through a server, requests arrive a few milliseconds apart: the first begins alone.
  const { fake, barrier, decode } = setup();
  barrier.begin(0);
  const first = decode(0);
  barrier.begin(1);
  const second = decode(1);
  assert.deepEqual(fake.queued, [0], 'the second prompt waits for the first instead of joining its decode');
  fake.finish(0);
  await first;
  assert.deepEqual(fake.queued, [0, 1]);
  // Sequence 0 now generates and steps alongside the second prompt.
  const step = decode(0);
  assert.deepEqual(fake.queued, [0, 1, 0]);
  fake.finish(1);
  fake.finish(0);
  await Promise.all([second, step]);
  barrier.dispose();
});

test('a generation that ran alone rejoins the step at once, without waiting behind a prompt', async () => {
  const { fake, barrier, decode } = setup();
  barrier.begin(0);
  await fake.drain([decode(0)]);
  await fake.drain([decode(0)]);
  barrier.begin(1);
  const prompt = decode(1);
  const next = decode(0);
  assert.deepEqual(fake.queued, [1, 0], 'its token shares the decode with the newcomer\'s prompt');
  fake.finish(1);
  fake.finish(0);
  await Promise.all([prompt, next]);
  fake.queued.length = 0;
  const step = [decode(1)];
  assert.deepEqual(fake.queued, [], 'both are participants now: the step waits for sequence 0');
  step.push(decode(0));
  assert.deepEqual(fake.queued, [0, 1]);
  fake.finish(0);
  fake.finish(1);
  await Promise.all(step);
  barrier.dispose();
});

test('with promptsPerDecode 2, waiting prompts start in pairs, in arrival order, once the prompts in progress are done', async () => {
  const { fake, barrier, decode } = setup({ promptsPerDecode: 2 });
  for (const id of [0, 1, 2, 3, 4]) barrier.begin(id);
  const prompts = [0, 1, 2, 3, 4].map((id) => decode(id));
  assert.deepEqual(fake.queued, [0], 'the first goes at once, alone');
  fake.finish(0);
  await prompts[0];
  assert.deepEqual(fake.queued, [0, 1, 2], 'the next two go together');
  fake.finish(1);
  await prompts[1];
  assert.deepEqual(fake.queued, [0, 1, 2], 'the pair is one group: the next waits for both');
  fake.finish(2);
  await prompts[2];
  assert.deepEqual(fake.queued, [0, 1, 2, 3, 4]);
  fake.finish(3);
  fake.finish(4);
  await Promise.all(prompts);
  barrier.dispose();
});

test('beside a running generation, a long prompt goes in chunks, each after the first together with the step, and resolves with every chunk\'s results in order', async (t) => {
  // Only the order of events matters here: the maxWaitMs timer never fires.
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const { fake, barrier, decode } = setup({ maxWaitMs: 1000, promptChunkTokens: 128 });
  barrier.begin(0);
  await fake.drain([decode({ sequenceId: 0, tokens: [1, 2, 3], logits: [false, false, true], firstTokenSequenceIndex: 0 })]);
  barrier.begin(1);
  const tokens = Array.from({ length: 300 }, (_, index) => 1000 + index);
  const logits = tokens.map((_, index) => index === 150 || index === 299);
  const prompt = decode({ sequenceId: 1, tokens, logits, firstTokenSequenceIndex: 10 });
  assert.deepEqual(fake.requests.slice(1), [{ sequenceId: 1, tokens: 128, first: 10 }], 'the first chunk goes at once');
  const step = decode({ sequenceId: 0, tokens: [4], logits: [true], firstTokenSequenceIndex: 3 });
  assert.deepEqual(fake.requests.slice(2), [], 'the running generation\'s step waits for the chunk in progress');
  fake.finish(1);
  await flush();
  assert.deepEqual(fake.requests.slice(2), [{ sequenceId: 0, tokens: 1, first: 3 }, { sequenceId: 1, tokens: 128, first: 138 }], 'the next chunk and the step go together, lowest id first');
  fake.finish(0);
  await step;
  await flush();
  assert.deepEqual(fake.requests.slice(4), [], 'the last chunk waits for the next step (and the step for the chunk in progress)');
  fake.finish(1);
  await flush();
  const last = decode({ sequenceId: 0, tokens: [5], logits: [true], firstTokenSequenceIndex: 4 });
  assert.deepEqual(fake.requests.slice(4), [{ sequenceId: 0, tokens: 1, first: 4 }, { sequenceId: 1, tokens: 44, first: 266 }]);
  fake.finish(0);
  fake.finish(1);
  await last;
  assert.deepEqual(await prompt, [[160, 1150], [309, 1299]], 'the whole request\'s results, in order');
  barrier.dispose();
});
