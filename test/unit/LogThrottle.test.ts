import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { LogThrottle } from '../../server/logging/LogThrottle.js';

describe('LogThrottle', () => {
  test('lets `limit` lines of a kind through per window; the first line of a later window says how many were left out', () => {
    let now = 0;
    const throttle = new LogThrottle({ limit: 3, windowMs: 60_000, now: () => now });
    const first = Array.from({ length: 10 }, () => throttle.admit('host'));
    assert.deepEqual(first.map((decision) => decision.ok), [true, true, true, false, false, false, false, false, false, false]);
    assert.deepEqual(first[0], { ok: true, suppressed: 0 });
    // Kinds are counted apart.
    assert.deepEqual(throttle.admit('origin'), { ok: true, suppressed: 0 });
    now = 59_999;
    assert.equal(throttle.admit('host').ok, false);
    now = 60_000;
    assert.deepEqual(throttle.admit('host'), { ok: true, suppressed: 8 });
    assert.deepEqual(throttle.admit('host'), { ok: true, suppressed: 0 });
  });
});
