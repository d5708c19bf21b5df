import assert from 'node:assert/strict';
import { after, afterEach, before, beforeEach, describe, test } from 'node:test';
import type { LlamaEngine } from '../../server/engine/LlamaEngine.js';
import type { GatedEngine } from '../helpers/GatedEngine.js';
import { loadGatedTinyEngine, loadTinyEngine, startTestServer, TRANSPORTS, type TestServer } from '../helpers/startTestServer.js';

for (const transport of TRANSPORTS) {
  describe(`streaming over ${transport}`, () => {
    let engine: LlamaEngine;
    let server: TestServer;
    before(async () => {
      engine = await loadTinyEngine({ slots: 4, contextSize: 4096 });
      server = await startTestServer(transport, engine, { maxTokens: 48 });
    });
    after(async () => {
      await server.stop();
      await engine.dispose();
    });

    test('the ready frame names the user, the model, the limits and the real transport', async () => {
      const client = await server.client('alice');
      const ready = await client.waitForType('ready');
      assert.equal(ready.user.name, 'alice');
      assert.equal(ready.transport, transport);
      assert.equal(ready.model.demo, false);
      assert.equal(ready.limits.slots, 4);
      assert.equal(ready.limits.maxTokens, 48);
    });

    test('a reply arrives as several deltas with gap-free seqs, then one done frame', async () => {
      const client = await server.client();
      const id = client.send('hello there');
      const accepted = await client.waitForType('accepted', id);
      assert.match(accepted.conversationId, /^c_/);
      const done = await client.terminal(id);
      assert.equal(done.type, 'done');
      if (done.type !== 'done') return;
      const deltas = client.framesFor(id).filter((frame) => frame.type === 'delta');
      assert.ok(deltas.length > 1, `expected several deltas, got ${deltas.length}`);
      const text = client.replyText(id);
      assert.ok(text.trim().split(/\s+/).length >= 5, `expected words, got ${JSON.stringify(text)}`);
      assert.equal(done.stopReason, 'max_tokens');
      assert.equal(done.usage.completionTokens, 48);
      assert.ok(done.usage.promptTokens > 0);
      assert.equal(client.terminalsFor(id).length, 1);
      // Frames of one request come in protocol order.
      const types = client.framesFor(id).map((frame) => frame.type);
      assert.equal(types[0], 'accepted');
      assert.equal(types.at(-1), 'done');
    });

    test('the concatenated deltas equal the reply the model produces in-process', async () => {
      const client = await server.client();
      const first = client.send('same question');
      await client.terminal(first);
      const second = client.send('same question');
      await client.terminal(second);
      // Greedy decoding in a fresh conversation: identical replies, so nothing was lost or duplicated.
      assert.equal(client.replyText(first), client.replyText(second));
      const direct: string[] = [];
      const result = await engine.generate({
        slot: 3,
        conversationId: 'direct',
        history: [],
        text: 'same question',
        maxTokens: 48,
        signal: new AbortController().signal,
        onText: (text) => direct.push(text),
      });
      assert.equal(client.replyText(first), result.text);
      assert.equal(direct.join(''), result.text);
    });
  });

  describe(`stopping replies over ${transport}`, () => {
    let engine: GatedEngine;
    let server: TestServer;
    before(async () => {
      engine = await loadGatedTinyEngine({ slots: 1 });
      // No resume grace here: a dropped reply stops at once (test/integration/resume.test.ts covers the grace).
      server = await startTestServer(transport, engine, { resumeGraceMs: 0 });
    });
    // Each reply streams its first pieces and then runs until the test stops it.
    beforeEach(() => engine.gate.hold(3));
    afterEach(() => engine.gate.open());
    after(async () => {
      await server.stop();
      await engine.dispose();
    });

    test('cancel mid-stream gives exactly one cancelled frame and frees the slot at once', async () => {
      const client = await server.client();
      const id = client.send('tell me a long story');
      await client.waitForType('delta', id);
      client.cancel(id);
      const terminal = await client.terminal(id);
      assert.equal(terminal.type, 'cancelled');
      // With one slot, the next request runs without queueing.
      engine.gate.allow(1);
      const next = client.send('again');
      await client.waitForType('delta', next);
      assert.equal(client.framesFor(next).filter((frame) => frame.type === 'queued').length, 0);
      client.cancel(next);
      await client.terminal(next);
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal(client.terminalsFor(id).length, 1);
      assert.equal(client.terminalsFor(next).length, 1);
      assert.equal(client.framesFor(id).filter((frame) => frame.type === 'done').length, 0);
    });

    test('with no resume grace, a disconnect mid-stream frees the slot for another user', async () => {
      const leaver = await server.client('leaver');
      const id = leaver.send('a long one');
      await leaver.waitForType('delta', id);
      assert.equal(server.started.server.chat.scheduler.activeCount, 1);
      leaver.drop();
      engine.gate.allow(1);
      const other = await server.client('stayer');
      const next = other.send('my turn');
      await other.waitForType('delta', next);
      other.cancel(next);
      assert.equal((await other.terminal(next)).type, 'cancelled');
      await server.started.server.chat.scheduler.whenIdle();
    });

    test('queued requests are told their position, and again when it moves', async () => {
      const a = await server.client('a');
      const b = await server.client('b');
      const c = await server.client('c');
      const running = a.send('first');
      await a.waitForType('delta', running);
      const second = b.send('second');
      const queuedB = await b.waitForType('queued', second);
      assert.equal(queuedB.position, 1);
      const third = c.send('third');
      const queuedC = await c.waitForType('queued', third);
      assert.equal(queuedC.position, 2);
      // A queued request that is cancelled leaves the queue, and the one behind it moves up.
      b.cancel(second);
      assert.equal((await b.terminal(second)).type, 'cancelled');
      await c.waitFor((frame) => frame.type === 'queued' && frame.id === third && frame.position === 1);
      assert.equal(b.framesFor(second).filter((frame) => frame.type === 'delta').length, 0);
      a.cancel(running);
      await a.terminal(running);
      engine.gate.allow(1);
      await c.waitForType('delta', third);
      c.cancel(third);
      assert.equal((await c.terminal(third)).type, 'cancelled');
    });

    test('a request beyond the queue limit gets queue_full as its terminal frame', async () => {
      const a = await server.client('a');
      const running = a.send('first');
      await a.waitForType('delta', running);
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) ids.push(a.send(`more ${i}`));
      // maxQueuedPerUser defaults to 4: the fifth waiting request is refused.
      const refused = await a.terminal(ids[4] as string);
      assert.equal(refused.type, 'error');
      if (refused.type === 'error') assert.equal(refused.code, 'queue_full');
      for (const id of [running, ...ids.slice(0, 4)]) a.cancel(id);
      for (const id of [running, ...ids.slice(0, 4)]) assert.equal((await a.terminal(id)).type, 'cancelled');
    });
  });

  describe(`concurrency and caps over ${transport}`, () => {
    let engine: GatedEngine;
    before(async () => {
      engine = await loadGatedTinyEngine({ slots: 4, contextSize: 4096 });
    });
    afterEach(() => engine.gate.open());
    after(async () => {
      await engine.dispose();
    });

    test('four clients generating at once all stream, interleaved', async () => {
      const server = await startTestServer(transport, engine, { maxTokens: 48 });
      try {
        const clients = await Promise.all([0, 1, 2, 3].map((n) => server.client(`user${n}`)));
        // How fast the model runs must not decide whether the replies overlap, only the server:
        // the gate holds every piece until all four are generating, then paces them.
        engine.gate.hold();
        const order: number[] = [];
        clients.forEach((client, index) => client.socket.on('message', () => order.push(index)));
        const ids = clients.map((client) => client.send('go'));
        await engine.gate.stalled(4);
        engine.gate.pace(1);
        const terminals = await Promise.all(clients.map((client, index) => client.terminal(ids[index] as string)));
        for (const terminal of terminals) assert.equal(terminal.type, 'done');
        // Every client got deltas before any client finished: the generations overlapped.
        const firstDone = Math.min(...clients.map((client, index) => client.frames.findIndex((frame) => frame.type === 'done' && frame.id === ids[index])));
        assert.ok(firstDone > 0);
        for (const [index, client] of clients.entries()) {
          assert.ok(client.framesFor(ids[index] as string).filter((frame) => frame.type === 'delta').length > 1);
          assert.equal(client.framesFor(ids[index] as string).filter((frame) => frame.type === 'queued').length, 0);
        }
        const switches = order.filter((value, index) => index > 0 && value !== order[index - 1]).length;
        assert.ok(switches >= 6, `expected interleaved streams, saw ${switches} switches`);
      } finally {
        await server.stop();
      }
    });

    test('the wall-clock cap ends a reply with stopReason time_limit', async () => {
      const server = await startTestServer(transport, engine, { generationTimeoutMs: 300 });
      try {
        const client = await server.client();
        // The reply streams a little and is still running when the cap ends it, on any machine.
        engine.gate.hold(3);
        const id = client.send('go on forever');
        const done = await client.terminal(id);
        assert.equal(done.type, 'done');
        if (done.type === 'done') assert.equal(done.stopReason, 'time_limit');
        assert.ok(client.replyText(id).length > 0);
      } finally {
        await server.stop();
      }
    });

    test('a message larger than the context is refused before inference; the connection stays usable', async () => {
      const server = await startTestServer(transport, engine, { maxTextChars: 100_000 });
      try {
        const client = await server.client();
        const id = client.send('word '.repeat(6000));
        const terminal = await client.terminal(id);
        assert.equal(terminal.type, 'error');
        if (terminal.type === 'error') {
          assert.equal(terminal.code, 'context_overflow');
          assert.match(terminal.message, /context/);
        }
        assert.equal(client.framesFor(id).filter((frame) => frame.type === 'accepted').length, 0);
        const ok = client.send('short');
        assert.equal((await client.terminal(ok)).type, 'done');
      } finally {
        await server.stop();
      }
    });

    test('a message over the character limit is refused with the limit in the error', async () => {
      const server = await startTestServer(transport, engine, { maxTextChars: 100 });
      try {
        const client = await server.client();
        const id = client.send('x'.repeat(101));
        const terminal = await client.terminal(id);
        assert.equal(terminal.type, 'error');
        if (terminal.type === 'error') {
          assert.equal(terminal.code, 'message_too_long');
          assert.match(terminal.message, /100/);
        }
      } finally {
        await server.stop();
      }
    });
  });
}
