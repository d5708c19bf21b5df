import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { createTokenService } from '../../server/auth/createTokenService.js';
import { loadOrCreateSigningKey } from '../../server/auth/loadOrCreateSigningKey.js';
import type { LlamaEngine } from '../../server/engine/LlamaEngine.js';
import { loadTinyEngine, startTestServer, TEST_INVITE, TRANSPORTS, type TestServer } from '../helpers/startTestServer.js';
import { TestClient } from '../helpers/TestClient.js';
import { upgradeStatus } from '../helpers/upgradeStatus.js';


for (const transport of TRANSPORTS) {
  describe(`authentication and sessions over ${transport}`, () => {
    let engine: LlamaEngine;
    let server: TestServer;
    before(async () => {
      engine = await loadTinyEngine({ slots: 2, contextSize: 512 });
      server = await startTestServer(transport, engine, { maxTokens: 24, tokenTtlSeconds: 300 });
    });
    after(async () => {
      await server.stop();
      await engine.dispose();
    });

    test('POST /api/token with the invite returns a short-lived EdDSA JWT with the documented claims', async () => {
      const response = await fetch(`${server.baseUrl}/api/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ invite: TEST_INVITE, name: 'Ada' }),
      });
      assert.equal(response.status, 200);
      const body = (await response.json()) as { token: string; expiresAt: number };
      const header = decodeProtectedHeader(body.token);
      const claims = decodeJwt(body.token);
      assert.equal(header.alg, 'EdDSA');
      assert.equal(claims.name, 'Ada');
      assert.equal(claims.iss, 'parley');
      assert.equal(claims.aud, 'parley:ws');
      for (const claim of ['sub', 'iat', 'exp'] as const) assert.ok(claims[claim] !== undefined, `missing ${claim}`);
      assert.equal((claims.exp as number) - (claims.iat as number), 300);
      assert.equal(body.expiresAt, (claims.exp as number) * 1000);
    });

    test('a wrong invite gets 401 and a malformed body gets 400', async () => {
      const wrong = await fetch(`${server.baseUrl}/api/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ invite: 'nope-nope-nope', name: 'Eve' }),
      });
      assert.equal(wrong.status, 401);
      assert.equal(((await wrong.json()) as { code: string }).code, 'unauthorized');
      const bad = await fetch(`${server.baseUrl}/api/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"invite":' });
      assert.equal(bad.status, 400);
    });

    test('a missing, malformed or foreign token gets 401 before any upgrade', async () => {
      const good = await server.token();
      const [h, p, s] = good.split('.') as [string, string, string];
      const flipped = `${h}.${p}.${s.slice(0, -2)}${s.at(-2) === 'A' ? 'B' : 'A'}${s.at(-1)}`;
      for (const protocols of [['parley.v1'], ['parley.v1', 'bearer.not-a-jwt'], ['parley.v1', `bearer.${flipped}`]]) {
        const result = await upgradeStatus(server.wsUrl, protocols);
        assert.equal(result.status, 401, `protocols ${protocols.join(',')}`);
        assert.equal(JSON.parse(result.body).code, 'unauthorized');
      }
    });

    test('an expired token gets 401 before the upgrade', async () => {
      // Signed by the server's own key, but issued ten minutes ago with a one-minute lifetime.
      const key = await loadOrCreateSigningKey(server.dataDir);
      const past = createTokenService({ key, ttlSeconds: 60, now: () => Date.now() - 10 * 60_000 });
      const { token } = await past.issueAccessToken({ name: 'late' });
      assert.equal((await upgradeStatus(server.wsUrl, ['parley.v1', `bearer.${token}`])).status, 401);
    });

    test('the server selects parley.v1 and never echoes the bearer token', async () => {
      const token = await server.token();
      const client = await TestClient.connect(server.wsUrl, token);
      assert.equal(client.socket.protocol, 'parley.v1');
      client.close();
    });

    test('the upgrade without parley.v1 is refused', async () => {
      const token = await server.token();
      assert.equal((await upgradeStatus(server.wsUrl, [`bearer.${token}`])).status, 400);
    });

    test('invalid frames each get an error and the connection stays open', async () => {
      const client = await server.client();
      const cases: Array<[string | Buffer, boolean, string]> = [
        ['not json', false, 'bad_json'],
        ['{"type":"launch"}', false, 'bad_frame'],
        ['{"type":"send","id":42,"text":"hi"}', false, 'bad_frame'],
        ['{"type":"send","id":"a","text":"hi","__proto__":{"admin":true}}', false, 'bad_frame'],
        ['{"type":"cancel","id":"never-started"}', false, 'unknown_request'],
        [Buffer.from([1, 2, 3]), true, 'binary_frame'],
      ];
      for (const [data, binary, code] of cases) {
        const before = client.frames.length;
        client.sendRaw(data, binary);
        const error = await client.waitFor((frame) => frame.type === 'error', 5000, before);
        assert.equal(error.type === 'error' && error.code, code);
        assert.equal(error.type === 'error' && error.id, undefined);
      }
      const id = client.send('still here?');
      assert.equal((await client.terminal(id)).type, 'done');
      assert.equal(client.closeCode, undefined);
    });

    test("user B asking for user A's conversation gets the same answer as for an unknown id", async () => {
      const alice = await server.client('alice');
      const bob = await server.client('bob');
      const id = alice.send('my secret canary PARLEY-CANARY-7731');
      const accepted = await alice.waitForType('accepted', id);
      await alice.terminal(id);
      const stolen = bob.send('continue', accepted.conversationId);
      const unknown = bob.send('continue', 'c_doesnotexist000000000');
      const [a, b] = [await bob.terminal(stolen), await bob.terminal(unknown)];
      assert.equal(a.type, 'error');
      assert.deepEqual({ ...a, id: '' }, { ...b, id: '' });
      assert.ok(!JSON.stringify(bob.frames).includes('CANARY'));
    });

    test('a conversation keeps its own history, and a new one starts clean', async () => {
      const alice = await server.client('alice');
      const first = alice.send('PARLEY-CANARY-7731 remember this');
      const { conversationId } = await alice.waitForType('accepted', first);
      const firstDone = await alice.terminal(first);
      const followUp = alice.send('and then?', conversationId);
      const followDone = await alice.terminal(followUp);
      const bob = await server.client('bob');
      const fresh = bob.send('and then?');
      const freshDone = await bob.terminal(fresh);
      assert.ok(firstDone.type === 'done' && followDone.type === 'done' && freshDone.type === 'done');
      if (firstDone.type !== 'done' || followDone.type !== 'done' || freshDone.type !== 'done') return;
      // The follow-up carries the earlier exchange; another user's identical message does not.
      assert.ok(followDone.usage.promptTokens > firstDone.usage.promptTokens + firstDone.usage.completionTokens - 1);
      assert.ok(freshDone.usage.promptTokens < followDone.usage.promptTokens);
      assert.equal(bob.replyText(fresh).includes('CANARY'), false);
    });

    test('regenerate replaces the last exchange: the old reply stays out of the prompt', async () => {
      const client = await server.client();
      const first = client.send('first question');
      const { conversationId } = await client.waitForType('accepted', first);
      await client.terminal(first);
      const second = client.send('second question', conversationId);
      const secondDone = await client.terminal(second);
      const again = client.nextId();
      client.sendFrame({ type: 'send', id: again, text: 'second question', conversationId, regenerate: true });
      const againDone = await client.terminal(again);
      const third = client.send('third question', conversationId);
      const thirdDone = await client.terminal(third);
      const plain = client.nextId();
      client.sendFrame({ type: 'send', id: plain, text: 'third question', conversationId });
      const plainDone = await client.terminal(plain);
      assert.ok(secondDone.type === 'done' && againDone.type === 'done' && thirdDone.type === 'done' && plainDone.type === 'done');
      if (secondDone.type !== 'done' || againDone.type !== 'done' || thirdDone.type !== 'done' || plainDone.type !== 'done') return;
      // Same history as the reply it replaces, so the same prompt.
      assert.equal(againDone.usage.promptTokens, secondDone.usage.promptTokens);
      // Without the flag, the earlier exchange stays and the prompt grows.
      assert.ok(plainDone.usage.promptTokens > thirdDone.usage.promptTokens);
    });

    test('a conversation longer than the context drops its oldest turns and keeps answering', async () => {
      const client = await server.client();
      let conversationId: string | undefined;
      for (let turn = 0; turn < 14; turn++) {
        const id = client.send(`turn ${turn}: ${'words '.repeat(20)}`, conversationId);
        conversationId ??= (await client.waitForType('accepted', id)).conversationId;
        const done = await client.terminal(id);
        assert.equal(done.type, 'done', `turn ${turn}: ${JSON.stringify(done)}`);
        if (done.type === 'done') assert.ok(done.usage.promptTokens + done.usage.completionTokens <= 512);
      }
    });

    test('logs carry no token, invite or message text', async () => {
      const client = await server.client('logcheck');
      const token = await server.token();
      const id = client.send('PRIVATE-MESSAGE-TEXT-991');
      await client.terminal(id);
      assert.ok(!server.logs.contains('PRIVATE-MESSAGE-TEXT-991'));
      assert.ok(!server.logs.contains(TEST_INVITE));
      assert.ok(!server.logs.contains(token.split('.')[2] as string));
      assert.ok(server.logs.contains('generation finished'));
    });

    test('every response carries the security headers, and unknown API paths get JSON 404', async () => {
      const page = await fetch(`${server.baseUrl}/`);
      assert.equal(page.status, 200);
      assert.match(page.headers.get('content-security-policy') ?? '', /default-src 'self'/);
      assert.equal(page.headers.get('x-content-type-options'), 'nosniff');
      assert.equal(page.headers.get('referrer-policy'), 'no-referrer');
      const missing = await fetch(`${server.baseUrl}/api/nothing`);
      assert.equal(missing.status, 404);
      assert.equal(((await missing.json()) as { code: string }).code, 'not_found');
    });

    test('an oversized HTTP body gets 413', async () => {
      const status = await new Promise<number>((resolve, reject) => {
        const req = httpRequest(`${server.baseUrl}/api/token`, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
        req.end(Buffer.alloc(64 * 1024, 'a'));
      });
      assert.equal(status, 413);
    });
  });
}
