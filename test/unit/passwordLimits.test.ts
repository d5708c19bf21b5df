import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { loadConfig, type ConfigInput } from '../../server/config.js';
import { Limiters, PasswordRefusal, slowdownSeconds, type LimiterSet } from '../../server/limits/Limiters.js';

/**
 * The password limits decide before the password is looked at (Limiters.passwordAttempt). These
 * tests assert the decisions themselves, never how fast anything ran.
 */
const THRESHOLD = 3;
const LOCKOUT_SECONDS = 900;
const limiters = (config: ConfigInput = {}, overrides: Partial<LimiterSet> = {}) => {
  const failures: string[] = [];
  const set = new Limiters(loadConfig({ loginFailuresBeforeLockout: THRESHOLD, lockoutSeconds: LOCKOUT_SECONDS, ...config }), overrides, (_error, name) => failures.push(name));
  return Object.assign(set, { failures });
};

async function guessWrong(set: Limiters, ip: string, account: string): Promise<void> {
  assert.deepEqual(await set.passwordAttempt(ip, account), { ok: true }, `${ip} may still guess at ${account}`);
  await set.passwordFailed(ip, account);
}

describe('password limits', () => {
  test("a stranger's wrong passwords lock their own (address, account) pair, and the owner's first attempt from another address is checked", async () => {
    const set = limiters();
    for (let i = 0; i < THRESHOLD; i++) await guessWrong(set, '10.0.0.66', 'admin');
    const stranger = await set.passwordAttempt('10.0.0.66', 'admin');
    assert.equal(stranger.ok, false);
    assert.equal(!stranger.ok && stranger.reason, PasswordRefusal.pairLocked);
    assert.ok(!stranger.ok && stranger.retryAfterMs > (LOCKOUT_SECONDS - 5) * 1000, 'the pair is locked for the lockout time');
    assert.deepEqual(await set.passwordAttempt('10.0.0.2', 'admin'), { ok: true }, 'the owner is not locked out');
    assert.deepEqual(await set.passwordAttempt('10.0.0.66', 'bob'), { ok: true }, "the stranger's other pairs are not locked");
  });

  test('guesses spread over many addresses are slowed to one attempt per lockoutSeconds / threshold for the account, not locked', async () => {
    const set = limiters();
    // One guess each from THRESHOLD addresses: no pair is near its lockout.
    for (let i = 0; i < THRESHOLD; i++) await guessWrong(set, `10.0.1.${i}`, 'admin');
    // The account is now slowed: the first attempt from a fresh address is due, the next is not.
    assert.deepEqual(await set.passwordAttempt('10.0.1.100', 'admin'), { ok: true });
    const next = await set.passwordAttempt('10.0.1.101', 'admin');
    assert.equal(next.ok, false);
    assert.equal(!next.ok && next.reason, PasswordRefusal.slowedDown);
    assert.equal(!next.ok && next.failed, false);
    const pace = slowdownSeconds({ lockoutSeconds: LOCKOUT_SECONDS, loginFailuresBeforeLockout: THRESHOLD }) * 1000;
    assert.equal(pace, 300_000);
    assert.ok(!next.ok && next.retryAfterMs > 0 && next.retryAfterMs <= pace, `retry within the pace (${!next.ok && next.retryAfterMs} ms)`);
    // Every further address waits too: more addresses buy no more guesses.
    for (let i = 102; i < 110; i++) assert.equal((await set.passwordAttempt(`10.0.1.${i}`, 'admin')).ok, false);
    assert.deepEqual(await set.passwordAttempt('10.0.1.200', 'other'), { ok: true }, 'other accounts are not slowed');
  });

  test('an address that signed in to the account before is not slowed, and its success keeps the account slowed for others', async () => {
    const set = limiters();
    assert.deepEqual(await set.passwordAttempt('10.0.2.1', 'admin'), { ok: true });
    await set.passwordSucceeded('10.0.2.1', 'admin');
    for (let i = 0; i < THRESHOLD; i++) await guessWrong(set, `10.0.2.${50 + i}`, 'admin');
    assert.deepEqual(await set.passwordAttempt('10.0.2.99', 'admin'), { ok: true });
    assert.equal((await set.passwordAttempt('10.0.2.98', 'admin')).ok, false, 'slowed');
    for (let i = 0; i < 5; i++) assert.deepEqual(await set.passwordAttempt('10.0.2.1', 'admin'), { ok: true }, 'the recognised address is not');
    await set.passwordSucceeded('10.0.2.1', 'admin');
    assert.equal((await set.passwordAttempt('10.0.2.97', 'admin')).ok, false, "the owner's success does not lift the slowdown for strangers");
  });

  test('a success clears the pair, and the pair locks again only after threshold more failures', async () => {
    const set = limiters();
    for (let i = 0; i < THRESHOLD - 1; i++) await guessWrong(set, '10.0.3.1', 'dave');
    await set.passwordSucceeded('10.0.3.1', 'dave');
    for (let i = 0; i < THRESHOLD - 1; i++) await guessWrong(set, '10.0.3.1', 'dave');
    assert.deepEqual(await set.passwordAttempt('10.0.3.1', 'dave'), { ok: true });
  });

  test('passwordFailed says when the pair lockout and the account slowdown begin, once each', async () => {
    const set = limiters();
    const seen = [];
    for (let i = 0; i < THRESHOLD + 1; i++) seen.push(await set.passwordFailed('10.0.4.1', 'erin'));
    assert.deepEqual(
      seen.map((counted) => [counted.pairLocked, counted.slowdownBegan]),
      [
        [false, false],
        [false, false],
        [true, true],
        [false, false],
      ],
    );
  });

  test('a failing limiter refuses password attempts (fail closed)', async () => {
    const broken = { consume: () => Promise.reject(new Error('down')), get: () => Promise.reject(new Error('down')), delete: () => Promise.reject(new Error('down')) };
    for (const overrides of [{ passwordPairFailures: broken }, { accountFailures: broken }]) {
      const set = limiters({}, overrides);
      const decision = await set.passwordAttempt('10.0.5.1', 'admin');
      assert.equal(decision.ok, false);
      assert.equal(!decision.ok && decision.failed, true);
    }
    const slots = limiters({}, { accountAttempts: broken });
    for (let i = 0; i < THRESHOLD; i++) await guessWrong(slots, `10.0.5.${10 + i}`, 'admin');
    const decision = await slots.passwordAttempt('10.0.5.99', 'admin');
    assert.equal(!decision.ok && decision.failed, true);
  });
});
