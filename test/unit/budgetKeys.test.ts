import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { loadConfig, type ConfigInput } from '../../server/config.js';
import { budgetKeysOf } from '../../server/limits/budgetKeysOf.js';
import { Limiters, type LimiterSet } from '../../server/limits/Limiters.js';

const limiters = (config: ConfigInput, overrides: Partial<LimiterSet> = {}) => {
  const failures: string[] = [];
  const set = new Limiters(loadConfig(config), overrides, (_error, name) => failures.push(name));
  return Object.assign(set, { failures });
};

describe('budgetKeysOf', () => {
  test('an invite user is charged as a user and as an address; a named account as itself only', () => {
    assert.deepEqual(budgetKeysOf({ userId: 'u_abc' }, '192.168.1.20'), ['u_abc', 'ip:192.168.1.20']);
    assert.deepEqual(budgetKeysOf({ userId: 'a_abc' }, '192.168.1.20'), ['a_abc']);
  });

  test('an id that is not an account is charged to its address too (fail closed)', () => {
    assert.deepEqual(budgetKeysOf({ userId: 'x_new_kind' }, '::1'), ['x_new_kind', 'ip:::1']);
  });
});

describe('Limiters charged to several keys', () => {
  test('a reply is admitted only when every key admits it, and a refusal takes nothing from any key', async () => {
    const set = limiters({ generationsPerMinute: 2, generationsPerMinutePerIp: 2 });
    assert.deepEqual(await set.generation(['u_a', 'ip:x']), { ok: true });
    assert.deepEqual(await set.generation(['u_a', 'ip:x']), { ok: true });
    // The address is spent: a new user there is refused, and keeps its own budget whole.
    assert.equal((await set.generation(['u_b', 'ip:x'])).ok, false);
    assert.deepEqual(await set.generation('u_b'), { ok: true });
    assert.deepEqual(await set.generation('u_b'), { ok: true });
    // Another address is untouched.
    assert.deepEqual(await set.generation(['u_c', 'ip:y']), { ok: true });
  });

  test('a refused token reservation is given back to every key, the refusing one included', async () => {
    const set = limiters({ tokensPerHour: 100, tokensPerHourPerIp: 100 });
    assert.deepEqual(await set.reserveTokens(['u_a', 'ip:x'], 60), { ok: true });
    const refused = await set.reserveTokens(['u_b', 'ip:x'], 60);
    assert.ok(!refused.ok && !refused.failed && refused.retryAfterMs > 0);
    // Nothing stayed reserved for u_b ...
    assert.deepEqual(await set.reserveTokens('u_b', 100), { ok: true });
    // ... nor for the address: once u_a's reply refunds, the address has all 100 again.
    await set.refundTokens(['u_a', 'ip:x'], 60);
    assert.deepEqual(await set.reserveTokens(['u_c', 'ip:x'], 100), { ok: true });
  });

  test('refunds go to every key the reservation was charged to', async () => {
    const set = limiters({ tokensPerHour: 100, tokensPerHourPerIp: 100 });
    assert.deepEqual(await set.reserveTokens(['u_a', 'ip:x'], 100), { ok: true });
    await set.refundTokens(['u_a', 'ip:x'], 40);
    assert.deepEqual(await set.reserveTokens(['u_a', 'ip:x'], 40), { ok: true });
    assert.equal((await set.reserveTokens(['u_a', 'ip:x'], 1)).ok, false);
  });

  test('address keys are held to the per-IP sizes, user keys to the per-user ones', async () => {
    const set = limiters({ generationsPerMinute: 1, generationsPerMinutePerIp: 3 });
    assert.deepEqual(await set.generation(['u_a', 'ip:x']), { ok: true });
    assert.equal((await set.generation(['u_a', 'ip:x'])).ok, false, 'u_a has used its one reply');
    assert.deepEqual(await set.generation(['u_b', 'ip:x']), { ok: true });
    assert.deepEqual(await set.generation(['u_c', 'ip:x']), { ok: true });
    assert.equal((await set.generation(['u_d', 'ip:x'])).ok, false, 'the address has used its three');
  });

  test('a limiter that fails on the second key refuses (fail closed) and gives the first key back', async () => {
    const down = { consume: () => Promise.reject(new Error('store is down')), reward: () => Promise.reject(new Error('store is down')) };
    const set = limiters({ tokensPerHour: 100 }, { tokensPerIp: down });
    const decision = await set.reserveTokens(['u_a', 'ip:x'], 70);
    assert.ok(!decision.ok && decision.failed);
    assert.deepEqual(set.failures, ['tokensPerIp']);
    assert.deepEqual(await set.reserveTokens('u_a', 100), { ok: true });
  });

  test('no keys at all is a refusal, never a free pass', async () => {
    const set = limiters({});
    const decision = await set.generation([]);
    assert.ok(!decision.ok && decision.failed);
  });
});
