import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import OpenAI, { APIError, AuthenticationError, BadRequestError, RateLimitError } from 'openai';
import type { ConfigInput } from '../../server/config.js';
import type { GatedEngine } from '../helpers/GatedEngine.js';
import { loadGatedTinyEngine, startTestServer, TRANSPORTS, type TestServer } from '../helpers/startTestServer.js';
import { waitUntil } from '../helpers/waitUntil.js';
import { createApiKey } from '../helpers/createApiKey.js';

/**
 * The OpenAI-compatible API driven by the official `openai` client, which nobody here wrote, over
 * both transports, with the real tiny model (greedy: the same request gives the same reply).
 */
for (const transport of TRANSPORTS) {
  describe(`the /v1 API over ${transport}`, () => {
    let engine: GatedEngine;
    let server: TestServer;
    let client: OpenAI;
    let model: string;
    let key: string;
    const start = async (overrides: ConfigInput = {}) => {
      const started = await startTestServer(transport, engine, { maxTokens: 64, ...overrides });
      const created = await createApiKey(started, 'scripter');
      return { server: started, key: created, client: new OpenAI({ apiKey: created, baseURL: `${started.baseUrl}/v1`, maxRetries: 0 }) };
    };
    before(async () => {
      engine = await loadGatedTinyEngine({ slots: 2, contextSize: 2048 });
      ({ server, key, client } = await start());
      model = (await client.models.list()).data[0]?.id ?? '';
    });
    afterEach(() => engine.gate.open());
    after(async () => {
      await server.stop();
      await engine.dispose();
    });

    test('GET /v1/models lists the one model Parley serves', async () => {
      const models = await client.models.list();
      assert.equal(models.data.length, 1);
      assert.equal(models.data[0]?.id, model);
      assert.equal(models.data[0]?.owned_by, 'parley');
    });

    test('a non-streamed completion has the reply, finish_reason length at max_tokens, and usage', async () => {
      const completion = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Tell me about the harbor.' }], max_tokens: 8 });
      assert.match(completion.id, /^chatcmpl-/);
      assert.equal(completion.choices.length, 1);
      assert.ok((completion.choices[0]?.message.content ?? '').trim().split(/\s+/).length >= 3);
      assert.equal(completion.choices[0]?.finish_reason, 'length');
      assert.equal(completion.usage?.completion_tokens, 8);
      assert.ok((completion.usage?.prompt_tokens ?? 0) > 0);
      assert.equal(completion.usage?.total_tokens, (completion.usage?.prompt_tokens ?? 0) + 8);
    });

    test('a streamed completion arrives in chunks that add up to the non-streamed reply, with usage at the end', async () => {
      const messages = [{ role: 'system' as const, content: 'You are terse.' }, { role: 'user' as const, content: [{ type: 'text' as const, text: 'Hello' }] }];
      const whole = await client.chat.completions.create({ model, messages, max_tokens: 12 });
      const stream = await client.chat.completions.create({ model, messages, max_tokens: 12, stream: true, stream_options: { include_usage: true } });
      let text = '';
      let contentChunks = 0;
      let finish: string | null | undefined;
      let usage: OpenAI.CompletionUsage | null | undefined;
      for await (const chunk of stream) {
        const delta = chunk.choices[0]?.delta.content;
        if (delta) {
          text += delta;
          contentChunks++;
        }
        finish ??= chunk.choices[0]?.finish_reason;
        if (chunk.usage) usage = chunk.usage;
      }
      assert.ok(contentChunks > 1, `several chunks (${contentChunks})`);
      assert.equal(text, whole.choices[0]?.message.content);
      assert.equal(finish, 'length');
      assert.equal(usage?.completion_tokens, 12);
    });

    test('aborting a stream mid-reply stops the generation and frees its slot', async () => {
      engine.gate.hold(3);
      const controller = new AbortController();
      const stream = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Go on and on.' }], stream: true }, { signal: controller.signal });
      const chat = server.started.server.chat;
      let seen = 0;
      try {
        for await (const chunk of stream) {
          if (chunk.choices[0]?.delta.content) {
            seen++;
            controller.abort();
          }
        }
      } catch (error) {
        // The client reports its own abort as an error, or just ends the iteration.
        assert.ok(controller.signal.aborted, String(error));
      }
      assert.ok(seen >= 1, 'the reply was streaming when the client aborted');
      // The gate holds the reply: only the disconnect can end it and free the slot.
      await waitUntil(() => chat.scheduler.activeCount === 0 && chat.liveCount === 0, 20_000, 'the slot is free');
      engine.gate.open();
      const next = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Next.' }], max_tokens: 4 });
      assert.equal(next.usage?.completion_tokens, 4);
    });

    test('a bad key raises AuthenticationError (401, OpenAI error body)', async () => {
      const stranger = new OpenAI({ apiKey: 'pk-parley-not-a-real-key-at-all-0000000000000000', baseURL: `${server.baseUrl}/v1`, maxRetries: 0 });
      await assert.rejects(stranger.models.list(), (error: unknown) => error instanceof AuthenticationError && error.status === 401);
      const missing = await fetch(`${server.baseUrl}/v1/models`);
      assert.equal(missing.status, 401);
      const body = (await missing.json()) as { error: { type: string; code: string } };
      assert.equal(body.error.code, 'invalid_api_key');
    });

    test('a rate limit raises RateLimitError with Retry-After', async () => {
      const limited = await start({ generationsPerMinute: 1, generationsPerMinutePerIp: 1 });
      try {
        await limited.client.chat.completions.create({ model, messages: [{ role: 'user', content: 'one' }], max_tokens: 2 });
        await assert.rejects(
          limited.client.chat.completions.create({ model, messages: [{ role: 'user', content: 'two' }], max_tokens: 2 }),
          (error: unknown) => error instanceof RateLimitError && error.status === 429 && Number(error.headers?.get('retry-after')) >= 1,
        );
      } finally {
        await limited.server.stop();
      }
    });

    test('response_format with a JSON schema returns JSON that parses and fits the schema', async () => {
      const completion = await client.chat.completions.create({
        model,
        messages: [{ role: 'user', content: 'Is the harbor quiet?' }],
        max_tokens: 60,
        response_format: {
          type: 'json_schema',
          json_schema: { name: 'answer', schema: { type: 'object', properties: { quiet: { type: 'boolean' }, mood: { enum: ['calm', 'busy'] } }, required: ['quiet', 'mood'], additionalProperties: false } },
        },
      });
      const parsed = JSON.parse(completion.choices[0]?.message.content ?? '') as { quiet: unknown; mood: unknown };
      assert.equal(typeof parsed.quiet, 'boolean');
      assert.ok(parsed.mood === 'calm' || parsed.mood === 'busy');
      assert.deepEqual(Object.keys(parsed).sort(), ['mood', 'quiet']);
    });

    test('what Parley cannot honour is refused with a 400 naming the parameter', async () => {
      const refusals: Array<[Record<string, unknown>, string]> = [
        [{ n: 2 }, 'n'],
        [{ tools: [{ type: 'function', function: { name: 'f' } }] }, 'tools'],
        [{ logprobs: true }, 'logprobs'],
        [{ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'http://x/y.png' } }] }] }, 'messages.0.content.0'],
        [{ messages: [{ role: 'user', content: [{ type: 'text', text: 'Summarise it' }, { type: 'file', file: { file_id: 'd_0123456789abcdefghijkl' } }] }] }, 'messages.0.content.1'],
        [{ messages: [] }, 'messages'],
        [{ messages: [{ role: 'tool', content: 'x' }] }, 'messages.0.role'],
        [{ temperature: 'hot' }, 'temperature'],
      ];
      for (const [change, param] of refusals) {
        const request = { model, messages: [{ role: 'user', content: 'hi' }], ...change } as unknown as OpenAI.ChatCompletionCreateParamsNonStreaming;
        await assert.rejects(client.chat.completions.create(request), (error: unknown) => {
          assert.ok(error instanceof BadRequestError, `${param}: ${String(error)}`);
          assert.equal((error.error as { param?: string }).param, param);
          return true;
        });
      }
      const badJson = await fetch(`${server.baseUrl}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: '{"model":' });
      assert.equal(badJson.status, 400);
      await assert.rejects(client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }), (error: unknown) => error instanceof APIError && error.status === 404);
    });

    test('over-long content and messages larger than the context are refused with 413 and a clear message', async () => {
      await assert.rejects(client.chat.completions.create({ model, messages: [{ role: 'user', content: 'x'.repeat(9000) }] }), (error: unknown) => error instanceof APIError && error.status === 413 && /8000/.test(error.message));
      const history = Array.from({ length: 40 }, (_, index) => ({ role: index % 2 === 0 ? ('user' as const) : ('assistant' as const), content: 'word '.repeat(60) }));
      await assert.rejects(
        client.chat.completions.create({ model, messages: [...history, { role: 'user', content: 'and?' }] }),
        (error: unknown) => error instanceof APIError && error.status === 413 && /context/.test(error.message),
      );
    });

    test('API requests and socket chats share one fair queue: a flood of API requests does not starve a person', async () => {
      const oneSlot = await loadGatedTinyEngine({ slots: 1, contextSize: 2048 });
      const single = await startTestServer(transport, oneSlot, { maxTokens: 16 });
      try {
        const apiKey = await createApiKey(single, 'flooder');
        const flooder = new OpenAI({ apiKey, baseURL: `${single.baseUrl}/v1`, maxRetries: 0 });
        oneSlot.gate.hold(1);
        const flood = [0, 1, 2, 3].map((index) => flooder.chat.completions.create({ model, messages: [{ role: 'user', content: `flood ${index}` }], max_tokens: 4 }));
        const chat = single.started.server.chat;
        await waitUntil(() => chat.scheduler.queuedCount === 3 || chat.scheduler.activeCount + chat.scheduler.queuedCount === 4, 20_000, 'the flood is admitted');
        const person = await single.client('person');
        const id = person.send('hello');
        const queued = await person.waitForType('queued', id);
        assert.equal(queued.position, 1, "the person's request goes ahead of the flooder's waiting ones");
        oneSlot.gate.open();
        assert.equal((await person.terminal(id)).type, 'done');
        for (const completion of await Promise.all(flood)) assert.equal(completion.usage?.completion_tokens, 4);
      } finally {
        oneSlot.gate.open();
        await single.stop();
        await oneSlot.dispose();
      }
    });

    test('a stream cut by shutdown ends with an error chunk, then [DONE]', async () => {
      const own = await start();
      engine.gate.hold(2);
      const response = await fetch(`${own.server.baseUrl}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${own.key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model, messages: [{ role: 'user', content: 'Go on.' }], stream: true }),
      });
      assert.equal(response.status, 200);
      assert.match(response.headers.get('content-type') ?? '', /text\/event-stream/);
      const reader = (response.body as ReadableStream<Uint8Array>).getReader();
      const decoder = new TextDecoder();
      let text = '';
      while (!text.includes('"content":"')) text += decoder.decode((await reader.read()).value ?? new Uint8Array(), { stream: true });
      const stopping = own.server.stop();
      for (let read = await reader.read(); !read.done; read = await reader.read()) text += decoder.decode(read.value, { stream: true });
      await stopping;
      const events = text.split('\n\n').filter((event) => event.startsWith('data: ')).map((event) => event.slice(6));
      assert.equal(events.at(-1), '[DONE]');
      const last = JSON.parse(events.at(-2) ?? '{}') as { error?: { code?: string } };
      assert.equal(last.error?.code, 'shutting_down');
    });
  });
}
