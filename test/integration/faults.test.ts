import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { LlamaEngine } from '../../server/engine/LlamaEngine.js';
import { Fault, FaultyEngine } from '../helpers/FaultyEngine.js';
import { GatedEngine } from '../helpers/GatedEngine.js';
import { loadTinyEngine, startTestServer, TRANSPORTS, type TestServer } from '../helpers/startTestServer.js';

for (const transport of TRANSPORTS) {
  describe(`engine failures over ${transport}`, () => {
    let engine: LlamaEngine;
    let gated: GatedEngine;
    let server: TestServer;
    let reference: string;
    before(async () => {
      engine = await loadTinyEngine({ slots: 2, contextSize: 4096 });
      gated = new GatedEngine(new FaultyEngine(engine));
      server = await startTestServer(transport, gated, { maxTokens: 400 });
      const client = await server.client('reference');
      const id = client.send('hello there');
      await client.terminal(id);
      reference = client.replyText(id);
    });
    afterEach(() => gated.gate.open());
    after(async () => {
      await server.stop();
      await engine.dispose();
    });

    for (const [name, marker] of Object.entries(Fault)) {
      test(`a failure ${name} ends that request with engine_error; a reply streaming alongside completes intact`, async () => {
        const bystander = await server.client('bystander');
        const victim = await server.client('victim');
        gated.gate.hold(1);
        const good = bystander.send('hello there');
        await bystander.waitForType('delta', good);
        const bad = victim.send(`please ${marker}`);
        if (marker === Fault.midStream) {
          // The two take turns at the gate: the victim's 3 pieces pass, and a few of the bystander's 400.
          await gated.gate.stalled(2);
          gated.gate.allow(50);
        }
        const terminal = await victim.terminal(bad);
        assert.equal(bystander.terminalsFor(good).length, 0, 'the bystander was still streaming when the victim failed');
        gated.gate.open();
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
