import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI, { APIError } from 'openai';
import { ensureModel } from '../../models/ensureModel.js';
import type { ReadyFrame } from '../../shared/protocol.js';
import { readModelFile, type ModelFile } from '../../server/models/ModelFile.js';
import { createApiKey } from '../helpers/createApiKey.js';
import { GatedEngine } from '../helpers/GatedEngine.js';
import { heldModelPool, type HeldModelPool } from '../helpers/heldModelPool.js';
import { startTestServer, type TestServer } from '../helpers/startTestServer.js';
import { waitUntil } from '../helpers/waitUntil.js';

/**
 * Several models behind one server: the tiny model (the default) and the demo model, which answer
 * the same prompt differently, so a test can tell which one replied. Loads are real (llama.cpp);
 * a test that needs a load still in progress holds it (`holdLoad`), and replies run behind gates.
 */
const TINY = 'parley-tiny';
const DEMO = 'parley-demo';

async function modelFiles(): Promise<ModelFile[]> {
  const tiny = await ensureModel('tiny');
  const demo = await ensureModel('demo');
  return [await readModelFile(tiny.path), await readModelFile(demo.path)];
}

function sendTo(client: { sendFrame(frame: Record<string, unknown>): void }, text: string, extra: Record<string, unknown> = {}): string {
  const id = `r${Math.random().toString(36).slice(2, 10)}`;
  client.sendFrame({ type: 'send', id, text, ...extra });
  return id;
}

function replyText(client: { framesFor(id: string): Array<{ type: string }> }, id: string): string {
  return client.framesFor(id).filter((frame): frame is { type: 'delta'; text: string } => frame.type === 'delta').map((frame) => frame.text).join('');
}

describe('several models', () => {
  let files: ModelFile[];
  before(async () => {
    files = await modelFiles();
  });

  describe('choosing and loading on demand', () => {
    let models: HeldModelPool;
    let server: TestServer;
    before(async () => {
      models = heldModelPool(files);
      server = await startTestServer('ws', models.pool, { maxTokens: 24 });
    });
    after(async () => {
      await server.stop();
      await models.pool.close();
    });

    test('the ready frame, /v1/models and /api/health list every model; only the default is loaded at start', async () => {
      const client = await server.client();
      const ready = client.frames.find((frame) => frame.type === 'ready') as ReadyFrame;
      assert.equal(ready.model.id, TINY);
      assert.deepEqual(ready.models.map(({ id, loaded }) => ({ id, loaded })), [{ id: TINY, loaded: true }, { id: DEMO, loaded: false }]);
      assert.deepEqual(ready.models.map(({ demo }) => demo), [false, true], 'the demo file says it is the demo model');
      assert.ok(ready.models[0]?.runtime !== undefined, 'a loaded model says where it runs');
      assert.equal(ready.models[1]?.runtime, undefined, 'an unloaded one runs nowhere yet');
      assert.deepEqual(models.loads, [TINY]);
      const key = await createApiKey(server, 'tester');
      const openai = new OpenAI({ apiKey: key, baseURL: `${server.baseUrl}/v1`, maxRetries: 0 });
      const listed = await openai.models.list();
      assert.deepEqual(listed.data.map((model) => model.id), [TINY, DEMO]);
    });

    test('a request for an unloaded model waits in line while it loads, then the model answers; the conversation keeps its model', async () => {
      const client = await server.client('picker');
      const releaseLoad = models.holdLoad(DEMO);
      const prompt = 'the cat sat on the';
      const id = sendTo(client, prompt, { model: DEMO });
      const queued = await client.waitForType('queued', id);
      assert.equal(queued.position, 1);
      assert.equal(client.framesFor(id).some((frame) => frame.type === 'accepted'), false, 'not admitted while the model loads');
      releaseLoad();
      const terminal = await client.terminal(id);
      assert.equal(terminal.type, 'done');
      const accepted = client.framesFor(id).find((frame) => frame.type === 'accepted') as { conversationId: string };
      const demoText = replyText(client, id);

      // The same prompt on the tiny model answers differently: the demo model replied.
      const tinyId = sendTo(client, prompt);
      assert.equal((await client.terminal(tinyId)).type, 'done');
      assert.notEqual(replyText(client, tinyId), demoText);

      // The conversation remembers the demo model: a follow-up without a model goes to it.
      const follow = sendTo(client, 'and then', { conversationId: accepted.conversationId });
      assert.equal((await client.terminal(follow)).type, 'done');
      client.sendFrame({ type: 'list_conversations' });
      const listing = await client.waitForType('conversations');
      const stored = listing.items.find((item) => item.id === accepted.conversationId);
      assert.equal(stored?.model, DEMO);
      assert.deepEqual(models.loads, [TINY, DEMO], 'each model loaded once');
    });

    test('an unknown model is refused with model_not_found, on the socket and the API', async () => {
      const client = await server.client();
      const id = sendTo(client, 'hello', { model: 'gpt-4o' });
      const terminal = await client.terminal(id);
      assert.equal(terminal.type, 'error');
      assert.equal((terminal as { code: string }).code, 'model_not_found');
      const key = await createApiKey(server, 'api');
      const openai = new OpenAI({ apiKey: key, baseURL: `${server.baseUrl}/v1`, maxRetries: 0 });
      await assert.rejects(openai.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }), (error: unknown) => error instanceof APIError && error.status === 404 && /does not exist/.test(error.message));
      const completion = await openai.chat.completions.create({ model: DEMO, messages: [{ role: 'user', content: 'the cat' }], max_tokens: 8 });
      assert.equal(completion.model, DEMO);
    });
  });

  describe('one model loaded at a time', () => {
    let models: HeldModelPool;
    let server: TestServer;
    before(async () => {
      models = heldModelPool(files, { maxLoaded: 1 });
      server = await startTestServer('ws', models.pool, { maxTokens: 24 });
    });
    after(async () => {
      await server.stop();
      await models.pool.close();
    });

    test('a reply on one model runs on, uncut, while a request for another waits; then the other loads in its place', async () => {
      const tinyEngine = models.engines.get(TINY) as GatedEngine;
      tinyEngine.gate.hold(2);
      const alice = await server.client('alice');
      const bob = await server.client('bob');
      const running = alice.send('tell me a story');
      await alice.waitForType('delta', running);
      const waiting = sendTo(bob, 'the cat', { model: DEMO });
      assert.equal((await bob.waitForType('queued', waiting)).position, 1);
      // Alice's reply keeps streaming while Bob waits for the demo model.
      const before = alice.framesFor(running).filter((frame) => frame.type === 'delta').length;
      tinyEngine.gate.allow(2);
      await alice.waitFor((frame) => frame.type === 'delta' && 'id' in frame && frame.id === running && alice.framesFor(running).filter((f) => f.type === 'delta').length >= before + 2);
      assert.deepEqual(models.loads, [TINY], 'the demo model waits for room: the tiny model is busy');
      tinyEngine.gate.open();
      assert.equal((await alice.terminal(running)).type, 'done', 'never cut by the other model');
      assert.equal((await bob.terminal(waiting)).type, 'done');
      assert.deepEqual(models.loads, [TINY, DEMO]);
      assert.deepEqual(models.pool.list().map(({ id, loaded }) => ({ id, loaded })), [{ id: TINY, loaded: false }, { id: DEMO, loaded: true }]);
    });

    test('while a model loads, the socket still answers, and a stop ends the waiting request at once', async () => {
      // The previous test left the demo model loaded and the tiny one unloaded.
      const releaseLoad = models.holdLoad(TINY);
      const client = await server.client('impatient');
      const id = client.send('hello again');
      assert.equal((await client.waitForType('queued', id)).position, 1);
      client.sendFrame({ type: 'list_conversations' });
      await client.waitForType('conversations');
      client.cancel(id);
      const terminal = await client.terminal(id);
      assert.equal(terminal.type, 'cancelled');
      assert.equal(client.framesFor(id).some((frame) => frame.type === 'accepted'), false);
      releaseLoad();
      // The load goes on and the model serves the next request.
      const next = client.send('hello');
      assert.equal((await client.terminal(next)).type, 'done');
      assert.equal(client.terminalsFor(id).length, 1);
    });
  });

  describe('idle unload and the memory limit (the models as the server finds them)', () => {
    let server: TestServer;
    before(async () => {
      const [tiny, demo] = files as [ModelFile, ModelFile];
      // Room for the tiny model with its contexts, not for the demo model: estimateModelMemory
      // counts the weights, the KV cache and 32 MiB of buffers.
      server = await startTestServer('ws', undefined, {
        models: [tiny.path, demo.path],
        threads: 1,
        slots: 2,
        contextSize: 1024,
        temperature: 0,
        maxTokens: 16,
        modelMemoryMib: 34 + Math.ceil((tiny.fileBytes * 1.05 + tiny.kvBytesPerToken * 2048) / (1024 * 1024)),
      });
    });
    after(async () => {
      await server.stop();
    });

    test('a model that cannot fit in the memory limit is refused with a clear error before it loads', async () => {
      const client = await server.client();
      const id = sendTo(client, 'hello', { model: DEMO });
      const terminal = (await client.terminal(id)) as { type: string; code: string; message: string };
      assert.equal(terminal.type, 'error');
      assert.equal(terminal.code, 'model_unavailable');
      assert.match(terminal.message, /needs about \d+ MiB.*--model-memory-mib/);
      assert.equal(server.started.models.info(DEMO).loaded, false);
      // The default model serves on.
      const ok = client.send('hello');
      assert.equal((await client.terminal(ok)).type, 'done');
    });
  });

  test('a model other than the default unloads after --model-idle-seconds without requests', async () => {
    const [tiny, demo] = files as [ModelFile, ModelFile];
    const server = await startTestServer('ws', undefined, { models: [tiny.path, demo.path], threads: 1, slots: 1, contextSize: 512, temperature: 0, maxTokens: 8, modelIdleSeconds: 1 });
    try {
      const client = await server.client();
      const id = sendTo(client, 'the cat', { model: DEMO });
      assert.equal((await client.terminal(id)).type, 'done');
      assert.equal(server.started.models.info(DEMO).loaded, true);
      // The log line comes once the unload has finished (the model reads as not loaded from its start).
      await waitUntil(() => server.logs.records.some((line) => line.msg === `model ${DEMO} unloaded` && line.why === 'idle'), 20_000, 'the demo model unloaded');
      assert.equal(server.started.models.info(DEMO).loaded, false);
      assert.equal(server.started.models.info(TINY).loaded, true, 'the default model stays');
      const health = (await (await fetch(`${server.baseUrl}/api/health`)).json()) as { models: Array<{ id: string; loaded: boolean }> };
      assert.deepEqual(health.models.map(({ id, loaded }) => ({ id, loaded })), [{ id: TINY, loaded: true }, { id: DEMO, loaded: false }]);
    } finally {
      await server.stop();
    }
  });
});
