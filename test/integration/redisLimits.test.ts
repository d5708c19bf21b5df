import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, afterEach, before, beforeEach, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { SIGNING_KEY_FILE } from '../../server/auth/loadOrCreateSigningKey.js';
import type { ConfigInput } from '../../server/config.js';
import { eventually } from '../helpers/eventually.js';
import type { GatedEngine } from '../helpers/GatedEngine.js';
import { redisUnavailable } from '../helpers/redisUnavailable.js';
import { loadGatedTinyEngine, startTestServer, TEST_INVITE, TRANSPORTS, type TestServer } from '../helpers/startTestServer.js';
import { startRedis, type TestRedis } from '../helpers/startRedis.js';
import { upgradeStatus } from '../helpers/upgradeStatus.js';

/** One transport is enough: what is shared lives in Redis, behind either transport alike. */
const transport = TRANSPORTS[0] ?? 'ws';

async function readyz(server: TestServer): Promise<{ status: number; body: { status: string; reason?: string } }> {
  const response = await fetch(`${server.baseUrl}/readyz`);
  return { status: response.status, body: (await response.json()) as { status: string; reason?: string } };
}

async function tokenRequest(server: TestServer, invite: string): Promise<{ status: number; code?: string }> {
  const response = await fetch(`${server.baseUrl}/api/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ invite, name: 'guesser' }) });
  const body = (await response.json()) as { code?: string };
  return { status: response.status, ...(body.code === undefined ? {} : { code: body.code }) };
}

describe(`budgets and connection counts across gateways (--redis, over ${transport})`, { skip: redisUnavailable('redisLimits.test.ts') }, () => {
  let engine: GatedEngine;
  let redis: TestRedis;
  let admin: Redis;
  const running: TestServer[] = [];
  /** Gateways A and B: one Redis, one signing key (B reads A's), so a token from either works on both. */
  const startGateways = async (overrides: ConfigInput = {}) => {
    const a = await startTestServer(transport, engine, { redis: redis.url, ...overrides });
    running.push(a);
    const b = await startTestServer(transport, engine, { redis: redis.url, signingKeyFile: join(a.dataDir, SIGNING_KEY_FILE), ...overrides });
    running.push(b);
    return { a, b };
  };
  before(async () => {
    engine = await loadGatedTinyEngine({ slots: 2, contextSize: 2048 });
    redis = await startRedis();
    admin = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    // Down on purpose in one test; its reconnect errors are expected.
    admin.on('error', () => undefined);
  });
  beforeEach(async () => {
    // Each test starts from empty shared state: 127.0.0.1's lockout or upgrade count must not leak into the next.
    if (admin.status !== 'ready') await admin.connect().catch(() => undefined);
    await admin.flushall();
  });
  afterEach(async () => {
    engine.gate.open();
    await Promise.allSettled(running.splice(0).map((server) => server.stop()));
  });
  after(async () => {
    admin.disconnect();
    await redis.close();
    await engine.dispose();
  });

  test("a user's replies per minute spent on gateway A are refused on gateway B", async () => {
    const { a, b } = await startGateways({ generationsPerMinute: 2 });
    const token = await a.token('budgeted');
    const onA = await a.connect(token);
    const onB = await b.connect(token);
    for (const client of [onA, onA]) {
      const id = client.send('hello');
      assert.equal((await client.terminal(id)).type, 'done');
    }
    const id = onB.send('hello again');
    const refused = await onB.terminal(id);
    assert.equal(refused.type === 'error' && refused.code, 'rate_limited', 'B knows what A spent');
    assert.ok(refused.type === 'error' && (refused.retryAfterMs ?? 0) > 0);
    const other = await b.client('someone else');
    assert.equal((await other.terminal(other.send('hello'))).type, 'done', 'another user on B has their own budget');
  });

  test("a user's open sockets are capped across A and B; a socket closed on A makes room on B", async () => {
    const { a, b } = await startGateways({ maxConnectionsPerUser: 2 });
    const token = await a.token('capped');
    const first = await a.connect(token);
    await b.connect(token);
    for (const gateway of [a, b]) {
      const refused = await upgradeStatus(gateway.wsUrl, ['parley.v1', `bearer.${token}`]);
      assert.equal(refused.status, 429, 'the third socket is refused on either gateway');
      assert.equal((JSON.parse(refused.body) as { code: string }).code, 'rate_limited');
    }
    first.drop();
    const admitted = await eventually(() => upgradeStatus(b.wsUrl, ['parley.v1', `bearer.${token}`]), (result) => result.status === 101, 'room on B once the socket on A closed');
    assert.equal(admitted.status, 101);
  });

  test('a sign-in lockout begun on A holds on B', async () => {
    const { a, b } = await startGateways({ loginFailuresBeforeLockout: 2, lockoutSeconds: 600 });
    assert.equal((await tokenRequest(a, 'wrong-invite-1')).status, 401);
    assert.equal((await tokenRequest(a, 'wrong-invite-2')).status, 401);
    const locked = await tokenRequest(b, TEST_INVITE);
    assert.deepEqual(locked, { status: 429, code: 'rate_limited' }, 'the right invite on B is refused while the address is locked');
  });

  test('Redis down: a running reply finishes, new work is refused saying why, /readyz is 503 with the reason; Redis back: service returns without a restart', async () => {
    const { a, b } = await startGateways();
    const token = await a.token('outage');
    const onA = await a.connect(token);
    const onB = await b.connect(token);
    engine.gate.hold(1);
    const runningId = onA.send('tell me a story');
    await onA.waitForType('delta', runningId);
    await engine.gate.stalled();

    await redis.stop();
    const refusedId = onB.send('and another one');
    const refused = await onB.terminal(refusedId);
    assert.equal(refused.type === 'error' && refused.code, 'limiter_unavailable');
    assert.match(refused.type === 'error' ? refused.message : '', /shared state \(Redis\) is unreachable/);
    for (const gateway of [a, b]) {
      const probe = await eventually(() => readyz(gateway), (result) => result.status === 503, '/readyz 503 while Redis is down');
      assert.equal(probe.body.status, 'unavailable');
      assert.match(probe.body.reason ?? '', /redis at redis:\/\/127\.0\.0\.1:\d+ is unreachable/);
    }
    const upgrade = await upgradeStatus(b.wsUrl, ['parley.v1', `bearer.${token}`]);
    assert.equal(upgrade.status, 503, 'no new socket without the shared counts');
    assert.match((JSON.parse(upgrade.body) as { message: string }).message, /shared state \(Redis\) is unreachable/);

    engine.gate.open();
    const finished = await onA.terminal(runningId);
    assert.equal(finished.type, 'done', 'the reply that was running when Redis went away is not cut');
    assert.ok(onA.replyText(runningId).length > 0);
    // Giving back the unused tokens needs Redis: that failure is logged, never thrown into the reply.
    await eventually(async () => a.logs.records.some((record) => record.limiter === 'tokens' && record.msg === 'rate limiter failed; refusing'), Boolean, 'the failed refund logged');

    await redis.start();
    for (const gateway of [a, b]) {
      const probe = await eventually(() => readyz(gateway), (result) => result.status === 200, '/readyz 200 once Redis is back', 30_000);
      assert.deepEqual(probe.body, { status: 'ready' });
    }
    const again = await onB.terminal(onB.send('are you back?'));
    assert.equal(again.type, 'done', 'the same sockets work again: no gateway was restarted');
    assert.equal(onA.closeCode, undefined, 'the socket on A stayed open through the outage');
  });
});
