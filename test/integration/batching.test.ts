import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { LlamaContext } from 'node-llama-cpp';
import type { LlamaEngine } from '../../server/engine/LlamaEngine.js';
import { loadTinyEngine } from '../helpers/startTestServer.js';

const SLOTS = 4;
const MAX_TOKENS = 48;
const PROMPTS = ['Hello there', 'What is the weather like?', 'Tell me a story', 'Count to ten'];

/** The parts of node-llama-cpp's native context (`LlamaContext._ctx`) every decode goes through. */
interface NativeContext {
  initBatch(size: number): void;
  addToBatch(sequenceId: number, firstTokenIndex: number, tokens: Uint32Array, logitIndexes: Uint32Array): Uint32Array;
  decodeBatch(): Promise<void>;
}

/** The sequence ids of every llama_decode, in the order they were put into the batch. */
function recordDecodes(engine: LlamaEngine): { readonly batches: number[][] } {
  const context = (engine as unknown as { context: LlamaContext }).context;
  const native = (context as unknown as { _ctx: NativeContext })._ctx;
  const record = { batches: [] as number[][] };
  let pending: number[] = [];
  const initBatch = native.initBatch.bind(native);
  const addToBatch = native.addToBatch.bind(native);
  const decodeBatch = native.decodeBatch.bind(native);
  const define = <K extends keyof NativeContext>(name: K, value: NativeContext[K]) =>
    Object.defineProperty(native, name, { value, configurable: true, writable: true });
  define('initBatch', (size) => {
    pending = [];
    initBatch(size);
  });
  define('addToBatch', (sequenceId, firstTokenIndex, tokens, logitIndexes) => {
    pending.push(...Array.from({ length: tokens.length }, () => sequenceId));
    return addToBatch(sequenceId, firstTokenIndex, tokens, logitIndexes);
  });
  define('decodeBatch', () => {
    record.batches.push(pending);
    return decodeBatch();
  });
  return record;
}

function generate(engine: LlamaEngine, slot: number, text: string) {
  return engine.generate({
    slot,
    conversationId: `conversation-${slot}-${text}`,
    history: [],
    text,
    maxTokens: MAX_TOKENS,
    signal: AbortSignal.timeout(60_000),
    onText: () => undefined,
  });
}

let engine: LlamaEngine;
let decodes: { readonly batches: number[][] };

before(async () => {
  engine = await loadTinyEngine({ slots: SLOTS });
  decodes = recordDecodes(engine);
});

after(async () => {
  await engine.dispose();
});

test('replies generated together are exactly the replies each would get alone (greedy)', async () => {
  const alone = [];
  for (const [slot, text] of PROMPTS.entries()) alone.push((await generate(engine, slot, text)).text);
  const together = await Promise.all(PROMPTS.map((text, slot) => generate(engine, slot, text)));
  assert.deepEqual(together.map((result) => result.text), alone);
  for (const result of together) assert.equal(result.completionTokens, MAX_TOKENS);
});

test('concurrent replies advance in lockstep: one decode per step carries every reply\'s token, in ascending sequence order', async () => {
  decodes.batches.length = 0;
  await Promise.all(PROMPTS.map((text, slot) => generate(engine, slot, text)));
  // Generation steps: one token per sequence. Prompt decodes carry several tokens of one sequence.
  const steps = decodes.batches.filter((batch) => new Set(batch).size === batch.length);
  const full = steps.filter((batch) => batch.length === SLOTS);
  // Each reply needs MAX_TOKENS - 1 steps after its prompt; nearly all of them carry all four.
  assert.ok(full.length >= MAX_TOKENS - 4, `only ${full.length} of ${steps.length} steps carried all ${SLOTS} replies: ${JSON.stringify(steps.map((batch) => batch.length))}`);
  for (const batch of full) {
    // Consecutive ascending ids: llama.cpp computes the step in one pass over the weights.
    assert.deepEqual(batch, [...batch].sort((a, b) => a - b), `step order ${JSON.stringify(batch)}`);
    assert.equal(batch.at(-1)! - batch[0]!, SLOTS - 1, `step ids ${JSON.stringify(batch)} are not consecutive`);
  }
});

test('a reply stopped mid-step lets the others go on without waiting for it, and they finish intact', async () => {
  const alone = (await generate(engine, 0, PROMPTS[0]!)).text;
  const controller = new AbortController();
  let stopped = 0;
  const victim = engine.generate({
    slot: 1,
    conversationId: 'victim',
    history: [],
    text: PROMPTS[1]!,
    maxTokens: MAX_TOKENS,
    signal: controller.signal,
    onText: () => {
      if (++stopped === 5) controller.abort();
    },
  });
  const [survivor, stoppedResult] = await Promise.all([generate(engine, 0, PROMPTS[0]!), victim]);
  assert.equal(stoppedResult.stopReason, 'aborted');
  assert.ok(stoppedResult.completionTokens < MAX_TOKENS);
  assert.equal(survivor.text, alone);
  assert.equal(survivor.completionTokens, MAX_TOKENS);
});

test('a long prompt beside a running reply goes in chunks, each with the running reply\'s step, and both replies come out exactly as they do alone', async () => {
  const long = Array.from({ length: 80 }, (_, i) => PROMPTS[i % PROMPTS.length]).join(' ');
  // As long as the context allows: the running reply is stopped once the long one is done, so
  // it runs beside every chunk of the prompt however fast the machine is.
  const runningTokens = 900;
  const runningAlone = (await engine.generate({ slot: 0, conversationId: 'running-alone', history: [], text: PROMPTS[2]!, maxTokens: runningTokens, signal: AbortSignal.timeout(60_000), onText: () => undefined })).text;
  const longAlone = await generate(engine, 1, long);
  assert.ok(longAlone.promptTokens > 2 * 128, `a prompt of several chunks (${longAlone.promptTokens} tokens)`);

  decodes.batches.length = 0;
  let streaming!: () => void;
  const started = new Promise<void>((resolve) => { streaming = resolve; });
  const stop = new AbortController();
  const running = engine.generate({
    slot: 0, conversationId: 'running-beside', history: [], text: PROMPTS[2]!, maxTokens: runningTokens, signal: stop.signal,
    onText: () => streaming(),
  });
  await started;
  const beside = await generate(engine, 1, long);
  stop.abort();
  const ran = await running;
  assert.equal(ran.stopReason, 'aborted', 'the running reply was still running when the long one was done');
  assert.ok(runningAlone.startsWith(ran.text), 'the running reply is the start of what it is alone');
  assert.equal(beside.text, longAlone.text);

  const counts = decodes.batches.map((batch) => {
    const perSequence = new Map<number, number>();
    for (const id of batch) perSequence.set(id, (perSequence.get(id) ?? 0) + 1);
    return perSequence;
  });
  // The long prompt's sequence is the one with the most tokens in multi-token decodes.
  const promptTokens = new Map<number, number>();
  for (const perSequence of counts) {
    for (const [id, count] of perSequence) if (count > 1) promptTokens.set(id, (promptTokens.get(id) ?? 0) + count);
  }
  const promptSequence = [...promptTokens].sort((a, b) => b[1] - a[1])[0]?.[0];
  assert.ok(promptSequence !== undefined, 'the prompt was decoded');
  const chunks = counts.filter((perSequence) => (perSequence.get(promptSequence) ?? 0) > 1);
  assert.ok(chunks.length >= 3, `the prompt went in ${chunks.length} decodes`);
  for (const chunk of chunks) assert.ok(chunk.get(promptSequence)! <= 128, `a chunk of ${chunk.get(promptSequence)} tokens`);
  const withStep = chunks.slice(1).filter((perSequence) => [...perSequence].some(([id, count]) => id !== promptSequence && count === 1));
  assert.ok(withStep.length >= chunks.length - 2, `only ${withStep.length} of ${chunks.length - 1} later chunks carried the running reply's step`);
});
