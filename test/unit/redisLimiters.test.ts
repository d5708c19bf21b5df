import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createSharedLimits } from '../../server/cluster/createSharedLimits.js';
import { isRedisUnreachable } from '../../server/cluster/isRedisUnreachable.js';
import { openRedis, type OpenedRedis } from '../../server/cluster/openRedis.js';
import { loadConfig, type ConfigInput } from '../../server/config.js';
import { LimitRefusedError } from '../../server/limits/LimitRefusedError.js';
import { Limiters } from '../../server/limits/Limiters.js';
import { createLogger } from '../../server/logging/createLogger.js';
import { ErrorCode } from '../../shared/errorCodes.js';
import { eventually } from '../helpers/eventually.js';
import { LogSink } from '../helpers/LogSink.js';
import { redisUnavailable } from '../helpers/redisUnavailable.js';
import { startRedis, type TestRedis } from '../helpers/startRedis.js';

describe('limiters on Redis (--redis)', { skip: redisUnavailable('redisLimiters.test.ts') }, () => {
  let redis: TestRedis;
  const opened: OpenedRedis[] = [];
  const gateways: Limiters[] = [];
  const logs = new LogSink();
  const logger = createLogger({ level: 'debug', destination: logs });
  /** One gateway's limiters: its own Redis connections, the shared budgets. */
  const gateway = async (config: ConfigInput, failures: string[] = []) => {
    const connection = await openRedis(redis.url, { logger });
    opened.push(connection);
    const validated = loadConfig(config);
    const shared = createSharedLimits(validated, connection, logger);
    const limiters = new Limiters(validated, shared.limiters, (_error, name) => failures.push(name), undefined, shared.state);
    gateways.push(limiters);
    return limiters;
  };
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await Promise.allSettled(gateways.map((limiters) => limiters.close()));
    await Promise.allSettled(opened.map((connection) => connection.close()));
    await redis.close();
  });

  test("a user's generations, a token reservation and its refund, and an address's lockout are one budget across gateways", async () => {
    const config = { generationsPerMinute: 2, tokensPerHour: 100, loginFailuresBeforeLockout: 2, lockoutSeconds: 60 };
    const a = await gateway(config);
    const b = await gateway(config);
    assert.equal((await a.generation('u_shared')).ok, true);
    assert.equal((await b.generation('u_shared')).ok, true);
    const spent = await b.generation('u_shared');
    assert.equal(spent.ok, false, 'the third reply of the minute is refused, whichever gateway took the first two');
    assert.equal(!spent.ok && spent.failed, false, 'a working limiter refused: rate_limited, not a failure');
    assert.equal((await a.generation('u_other')).ok, true, 'another user has their own budget');

    assert.equal((await a.reserveTokens('u_shared', 80)).ok, true);
    assert.equal((await b.reserveTokens('u_shared', 30)).ok, false, 'the reservation made on A counts on B');
    await a.refundTokens('u_shared', 50);
    assert.equal((await b.reserveTokens('u_shared', 30)).ok, true, 'the refund made on A counts on B');

    await a.loginFailed('10.9.0.1');
    await a.loginFailed('10.9.0.1');
    const locked = await b.loginAllowed('10.9.0.1');
    assert.equal(locked.ok, false, 'the lockout begun on A holds on B');
    assert.ok(!locked.ok && !locked.failed && locked.retryAfterMs > 0);
    await b.loginSucceeded('10.9.0.1');
    assert.equal((await a.loginAllowed('10.9.0.1')).ok, true, 'a success on B clears the address on A');
  });

  test('an address that signed in to an account on A is recognised on B: not slowed while strangers are', async () => {
    const config = { loginFailuresBeforeLockout: 2, lockoutSeconds: 60 };
    const a = await gateway(config);
    const b = await gateway(config);
    await a.passwordSucceeded('10.8.0.1', 'owner');
    for (const stranger of ['10.8.1.1', '10.8.1.2']) await b.passwordFailed(stranger, 'owner');
    assert.deepEqual(await b.passwordAttempt('10.8.1.3', 'owner'), { ok: true }, "a stranger's first attempt in the slowed account");
    assert.equal((await b.passwordAttempt('10.8.1.4', 'owner')).ok, false, 'the next stranger waits: the account is slowed');
    for (let index = 0; index < 3; index++) assert.deepEqual(await b.passwordAttempt('10.8.0.1', 'owner'), { ok: true }, 'the address that signed in on A is not slowed on B');
  });

  test('Redis down: budgets refuse with limiter_unavailable saying shared state is unreachable, refunds are logged, not thrown; frames stay local; back when Redis is', async () => {
    const failures: string[] = [];
    const limiters = await gateway({ generationsPerMinute: 100, tokensPerHour: 1000 }, failures);
    assert.equal((await limiters.reserveTokens('u_down', 100)).ok, true);
    await redis.stop();
    try {
      const refused = await limiters.generation('u_down');
      assert.ok(!refused.ok && refused.failed && refused.sharedStateUnreachable === true, 'a refusal that says why');
      const error = new LimitRefusedError(refused, 'unused');
      assert.equal(error.code, ErrorCode.limiterUnavailable);
      assert.equal(error.httpStatus, 503);
      assert.match(error.message, /shared state \(Redis\) is unreachable/);
      const socket = await limiters.connectionAllowed('10.9.0.2', 'u_down');
      assert.ok(!socket.ok && socket.failed && socket.sharedStateUnreachable === true, 'no new socket without the shared count');
      await limiters.refundTokens('u_down', 60);
      assert.ok(failures.includes('tokens'), 'the failed refund is reported');
      assert.equal((await limiters.frame('c1')).ok, true, 'the per-frame limit does not need Redis');
    } finally {
      await redis.start();
    }
    await eventually(() => limiters.generation('u_down'), (decision) => decision.ok, 'budgets work again once Redis is back');
    assert.equal((await limiters.connectionAllowed('10.9.0.2', 'u_down')).ok, true);
  });

  test('only errors about reaching Redis count as shared state unreachable', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6379'), { code: 'ECONNREFUSED' });
    for (const error of [new Error("Stream isn't writeable and enableOfflineQueue options is false"), new Error('Connection is closed.'), new Error('Command timed out'), refused]) {
      assert.equal(isRedisUnreachable(error), true, error.message);
    }
    for (const error of [new Error('ERR wrong number of arguments'), new Error('no budget keys'), 'a string']) assert.equal(isRedisUnreachable(error), false, String(error));
    assert.doesNotMatch(new LimitRefusedError({ ok: false, failed: true, retryAfterMs: 1000 }, 'unused').message, /Redis/, 'another failure keeps the plain message');
  });

  test('without --redis nothing is shared: the in-memory limiters and counts are used', () => {
    const shared = createSharedLimits(loadConfig({}), undefined, logger);
    assert.deepEqual(shared, { limiters: {}, state: {} });
  });
});
