import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { createTokenService } from '../../server/auth/createTokenService.js';
import { loadOrCreateSigningKey } from '../../server/auth/loadOrCreateSigningKey.js';
import type { GatedEngine } from '../helpers/GatedEngine.js';
import { bearerUpgradeStatus, upgradeStatus } from '../helpers/upgradeStatus.js';
import { loadGatedTinyEngine, startTestServer, TRANSPORTS, type TestServer } from '../helpers/startTestServer.js';
import { TestClient } from '../helpers/TestClient.js';
import { waitUntil } from '../helpers/waitUntil.js';

const failing = { consume: () => Promise.reject(new Error('limiter store is down')) };


/** An access token for `userId` signed by the test server's own key, with a custom lifetime. */
async function mintToken(server: TestServer, ttlSeconds: number, userId?: string) {
  const key = await loadOrCreateSigningKey(server.dataDir);
  return createTokenService({ key, ttlSeconds }).issueAccessToken({ userId, name: 'minted' });
}

for (const transport of TRANSPORTS) {
  describe(`limits over ${transport}`, () => {
    let engine: GatedEngine;
    before(async () => {
      engine = await loadGatedTinyEngine({ slots: 2, contextSize: 2048 });
    });
    afterEach(() => engine.gate.open());
    after(async () => {
      await engine.dispose();
    });

    test('a flood gets rate_limited errors with retryAfterMs, then the socket closes with 4429', async () => {
      const server = await startTestServer(transport, engine, { framesPerSecond: 5, frameBurst: 5, floodStrikes: 5, floodWindowSeconds: 10 });
      try {
        const client = await server.client();
        for (let i = 0; i < 40; i++) client.sendRaw('{"type":"cancel","id":"nope"}');
        const limited = await client.waitFor((frame) => frame.type === 'error' && frame.code === 'rate_limited');
        assert.ok(limited.type === 'error' && (limited.retryAfterMs ?? 0) > 0);
        assert.equal(await client.waitClose(), 4429);
        assert.ok(server.logs.records.some((record) => record.event === 'flood_closed'));
      } finally {
        await server.stop();
      }
    });

    test('a rate-limited send ends with a terminal rate_limited error carrying its id', async () => {
      const server = await startTestServer(transport, engine, { framesPerSecond: 2, frameBurst: 1, floodStrikes: 50 });
      try {
        const client = await server.client();
        const ids = [0, 1, 2, 3, 4, 5].map(() => client.send('hi'));
        const terminals = await Promise.all(ids.map((id) => client.terminal(id)));
        const limited = terminals.filter((frame) => frame.type === 'error' && frame.code === 'rate_limited');
        assert.ok(limited.length >= 1);
        for (const frame of limited) assert.ok(frame.type === 'error' && (frame.retryAfterMs ?? 0) > 0);
        for (const id of ids) assert.equal(client.terminalsFor(id).length, 1);
      } finally {
        await server.stop();
      }
    });

    test("two sockets of one user share the user's generation budget, and reconnecting does not reset it", async () => {
      const server = await startTestServer(transport, engine, { generationsPerMinute: 2, maxTokens: 8 });
      try {
        const token = await server.token('sharer');
        const first = await TestClient.connect(server.wsUrl, token);
        const second = await TestClient.connect(server.wsUrl, token);
        assert.equal((await first.terminal(first.send('one'))).type, 'done');
        assert.equal((await second.terminal(second.send('two'))).type, 'done');
        const third = await second.terminal(second.send('three'));
        assert.equal(third.type === 'error' && third.code, 'rate_limited');
        first.drop();
        second.drop();
        const again = await TestClient.connect(server.wsUrl, token);
        const fourth = await again.terminal(again.send('four'));
        assert.equal(fourth.type === 'error' && fourth.code, 'rate_limited');
        again.drop();
      } finally {
        await server.stop();
      }
    });

    test('the hourly token budget reserves prompt plus max tokens and refunds what a reply did not use', async () => {
      const server = await startTestServer(transport, engine, { tokensPerHour: 500, maxTokens: 300 });
      try {
        const client = await server.client();
        // Each request reserves ~310 tokens (prompt + 300), so without refunds a second one
        // would not fit in 500. Stopped early, the first gives most of its reservation back.
        engine.gate.hold(2);
        const stopped = client.send('short');
        await client.waitForType('delta', stopped);
        client.cancel(stopped);
        assert.equal((await client.terminal(stopped)).type, 'cancelled');
        engine.gate.open();
        const full = await client.terminal(client.send('full'));
        assert.equal(full.type, 'done');
        const over = await client.terminal(client.send('over'));
        assert.equal(over.type === 'error' && over.code, 'rate_limited');
        assert.match(over.type === 'error' ? over.message : '', /500/);
      } finally {
        await server.stop();
      }
    });

    test('upgrades per minute per IP are capped with 429', async () => {
      const server = await startTestServer(transport, engine, { upgradesPerMinute: 3 });
      try {
        const token = await server.token();
        const statuses = [];
        for (let i = 0; i < 4; i++) statuses.push(await bearerUpgradeStatus(server.wsUrl, token));
        assert.deepEqual(statuses, [101, 101, 101, 429]);
      } finally {
        await server.stop();
      }
    });

    test('open connections per user are capped', async () => {
      const server = await startTestServer(transport, engine, { maxConnectionsPerUser: 2 });
      try {
        const token = await server.token();
        const a = await TestClient.connect(server.wsUrl, token);
        const b = await TestClient.connect(server.wsUrl, token);
        assert.equal(await bearerUpgradeStatus(server.wsUrl, token), 429);
        a.drop();
        // The server counts the socket out before it logs the close.
        await waitUntil(() => server.logs.records.some((record) => record.msg === 'connection closed'), 10_000, 'the dropped socket is closed');
        assert.equal(await bearerUpgradeStatus(server.wsUrl, token), 101);
        b.drop();
      } finally {
        await server.stop();
      }
    });

    test('open connections per IP are capped across users: 429 with Retry-After; another address still connects', async () => {
      const server = await startTestServer(transport, engine, { maxConnectionsPerIp: 2 });
      try {
        const a = await server.client('a');
        const b = await server.client('b');
        const refused = await upgradeStatus(server.wsUrl, ['parley.v1', `bearer.${await server.token('c')}`]);
        assert.equal(refused.status, 429);
        assert.equal(refused.headers['retry-after'], '5');
        assert.equal((JSON.parse(refused.body) as { code: string }).code, 'rate_limited');
        const elsewhere = await server.token('d', { localAddress: '127.0.0.2' });
        assert.equal((await upgradeStatus(server.wsUrl, ['parley.v1', `bearer.${elsewhere}`], { localAddress: '127.0.0.2' })).status, 101);
        a.drop();
        b.drop();
      } finally {
        await server.stop();
      }
    });

    test('a failing limiter refuses instead of letting traffic through', async () => {
      const server = await startTestServer(transport, engine, {}, { limiterOverrides: { generations: failing } });
      try {
        const client = await server.client();
        const id = client.send('hello');
        const terminal = await client.terminal(id);
        assert.equal(terminal.type === 'error' && terminal.code, 'limiter_unavailable');
        assert.equal(client.framesFor(id).filter((frame) => frame.type === 'delta').length, 0);
        assert.ok(server.logs.contains('rate limiter failed'));
      } finally {
        await server.stop();
      }
      const frames = await startTestServer(transport, engine, {}, { limiterOverrides: { frames: failing } });
      try {
        const client = await frames.client();
        const id = client.send('hello');
        const terminal = await client.terminal(id);
        assert.equal(terminal.type === 'error' && terminal.code, 'limiter_unavailable');
      } finally {
        await frames.stop();
      }
      const upgrades = await startTestServer(transport, engine, {}, { limiterOverrides: { upgrades: failing } });
      try {
        assert.equal(await bearerUpgradeStatus(upgrades.wsUrl, await upgrades.token()), 503);
      } finally {
        await upgrades.stop();
      }
    });

    test('a socket whose token expires is closed with 4401 after its request gets a terminal frame', async () => {
      const server = await startTestServer(transport, engine, { generationTimeoutMs: 60_000 });
      try {
        const { token } = await mintToken(server, 2);
        const client = await TestClient.connect(server.wsUrl, token);
        const ready = await client.waitForType('ready');
        assert.ok(ready.expiresAt <= Date.now() + 2000);
        // The reply streams a little, then runs until the token expires, on any machine.
        engine.gate.hold(2);
        const id = client.send('keep talking');
        await client.waitForType('delta', id);
        assert.equal(await client.waitClose(10_000), 4401);
        const terminal = client.terminalsFor(id);
        assert.equal(terminal.length, 1);
        assert.equal(terminal[0]?.type === 'error' && terminal[0].code, 'token_expired');
      } finally {
        await server.stop();
      }
    });

    test('an in-band refresh extends the connection; a token of another user is refused', async () => {
      const server = await startTestServer(transport, engine);
      try {
        const short = await mintToken(server, 3);
        const client = await TestClient.connect(server.wsUrl, short.token);
        await client.waitForType('ready');
        const other = await mintToken(server, 300);
        client.sendFrame({ type: 'refresh', token: other.token });
        const refused = await client.waitFor((frame) => frame.type === 'error' && frame.code === 'unauthorized');
        assert.ok(refused);
        const fresh = await mintToken(server, 300, short.principal.userId);
        client.sendFrame({ type: 'refresh', token: fresh.token });
        const refreshed = await client.waitForType('refreshed');
        assert.equal(refreshed.expiresAt, fresh.expiresAt);
        // Past the first token's expiry: the socket lives on the refreshed one.
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, short.expiresAt - Date.now()) + 500));
        assert.equal(client.closeCode, undefined);
        assert.equal((await client.terminal(client.send('still here'))).type, 'done');
        client.close();
      } finally {
        await server.stop();
      }
    });

    test('message text is logged only with logContent', async () => {
      const server = await startTestServer(transport, engine, { logContent: true });
      try {
        const client = await server.client();
        await client.terminal(client.send('LOGGED-ON-PURPOSE-42'));
        assert.ok(server.logs.contains('LOGGED-ON-PURPOSE-42'));
      } finally {
        await server.stop();
      }
    });
  });
}
