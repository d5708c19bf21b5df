import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createLogger } from '../../server/logging/createLogger.js';
import { LogSink } from '../helpers/LogSink.js';

test('tokens, cookies, passwords, invites, Sec-WebSocket-Protocol and message text are redacted if ever attached to a record', () => {
  const sink = new LogSink();
  const logger = createLogger({ level: 'info', destination: sink });
  logger.info(
    {
      token: 'SECRET-TOKEN',
      invite: 'SECRET-INVITE',
      password: 'SECRET-PASSWORD',
      text: 'SECRET-TEXT',
      headers: { authorization: 'Bearer SECRET-BEARER', cookie: 'parley_refresh=SECRET-COOKIE', 'sec-websocket-protocol': 'parley.v1, bearer.SECRET-JWT' },
      req: { headers: { cookie: 'SECRET-COOKIE-2' }, token: 'SECRET-TOKEN-2' },
    },
    'hello',
  );
  const line = sink.lines.join('\n');
  assert.ok(!line.includes('SECRET'), line);
  assert.ok(line.includes('[redacted]'));
  assert.ok(line.includes('hello'));
});

test('a child logger per connection carries its connection and user ids', () => {
  const sink = new LogSink();
  const child = createLogger({ level: 'info', destination: sink }).child({ conn: 'u1', user: 'u_abc' });
  child.info('opened');
  const [record] = sink.records;
  assert.equal(record?.conn, 'u1');
  assert.equal(record?.user, 'u_abc');
});
