import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import OpenAI, { APIError } from 'openai';
import type { ReadyFrame } from '../../shared/protocol.js';
import type { ConfigInput } from '../../server/config.js';
import type { UpstreamEngine } from '../../server/engine/UpstreamEngine.js';
import { createApiKey } from '../helpers/createApiKey.js';
import { FakeUpstream } from '../helpers/FakeUpstream.js';
import type { GatedEngine } from '../helpers/GatedEngine.js';
import { loadGatedTinyEngine, startTestServer, TRANSPORTS, type TestServer } from '../helpers/startTestServer.js';
import { waitUntil } from '../helpers/waitUntil.js';

/**
 * Upstream engines (`--upstream NAME=URL`): a gateway Parley that generates through other
 * OpenAI-compatible servers. The real path is a gateway in front of a Parley engine node
 * (`--role engine`, the tiny model behind a gate); failures that a real node cannot be made to
 * produce on cue (refusing, failing its health check, dying mid-reply) come from FakeUpstream,
 * which the test drives step by step. Nothing waits on time: replies are held by gates or by the
 * test, and health changes are awaited, not slept for.
 */
const PROMPT = 'Tell me about the harbor.';

/** A gateway with the given upstreams and no local model (the first upstream is the default). */
async function startGateway(transport: string, pulledDir: string, overrides: ConfigInput): Promise<TestServer> {
  return startTestServer(transport, undefined, { pulledModelsDir: pulledDir, temperature: 0, upstreamHealthIntervalMs: 50, ...overrides });
}

function upstreamOf(server: TestServer, id: string): UpstreamEngine {
  return server.started.models.loadedEngine(id) as UpstreamEngine;
}

for (const transport of TRANSPORTS) {
  describe(`upstream engines over ${transport}`, () => {
    let pulledDir: string;
    before(async () => {
      pulledDir = await mkdtemp(join(tmpdir(), 'parley-no-models-'));
    });
    after(async () => {
      await rm(pulledDir, { recursive: true, force: true });
    });

    describe('a gateway in front of a Parley engine node', () => {
      let engine: GatedEngine;
      let node: TestServer;
      let gateway: TestServer;
      let nodeKey: string;
      before(async () => {
        engine = await loadGatedTinyEngine({ slots: 2, contextSize: 1024 });
        node = await startTestServer(transport, engine, { role: 'engine' });
        nodeKey = await createApiKey(node, 'gateway');
        gateway = await startGateway(transport, pulledDir, { upstreams: [`tiny=${node.baseUrl}`], upstreamKeys: [`tiny=${nodeKey}`] });
      });
      afterEach(() => engine.gate.open());
      after(async () => {
        await gateway.stop();
        await node.stop();
        await engine.dispose();
      });

      test('the engine node serves /v1 but no web page and no chat socket; /api and probes remain', async () => {
        assert.equal((await fetch(`${node.baseUrl}/`)).status, 404);
        assert.equal((await fetch(`${node.baseUrl}/index.html`)).status, 404);
        assert.equal((await fetch(`${node.baseUrl}/ws`)).status, 404);
        assert.equal((await fetch(`${node.baseUrl}/healthz`)).status, 200);
        const models = await fetch(`${node.baseUrl}/v1/models`, { headers: { authorization: `Bearer ${nodeKey}` } });
        assert.equal(models.status, 200);
        await assert.rejects(node.client(), 'a chat socket is refused');
      });

      test('the upstream model appears by its name in the ready frame and /v1/models, with the node\'s context size', async () => {
        const client = await gateway.client();
        const ready = client.frames.find((frame) => frame.type === 'ready') as ReadyFrame;
        assert.deepEqual(ready.models.map(({ id, loaded }) => ({ id, loaded })), [{ id: 'tiny', loaded: true }]);
        assert.equal(ready.model.id, 'tiny');
        assert.equal(ready.models[0]?.contextSize, 1024, "learnt from the node's /v1/models");
        const key = await createApiKey(gateway, 'lister');
        const list = await new OpenAI({ apiKey: key, baseURL: `${gateway.baseUrl}/v1`, maxRetries: 0 }).models.list();
        assert.deepEqual(list.data.map((model) => model.id), ['tiny']);
      });

      test('a page send and a /v1 request through the gateway get the tiny model\'s own reply', async () => {
        // The node answers the same prompt directly, greedy: the reference text.
        const direct = new OpenAI({ apiKey: nodeKey, baseURL: `${node.baseUrl}/v1`, maxRetries: 0 });
        const reference = await direct.chat.completions.create({ model: node.started.models.defaultModel, messages: [{ role: 'user', content: PROMPT }], max_tokens: 64, temperature: 0 });
        const expected = reference.choices[0]?.message.content ?? '';
        assert.ok(expected.length > 0);

        const client = await gateway.client();
        const id = client.send(PROMPT);
        const terminal = await client.terminal(id);
        assert.equal(terminal.type, 'done');
        assert.equal(client.replyText(id), expected);

        const key = await createApiKey(gateway, 'scripter');
        const api = new OpenAI({ apiKey: key, baseURL: `${gateway.baseUrl}/v1`, maxRetries: 0 });
        const stream = await api.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: PROMPT }], stream: true, stream_options: { include_usage: true } });
        let text = '';
        let usage: OpenAI.CompletionUsage | null | undefined;
        for await (const chunk of stream) {
          text += chunk.choices[0]?.delta.content ?? '';
          if (chunk.usage) usage = chunk.usage;
        }
        assert.equal(text, expected);
        assert.equal(usage?.completion_tokens, reference.usage?.completion_tokens, "usage is the node's own count");
      });

      test('cancel on the page aborts the upstream request: the node\'s reply ends and its slot frees', async () => {
        engine.gate.hold(2);
        const client = await gateway.client();
        const id = client.send(PROMPT);
        await client.waitFor((frame) => frame.type === 'delta' && 'id' in frame && frame.id === id);
        await waitUntil(() => node.started.server.chat.scheduler.activeCount === 1, 20_000, 'the node runs the reply');
        client.cancel(id);
        const terminal = await client.terminal(id);
        assert.equal(terminal.type, 'cancelled');
        // The gate is still held: only the aborted upstream request can end the node's reply.
        await waitUntil(() => node.started.server.chat.scheduler.activeCount === 0, 20_000, "the node's slot frees");
        assert.equal(client.terminalsFor(id).length, 1);
      });
    });

    describe('a gateway in front of fake upstreams', () => {
      let first: FakeUpstream;
      let second: FakeUpstream;
      let gateway: TestServer;
      before(async () => {
        first = await FakeUpstream.start();
        second = await FakeUpstream.start();
        gateway = await startGateway(transport, pulledDir, {
          upstreams: [`solo=${first.url}`, `pool=${first.url}`, `pool=${second.url}`],
          upstreamKeys: ['solo=sk-upstream-secret-1'],
          defaultModel: 'solo',
        });
      });
      // Each test starts with both fakes answering and every upstream back in rotation (a test's
      // refusals take upstreams out until a health check passes).
      afterEach(async () => {
        for (const fake of [first, second]) {
          fake.mode = 'stream';
          fake.health = 200;
          fake.dropNext = 0;
        }
        for (const id of ['solo', 'pool']) await waitUntil(() => upstreamOf(gateway, id).upstreams().every((upstream) => upstream.healthy), 20_000, `${id}: every upstream healthy`);
      });
      after(async () => {
        await gateway.stop();
        await first.close();
        await second.close();
      });

      /** A page reply through the gateway, held at the first fake upstream once its first piece ('Partial') has reached the client. */
      async function heldPageReply() {
        first.mode = 'held';
        const client = await gateway.client();
        const id = client.send('Hello');
        const held = await first.nextHeld();
        held.send('Partial');
        await client.waitFor((frame) => frame.type === 'delta' && 'id' in frame && frame.id === id);
        return { client, id, held };
      }

      test('the request carries the history, the options, stream with usage, the key and the upstream\'s model id', async () => {
        const key = await createApiKey(gateway, 'mapper');
        const api = new OpenAI({ apiKey: key, baseURL: `${gateway.baseUrl}/v1`, maxRetries: 0 });
        const before = first.completions.length;
        const completion = await api.chat.completions.create({
          model: 'solo',
          messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello.' }, { role: 'user', content: 'Again' }],
          max_tokens: 20,
          temperature: 0.3,
          top_p: 0.9,
          seed: 7,
          stop: ['END'],
        });
        assert.equal(completion.choices[0]?.message.content, first.words.join(''));
        assert.equal(completion.usage?.completion_tokens, first.words.length, 'from the final usage chunk');
        assert.equal(completion.usage?.prompt_tokens, 7);
        const sent = first.completions[before];
        assert.ok(sent);
        assert.equal(sent.headers.authorization, 'Bearer sk-upstream-secret-1');
        assert.deepEqual(sent.body.messages, [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello.' }, { role: 'user', content: 'Again' }]);
        assert.equal(sent.body.model, 'fake-model');
        assert.equal(sent.body.stream, true);
        assert.deepEqual(sent.body.stream_options, { include_usage: true });
        assert.equal(sent.body.max_tokens, 20);
        assert.equal(sent.body.temperature, 0.3);
        assert.equal(sent.body.top_p, 0.9);
        assert.equal(sent.body.seed, 7);
        assert.deepEqual(sent.body.stop, ['END']);
        assert.equal(gateway.started.models.info('solo').contextSize, first.contextLength, "the upstream's context_length");
        assert.ok(!gateway.logs.contains('sk-upstream-secret-1'), 'the key is never logged');
      });

      test('an upstream that dies mid-reply ends it with exactly one upstream_failed terminal, the text so far kept', async () => {
        const { client, id, held } = await heldPageReply();
        held.kill();
        const terminal = await client.terminal(id);
        assert.equal(terminal.type, 'error');
        assert.equal((terminal as { code: string }).code, 'upstream_failed');
        assert.equal(client.replyText(id), 'Partial');
        // A later request's end orders the frames: nothing more came for the first one.
        first.mode = 'stream';
        const next = client.send('Again');
        assert.equal((await client.terminal(next)).type, 'done');
        assert.equal(client.terminalsFor(id).length, 1);
      });

      test('a reply whose upstream dies while its owner is away is resumed: the text streamed, then the one upstream_failed', async () => {
        first.mode = 'held';
        const token = await gateway.token('traveller');
        const away = await gateway.connect(token);
        const id = away.send('Hello');
        const held = await first.nextHeld();
        held.send('Par');
        held.send('tial');
        await away.waitFor((frame) => frame.type === 'delta' && 'id' in frame && frame.id === id && frame.seq >= 1);
        away.drop();
        held.kill();
        await waitUntil(() => gateway.started.server.chat.liveCount === 0, 20_000, 'the reply ended');
        const back = await gateway.connect(token);
        back.sendFrame({ type: 'resume', id, after: -1 });
        const terminal = await back.terminal(id);
        assert.equal(back.framesFor(id)[0]?.type, 'resumed');
        assert.equal(back.replyText(id), 'Partial');
        assert.equal(terminal.type === 'error' && terminal.code, 'upstream_failed');
        assert.equal(back.terminalsFor(id).length, 1);
      });

      test('on /v1, an upstream that dies mid-reply is a 502 upstream_failed', async () => {
        first.mode = 'held';
        const key = await createApiKey(gateway, 'dier');
        const api = new OpenAI({ apiKey: key, baseURL: `${gateway.baseUrl}/v1`, maxRetries: 0 });
        const pending = api.chat.completions.create({ model: 'solo', messages: [{ role: 'user', content: 'Hi' }] });
        const held = await first.nextHeld();
        held.send('Partial');
        held.kill();
        await assert.rejects(pending, (error: unknown) => error instanceof APIError && error.status === 502 && error.code === 'upstream_failed');
      });

      test('cancel aborts the upstream request at once', async () => {
        const { client, id, held } = await heldPageReply();
        client.cancel(id);
        await held.closed;
        assert.equal((await client.terminal(id)).type, 'cancelled');
      });

      test('a request fails over to the healthy upstream when the first refuses before any token; the refuser is put back once healthy', async () => {
        const pool = upstreamOf(gateway, 'pool');
        await waitUntil(() => pool.upstreams().every((upstream) => upstream.healthy), 20_000, 'both upstreams healthy');
        first.mode = 'refuse';
        const refusedBefore = first.completions.length;
        const servedBefore = second.completions.length;
        const client = await gateway.client();
        client.sendFrame({ type: 'send', id: 'failover1', text: 'Hello', model: 'pool' });
        const terminal = await client.terminal('failover1');
        assert.equal(terminal.type, 'done');
        assert.equal(client.replyText('failover1'), second.words.join(''));
        assert.equal(first.completions.length, refusedBefore + 1, 'the first (least busy, given first) was tried');
        assert.equal(second.completions.length, servedBefore + 1);
        // The refuser's health check still passes, so it comes back into rotation.
        await waitUntil(() => pool.upstreams()[0]?.healthy === true, 20_000, 'the refuser back in rotation');
      });

      test('an upstream that drops one request unanswered (a closed kept-alive connection) gets it again and stays in rotation', async () => {
        const solo = upstreamOf(gateway, 'solo');
        first.dropNext = 1;
        const droppedBefore = first.dropped;
        const client = await gateway.client();
        client.sendFrame({ type: 'send', id: 'dropped1', text: 'Hello', model: 'solo' });
        assert.equal((await client.terminal('dropped1')).type, 'done', 'the one upstream of the name serves it on a new connection');
        assert.equal(client.replyText('dropped1'), first.words.join(''));
        assert.equal(first.dropped, droppedBefore + 1);
        assert.equal(solo.upstreams()[0]?.healthy, true, 'one unanswered request does not take it out');
        client.sendFrame({ type: 'send', id: 'dropped2', text: 'Hello', model: 'solo' });
        assert.equal((await client.terminal('dropped2')).type, 'done');
      });

      test('an upstream that leaves a request unanswered twice is taken out, and the request fails over', async () => {
        const pool = upstreamOf(gateway, 'pool');
        await waitUntil(() => pool.upstreams().every((upstream) => upstream.healthy), 20_000, 'both upstreams healthy');
        first.dropNext = 2;
        const servedBefore = second.completions.length;
        const client = await gateway.client();
        client.sendFrame({ type: 'send', id: 'dropped3', text: 'Hello', model: 'pool' });
        assert.equal((await client.terminal('dropped3')).type, 'done');
        assert.equal(first.dropNext, 0, 'the first was asked twice');
        assert.equal(second.completions.length, servedBefore + 1, 'the second served it');
      });

      test('with every upstream refusing, the request ends with one upstream_failed', async () => {
        const pool = upstreamOf(gateway, 'pool');
        await waitUntil(() => pool.upstreams().every((upstream) => upstream.healthy), 20_000, 'both upstreams healthy');
        first.mode = 'refuse';
        second.mode = 'refuse';
        const client = await gateway.client();
        client.sendFrame({ type: 'send', id: 'refused1', text: 'Hello', model: 'pool' });
        const terminal = await client.terminal('refused1');
        assert.equal(terminal.type, 'error');
        assert.equal((terminal as { code: string }).code, 'upstream_failed');
      });

      test('requests go to the least busy upstream, and wait for room when every healthy one is at --upstream-max-in-flight', async () => {
        const capped = await startGateway(transport, pulledDir, { upstreams: [`capped=${first.url}`, `capped=${second.url}`], upstreamMaxInFlight: 1 });
        try {
          const pool = upstreamOf(capped, 'capped');
          assert.equal(pool.slots, 2, 'slots: the cap times the upstreams');
          await waitUntil(() => pool.upstreams().every((upstream) => upstream.healthy), 20_000, 'both upstreams healthy');
          first.mode = 'held';
          second.mode = 'held';
          const client = await capped.client();
          client.sendFrame({ type: 'send', id: 'c1', text: 'Hello', model: 'capped' });
          const one = await first.nextHeld();
          client.sendFrame({ type: 'send', id: 'c2', text: 'Hello', model: 'capped' });
          const two = await second.nextHeld();
          assert.deepEqual(pool.upstreams().map((upstream) => upstream.inFlight), [1, 1], 'one each: the least busy');
          // The first is taken out: its request runs on, and the next one waits for the second's room.
          first.health = 503;
          await waitUntil(() => pool.upstreams()[0]?.healthy === false, 20_000, 'the first taken out');
          one.send('One');
          one.finish();
          assert.equal((await client.terminal('c1')).type, 'done');
          client.sendFrame({ type: 'send', id: 'c3', text: 'Hello', model: 'capped' });
          await waitUntil(() => pool.waiting === 1, 20_000, 'the third request waits for room');
          assert.equal(pool.upstreams()[1]?.inFlight, 1);
          two.send('Two');
          two.finish();
          assert.equal((await client.terminal('c2')).type, 'done');
          const three = await second.nextHeld();
          three.send('Three');
          three.finish();
          assert.equal((await client.terminal('c3')).type, 'done');
          assert.equal(client.replyText('c3'), 'Three');
        } finally {
          await capped.stop();
        }
      });

      test('a failing health check takes an upstream out of rotation, and a passing one puts it back', async () => {
        const pool = upstreamOf(gateway, 'pool');
        await waitUntil(() => pool.upstreams().every((upstream) => upstream.healthy), 20_000, 'both upstreams healthy');
        first.health = 503;
        await waitUntil(() => pool.upstreams()[0]?.healthy === false, 20_000, 'the first taken out');
        const firstBefore = first.completions.length;
        const client = await gateway.client();
        for (const id of ['h1', 'h2']) {
          client.sendFrame({ type: 'send', id, text: 'Hello', model: 'pool' });
          assert.equal((await client.terminal(id)).type, 'done');
        }
        assert.equal(first.completions.length, firstBefore, 'nothing went to the upstream that is out');
        first.health = 200;
        await waitUntil(() => pool.upstreams()[0]?.healthy === true, 20_000, 'the first put back');
        client.sendFrame({ type: 'send', id: 'h3', text: 'Hello', model: 'pool' });
        assert.equal((await client.terminal('h3')).type, 'done');
        assert.equal(first.completions.length, firstBefore + 1, 'the least busy, given first, serves again');
      });
    });
  });
}
