import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { LlamaEngine } from '../../server/engine/LlamaEngine.js';
import { loadTinyEngine, startTestServer, TRANSPORTS } from '../helpers/startTestServer.js';

for (const transport of TRANSPORTS) {
  describe(`idle sockets over ${transport}`, () => {
    let engine: LlamaEngine;
    before(async () => {
      engine = await loadTinyEngine({ slots: 1, contextSize: 512 });
    });
    after(async () => {
      await engine.dispose();
    });

    test('a socket that stops answering pings is closed by the server, and one that answers stays', async () => {
      const server = await startTestServer(transport, engine, { idleTimeoutSeconds: 8 });
      try {
        const deaf = await server.client('deaf');
        const alive = await server.client('alive');
        // A paused socket reads nothing, so it never sees a ping nor answers with a pong.
        (deaf.socket as unknown as { _socket: { pause(): void } })._socket.pause();
        const closedByServer = () => server.logs.records.filter((record) => record.msg === 'connection closed').length;
        const deadline = Date.now() + 30_000;
        while (closedByServer() === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 250));
        assert.equal(closedByServer(), 1);
        assert.equal(alive.closeCode, undefined);
        assert.equal((await alive.terminal(alive.send('still here'))).type, 'done');
      } finally {
        await server.stop();
      }
    });
  });
}
