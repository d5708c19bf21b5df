import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { UserStore } from '../../server/auth/UserStore.js';
import { defaults } from '../../server/config.js';
import type { GatedEngine } from '../helpers/GatedEngine.js';
import { rawRequest } from '../helpers/rawRequest.js';
import { loadGatedTinyEngine, startTestServer, TEST_INVITE, TRANSPORTS, type From, type TestServer } from '../helpers/startTestServer.js';
import { TestClient } from '../helpers/TestClient.js';

/**
 * Every invite login is a new user with fresh per-user budgets. These tests check that the
 * budgets still hold for the person behind an address (SECURITY.md, "Budgets per person"):
 * re-joining does not reset them, another address has its own, a named account keeps one budget
 * across its devices, and one address can create only so many invite users per hour.
 */

/** A second device on this machine: the server sees a different peer address. */
const SECOND_DEVICE: From = { localAddress: '127.0.0.2' };
const PASSWORD = 'dana-password-1234';

async function join(server: TestServer, name: string, from?: From) {
  const body = JSON.stringify({ invite: TEST_INVITE, name });
  return rawRequest(`${server.baseUrl}/api/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body, localAddress: from?.localAddress });
}

/** A socket of the named account `name`, signed in with its password from `from`. */
async function accountClient(server: TestServer, name: string, from?: From): Promise<TestClient> {
  const body = JSON.stringify({ name, password: PASSWORD });
  const response = await rawRequest(`${server.baseUrl}/api/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body, localAddress: from?.localAddress });
  assert.equal(response.status, 200, response.body);
  const { token } = JSON.parse(response.body) as { token: string };
  const client = await TestClient.connect(server.wsUrl, token, undefined, from ? { localAddress: from.localAddress } : {});
  await client.waitForType('ready');
  return client;
}

async function userIdOf(client: TestClient): Promise<string> {
  return (await client.waitForType('ready')).user.id;
}

for (const transport of TRANSPORTS) {
  describe(`budgets per person over ${transport}`, () => {
    let engine: GatedEngine;
    before(async () => {
      engine = await loadGatedTinyEngine({ slots: 2, contextSize: 2048 });
    });
    afterEach(() => engine.gate.open());
    after(async () => {
      await engine.dispose();
    });

    test('joining again with the invite from the same address does not reset the reply budget', async () => {
      const server = await startTestServer(transport, engine, { generationsPerMinute: 2, generationsPerMinutePerIp: 2, maxTokens: 8 });
      try {
        const first = await server.client('first');
        assert.equal((await first.terminal(first.send('one'))).type, 'done');
        assert.equal((await first.terminal(first.send('two'))).type, 'done');
        const third = await first.terminal(first.send('three'));
        assert.equal(third.type === 'error' && third.code, 'rate_limited');
        const again = await server.client('again');
        assert.notEqual(await userIdOf(again), await userIdOf(first), 'joining again made a new user');
        const fourth = await again.terminal(again.send('four'));
        assert.equal(fourth.type === 'error' && fourth.code, 'rate_limited');
        assert.ok(fourth.type === 'error' && (fourth.retryAfterMs ?? 0) > 0);
        assert.equal(again.framesFor(fourth.id).filter((frame) => frame.type === 'delta').length, 0);
      } finally {
        await server.stop();
      }
    });

    test('joining again with the invite from the same address does not reset the hourly token budget', async () => {
      const server = await startTestServer(transport, engine, { tokensPerHour: 500, tokensPerHourPerIp: 500, maxTokens: 300 });
      try {
        const first = await server.client('first');
        // A running reply holds its reservation (prompt + 300), more than half of the 500.
        engine.gate.hold(1);
        const running = first.send('keep going');
        await first.waitForType('delta', running);
        const again = await server.client('again');
        const over = await again.terminal(again.send('over'));
        assert.equal(over.type === 'error' && over.code, 'rate_limited');
        assert.match(over.type === 'error' ? over.message : '', /500/);
        assert.equal(first.terminalsFor(running).length, 0, 'the first reply is still running');
        // What the refused request reserved from the new user was given back: once the first
        // reply is stopped and refunds its unused part, the new user gets a reply.
        first.cancel(running);
        assert.equal((await first.terminal(running)).type, 'cancelled');
        engine.gate.open();
        assert.equal((await again.terminal(again.send('now'))).type, 'done');
      } finally {
        await server.stop();
      }
    });

    test('two devices behind two addresses keep separate budgets', async () => {
      const server = await startTestServer(transport, engine, { generationsPerMinute: 2, generationsPerMinutePerIp: 2, maxTokens: 8 });
      try {
        const here = await server.client('here');
        assert.equal((await here.terminal(here.send('one'))).type, 'done');
        assert.equal((await here.terminal(here.send('two'))).type, 'done');
        const refused = await here.terminal(here.send('three'));
        assert.equal(refused.type === 'error' && refused.code, 'rate_limited');
        const there = await server.client('there', SECOND_DEVICE);
        assert.equal((await there.terminal(there.send('one'))).type, 'done');
        assert.equal((await there.terminal(there.send('two'))).type, 'done');
        const spent = await there.terminal(there.send('three'));
        assert.equal(spent.type === 'error' && spent.code, 'rate_limited');
      } finally {
        await server.stop();
      }
    });

    test("a named account keeps one budget across its devices, and spends none of its address's", async () => {
      const server = await startTestServer(transport, engine, { generationsPerMinute: 2, generationsPerMinutePerIp: 2, maxTokens: 8 });
      try {
        await new UserStore(server.dataDir).add('dana', PASSWORD);
        const laptop = await accountClient(server, 'dana');
        const phone = await accountClient(server, 'dana', SECOND_DEVICE);
        assert.equal((await laptop.terminal(laptop.send('one'))).type, 'done');
        assert.equal((await phone.terminal(phone.send('two'))).type, 'done');
        const third = await phone.terminal(phone.send('three'));
        assert.equal(third.type === 'error' && third.code, 'rate_limited');
        // The account's replies were charged to the account only: an invite user at the
        // laptop's address still has the address's whole budget.
        const guest = await server.client('guest');
        assert.equal((await guest.terminal(guest.send('one'))).type, 'done');
        assert.equal((await guest.terminal(guest.send('two'))).type, 'done');
      } finally {
        await server.stop();
      }
    });

    test('the 11th new invite user from one address within the hour gets 429 with Retry-After; wrong invites and other addresses do not count', async () => {
      // The shipped default (10), which the test helper otherwise lifts.
      const server = await startTestServer(transport, engine, { inviteUsersPerHour: defaults.inviteUsersPerHour });
      try {
        assert.equal(defaults.inviteUsersPerHour, 10);
        for (let i = 0; i < 3; i++) {
          const wrong = await rawRequest(`${server.baseUrl}/api/token`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ invite: 'not-the-invite-code', name: 'guess' }),
          });
          assert.equal(wrong.status, 401);
        }
        for (let i = 1; i <= 10; i++) assert.equal((await join(server, `join ${i}`)).status, 200, `join ${i}`);
        const eleventh = await join(server, 'join 11');
        assert.equal(eleventh.status, 429, eleventh.body);
        assert.ok(Number(eleventh.headers['retry-after']) >= 1, `Retry-After: ${String(eleventh.headers['retry-after'])}`);
        const body = JSON.parse(eleventh.body) as Record<string, unknown>;
        assert.deepEqual(Object.keys(body).sort(), ['code', 'message', 'retryAfterMs']);
        assert.equal(body.code, 'rate_limited');
        assert.ok(typeof body.retryAfterMs === 'number' && body.retryAfterMs > 0);
        assert.equal((await join(server, 'elsewhere', SECOND_DEVICE)).status, 200, 'another address has its own count');
      } finally {
        await server.stop();
      }
    });
  });
}
