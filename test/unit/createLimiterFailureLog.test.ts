import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createLimiterFailureLog } from '../../server/limits/createLimiterFailureLog.js';
import { LogThrottle } from '../../server/logging/LogThrottle.js';
import { createLogger } from '../../server/logging/createLogger.js';
import { LogSink } from '../helpers/LogSink.js';

test('limiter failures are logged at most 10 per limiter and minute; the next line counts the ones left out', () => {
  const logs = new LogSink();
  let now = 0;
  const log = createLimiterFailureLog(createLogger({ level: 'info', destination: logs }), new LogThrottle({ limit: 10, windowMs: 60_000, now: () => now }));
  for (let i = 0; i < 30; i++) log(new Error('Connection is closed.'), 'generations');
  log(new Error('Connection is closed.'), 'tokens');
  const lines = () => logs.records.filter((record) => record.msg === 'rate limiter failed; refusing');
  assert.equal(lines().filter((record) => record.limiter === 'generations').length, 10);
  assert.equal(lines().filter((record) => record.limiter === 'tokens').length, 1, 'each limiter has its own allowance');
  now = 60_000;
  log(new Error('Connection is closed.'), 'generations');
  assert.equal(lines().at(-1)?.suppressed, 20);
});
