import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { LlamaEngine } from '../../server/engine/LlamaEngine.js';
import { Fault, FaultyEngine } from '../helpers/FaultyEngine.js';
import { loadTinyEngine, startTestServer, TRANSPORTS, type TestServer } from '../helpers/startTestServer.js';

for (const transport of TRANSPORTS) {
  describe(`engine failures over ${transport}`, () => {
    let engine: LlamaEngine;
    let server: TestServer;
    let reference: string;
    before(async () => {
      engine = await loadTinyEngine({ slots: 2, contextSize: 4096 });
      server = await startTestServer(transport, new FaultyEngine(engine), { maxTokens: 400 });
      const client = await server.client('reference');
      const id = client.send('hello there');
      await client.terminal(id);
      reference = client.replyText(id);
    });
    after(async () => {
      await server.stop();
      await engine.dispose();
    });

    for (const [name, marker] of Object.entries(Fault)) {
      test(`a failure ${name} ends that request with engine_error; a reply streaming alongside completes intact`, async () => {
        const bystander = await server.client('bystander');
        const victim = await server.client('victim');
        const good = bystander.send('hello there');
        await bystander.waitForType('delta', good);
        const bad = victim.send(`please ${marker}`);
        const terminal = await victim.terminal(bad);
        assert.equal(terminal.type, 'error');
        assert.equal(terminal.type === 'error' && terminal.code, 'engine_error');
        assert.doesNotMatch(terminal.type === 'error' ? terminal.message : '', /injected/, 'internals stay in the log');
        assert.equal((await bystander.terminal(good)).type, 'done');
        assert.equal(bystander.replyText(good), reference);
        await new Promise((resolve) => setTimeout(resolve, 50));
        assert.equal(victim.terminalsFor(bad).length, 1);

        // The failed slot and the victim's connection keep working.
        const again = victim.send('hello there');
        assert.equal((await victim.terminal(again)).type, 'done');
        assert.equal(victim.replyText(again), reference);
        assert.ok(server.logs.records.some((record) => record.msg === 'generation failed'));
      });
    }
  });
}
