import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { RateLimiterMemory } from 'rate-limiter-flexible';
import { ScriptedEngine } from '../helpers/ScriptedEngine.js';
import { redisUnavailable } from '../helpers/redisUnavailable.js';
import { startRedis, type TestRedis } from '../helpers/startRedis.js';
import { startTestServer, TEST_INVITE, type TestServer } from '../helpers/startTestServer.js';

/**
 * Shared state lost in the middle of a request, after its limits passed: the limits here are the
 * in-process ones, so only the shared refresh session (a Redis record) meets the outage. The
 * answer is the same 503 `limiter_unavailable` the limits give while Redis is down, never a 500.
 */
describe('redis lost mid-request', { skip: redisUnavailable('the mid-request outage suite') }, () => {
  let redis: TestRedis;
  let server: TestServer;
  before(async () => {
    redis = await startRedis();
    const memory = (keyPrefix: string) => new RateLimiterMemory({ keyPrefix, points: 1000, duration: 60 });
    server = await startTestServer('ws', new ScriptedEngine(), { redis: redis.url }, { limiterOverrides: { tokenRequests: memory('treq'), loginFailures: memory('lfail') } });
  });
  after(async () => {
    await server?.stop();
    await redis?.close();
  });

  test('a refresh whose session record cannot be read answers 503 saying the shared state is unreachable', async () => {
    const signIn = await fetch(`${server.baseUrl}/api/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ invite: TEST_INVITE, name: 'Roamer' }) });
    assert.equal(signIn.status, 200);
    const { refreshBinding } = (await signIn.json()) as { refreshBinding: string };
    const cookie = signIn.headers.get('set-cookie')?.split(';')[0] ?? '';
    await redis.stop();
    const refresh = await fetch(`${server.baseUrl}/api/token/refresh`, { method: 'POST', headers: { 'content-type': 'application/json', cookie, 'x-parley-binding': refreshBinding }, body: '{}' });
    const body = (await refresh.json()) as { code: string; message: string };
    assert.equal(refresh.status, 503);
    assert.equal(body.code, 'limiter_unavailable');
    assert.match(body.message, /shared state \(Redis\) is unreachable/);
    assert.ok(refresh.headers.get('retry-after'), 'says when to come back');
  });
});
