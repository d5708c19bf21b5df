import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { LlamaEngine } from '../../server/engine/LlamaEngine.js';
import { rawRequest } from '../helpers/rawRequest.js';
import { loadTinyEngine, startTestServer, TEST_INVITE, TRANSPORTS, type TestServer } from '../helpers/startTestServer.js';
import { TestClient } from '../helpers/TestClient.js';
import { upgradeStatus } from '../helpers/upgradeStatus.js';

/**
 * Behind a load balancer (`--trust-proxy`), per-IP limits count each client by the address the
 * balancer forwards in X-Forwarded-For; from any other peer the header changes nothing
 * (SECURITY.md). Every request comes from 127.0.0.1, the "balancer" when trusted.
 */

const LIMITS = { loginFailuresBeforeLockout: 3, tokenRequestsPerMinute: 1000, maxConnectionsPerIp: 1 };

/** POST /api/token with the invite and extra headers, from 127.0.0.1 or `from`. */
async function join(server: TestServer, invite: string, headers: Record<string, string> = {}, from?: string) {
  const response = await rawRequest(`${server.baseUrl}/api/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ invite, name: 'guest' }),
    localAddress: from,
  });
  const cookie = response.headers['set-cookie'];
  return { status: response.status, cookie: Array.isArray(cookie) ? cookie.join('\n') : (cookie ?? '') };
}

const forwardedFor = (address: string) => ({ 'x-forwarded-for': address });

async function lockOut(server: TestServer, headers: Record<string, string>): Promise<void> {
  for (let i = 0; i < LIMITS.loginFailuresBeforeLockout; i++) assert.equal((await join(server, `wrong-invite-${i}`, headers)).status, 401);
}

for (const transport of TRANSPORTS) {
  describe(`--trust-proxy over ${transport}`, () => {
    let engine: LlamaEngine;
    let trusted: TestServer;
    let untrusted: TestServer;
    before(async () => {
      engine = await loadTinyEngine({ slots: 1 });
      trusted = await startTestServer(transport, engine, { ...LIMITS, trustProxy: ['127.0.0.1'] });
      untrusted = await startTestServer(transport, engine, LIMITS);
    });
    after(async () => {
      await trusted.stop();
      await untrusted.stop();
      await engine.dispose();
    });

    test('from a trusted proxy, the sign-in lockout counts per forwarded address: one locked-out client does not lock out another', async () => {
      await lockOut(trusted, forwardedFor('203.0.113.7'));
      assert.equal((await join(trusted, TEST_INVITE, forwardedFor('203.0.113.7'))).status, 429, 'the guessing client is locked out');
      // A client that writes another address in front is still known by what the proxy appended.
      assert.equal((await join(trusted, TEST_INVITE, forwardedFor('198.51.100.1, 203.0.113.7'))).status, 429);
      assert.equal((await join(trusted, TEST_INVITE, forwardedFor('203.0.113.8'))).status, 200, 'another client behind the same proxy joins');
      assert.equal((await join(trusted, TEST_INVITE)).status, 200, 'the proxy itself is not locked out');
      const lockout = trusted.logs.records.find((record) => record.event === 'lockout');
      assert.equal(lockout?.ip, '203.0.113.7', 'the log names the client, not the proxy');
    });

    test('without --trust-proxy a spoofed X-Forwarded-For changes nothing: the lockout still applies to the peer', async () => {
      await lockOut(untrusted, forwardedFor('203.0.113.20'));
      assert.equal((await join(untrusted, TEST_INVITE, forwardedFor('203.0.113.21'))).status, 429, 'another claimed address is still locked out');
      assert.equal((await join(untrusted, TEST_INVITE)).status, 429);
      assert.equal(untrusted.logs.records.find((record) => record.event === 'lockout')?.ip, '127.0.0.1');
    });

    test('the WebSocket upgrade counts connections per forwarded address, only from a trusted proxy', async () => {
      // maxConnectionsPerIp is 1: the second socket for one address is refused.
      const token = await trusted.token('ws-a');
      const first = await TestClient.connect(trusted.wsUrl, token, undefined, { headers: forwardedFor('203.0.113.30') });
      try {
        await first.waitForType('ready');
        const protocols = ['parley.v1', `bearer.${await trusted.token('ws-b')}`];
        assert.equal((await upgradeStatus(trusted.wsUrl, protocols, { headers: forwardedFor('203.0.113.30') })).status, 429, 'the same client is at its cap');
        assert.equal((await upgradeStatus(trusted.wsUrl, protocols, { headers: forwardedFor('203.0.113.31') })).status, 101, 'another client connects');
        assert.ok(trusted.logs.records.some((record) => record.msg === 'connection opened' && record.ip === '203.0.113.30'));
      } finally {
        first.drop();
      }

      // 127.0.0.1 is locked out of signing in on the untrusted server (above): these join from 127.0.0.3.
      const from = { localAddress: '127.0.0.3' };
      const other = await TestClient.connect(untrusted.wsUrl, await untrusted.token('ws-a', from), undefined, { ...from, headers: forwardedFor('203.0.113.40') });
      try {
        await other.waitForType('ready');
        const protocols = ['parley.v1', `bearer.${await untrusted.token('ws-b', from)}`];
        assert.equal((await upgradeStatus(untrusted.wsUrl, protocols, { ...from, headers: forwardedFor('203.0.113.41') })).status, 429, 'a claimed address is not believed');
      } finally {
        other.drop();
      }
    });

    test('X-Forwarded-Proto: https from a trusted proxy makes the refresh cookie Secure; from anyone else it does not', async () => {
      const https = { 'x-forwarded-proto': 'https' };
      const viaProxy = await join(trusted, TEST_INVITE, { ...https, ...forwardedFor('203.0.113.50') });
      assert.equal(viaProxy.status, 200);
      assert.match(viaProxy.cookie, /parley_refresh=[^;]+;.*; Secure/);
      const plain = await join(trusted, TEST_INVITE, forwardedFor('203.0.113.51'));
      assert.equal(plain.status, 200);
      assert.doesNotMatch(plain.cookie, /Secure/);
      // 127.0.0.2 is no trusted proxy, on either server.
      for (const server of [trusted, untrusted]) {
        const spoofed = await join(server, TEST_INVITE, https, '127.0.0.2');
        assert.equal(spoofed.status, 200);
        assert.match(spoofed.cookie, /parley_refresh=/);
        assert.doesNotMatch(spoofed.cookie, /Secure/);
      }
    });
  });
}
