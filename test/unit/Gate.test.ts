import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { GenerateRequest, GenerateResult } from '../../server/engine/Engine.js';
import { Gate } from '../helpers/Gate.js';

/** A scripted engine: emits `pieces` at once, then resolves (or throws `failWith`). */
function scripted(pieces: readonly string[], failWith?: Error) {
  return async (request: GenerateRequest): Promise<GenerateResult> => {
    await Promise.resolve();
    for (const piece of pieces) request.onText(piece);
    if (failWith) throw failWith;
    return { text: pieces.join(''), stopReason: 'max_tokens', promptTokens: 7, completionTokens: pieces.length };
  };
}

function request(signal: AbortSignal, seen: string[]): GenerateRequest {
  return { slot: 0, conversationId: 'c', history: [], text: 'hi', maxTokens: 10, signal, onText: (text) => seen.push(text) };
}

const settledOrPending = (promise: Promise<unknown>) => Promise.race([promise.then(() => 'settled'), new Promise((resolve) => setImmediate(() => resolve('pending')))]);

test('an open gate passes every piece in order and returns the real result', async () => {
  const gate = new Gate();
  const seen: string[] = [];
  const result = await gate.run(request(new AbortController().signal, seen), scripted(['a', 'b', 'c']));
  assert.deepEqual(seen, ['a', 'b', 'c']);
  assert.deepEqual(result, { text: 'abc', stopReason: 'max_tokens', promptTokens: 7, completionTokens: 3 });
});

test('a held gate keeps the reply running after the real engine finished, until it opens', async () => {
  const gate = new Gate();
  gate.hold(2);
  const seen: string[] = [];
  const running = gate.run(request(new AbortController().signal, seen), scripted(['a', 'b', 'c', 'd']));
  await gate.stalled();
  assert.deepEqual(seen, ['a', 'b']);
  assert.equal(await settledOrPending(running), 'pending');
  gate.allow(1);
  await gate.stalled();
  assert.deepEqual(seen, ['a', 'b', 'c']);
  gate.open();
  assert.equal((await running).text, 'abcd');
  assert.deepEqual(seen, ['a', 'b', 'c', 'd']);
});

test('aborting a held reply ends it at once as aborted, with only the text that passed', async () => {
  const gate = new Gate();
  gate.hold(1);
  const seen: string[] = [];
  const controller = new AbortController();
  const running = gate.run(request(controller.signal, seen), scripted(['a', 'b', 'c']));
  await gate.stalled();
  controller.abort();
  const result = await running;
  assert.deepEqual(result, { text: 'a', stopReason: 'aborted', promptTokens: 7, completionTokens: 1 });
  gate.open();
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(seen, ['a'], 'nothing passes after the abort');
});

test('a paced gate lets the pieces through one at a time, in order', async () => {
  const gate = new Gate();
  gate.pace(1);
  const seen: string[] = [];
  const result = await gate.run(request(new AbortController().signal, seen), scripted(['a', 'b', 'c']));
  assert.deepEqual(seen, ['a', 'b', 'c']);
  assert.equal(result.text, 'abc');
  gate.open();
});

test('a real failure after some pieces passes those pieces, then rejects with the failure', async () => {
  const gate = new Gate();
  const seen: string[] = [];
  await assert.rejects(gate.run(request(new AbortController().signal, seen), scripted(['a', 'b'], new Error('boom'))), /boom/);
  assert.deepEqual(seen, ['a', 'b']);
});

test('generations take turns at the gate', async () => {
  const gate = new Gate();
  gate.hold(0);
  const order: string[] = [];
  const runs = ['x', 'y'].map((name) => {
    const r = request(new AbortController().signal, []);
    return gate.run({ ...r, onText: (text) => order.push(text) }, scripted([`${name}1`, `${name}2`, `${name}3`]));
  });
  await gate.stalled(2);
  gate.allow(4);
  await gate.stalled(2);
  assert.deepEqual(order.map((piece) => piece[1]), ['1', '1', '2', '2'], 'two pieces each, in turns');
  gate.open();
  await Promise.all(runs);
  assert.deepEqual(order.filter((piece) => piece.startsWith('x')), ['x1', 'x2', 'x3']);
  assert.deepEqual(order.filter((piece) => piece.startsWith('y')), ['y1', 'y2', 'y3']);
});
