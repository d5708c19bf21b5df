import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { RedisConnectionCounts } from '../../server/cluster/RedisConnectionCounts.js';
import { openRedis, type OpenedRedis } from '../../server/cluster/openRedis.js';
import { createLogger } from '../../server/logging/createLogger.js';
import { eventually } from '../helpers/eventually.js';
import { LogSink } from '../helpers/LogSink.js';
import { redisUnavailable } from '../helpers/redisUnavailable.js';
import { startRedis, type TestRedis } from '../helpers/startRedis.js';

async function redisNowMs(connection: OpenedRedis): Promise<number> {
  const [seconds, micros] = await connection.client.time();
  return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
}

describe('RedisConnectionCounts', { skip: redisUnavailable('RedisConnectionCounts.test.ts') }, () => {
  let redis: TestRedis;
  const logs = new LogSink();
  const logger = createLogger({ level: 'debug', destination: logs });
  const opened: OpenedRedis[] = [];
  const counts: RedisConnectionCounts[] = [];
  const gateway = async (gatewayId: string, timing: { ttlMs: number; heartbeatMs: number }) => {
    const connection = await openRedis(redis.url, { logger });
    opened.push(connection);
    const made = new RedisConnectionCounts(connection.client, { gatewayId, logger, ...timing });
    counts.push(made);
    return { connection, counts: made };
  };
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await Promise.allSettled(counts.map((made) => made.close()));
    await Promise.allSettled(opened.map((connection) => connection.close()));
    await redis.close();
  });

  test('sockets on two gateways add up per address and per user; a closed socket stops counting', async () => {
    const slow = { ttlMs: 30_000, heartbeatMs: 10_000 };
    const a = await gateway('gw-a', slow);
    const b = await gateway('gw-b', slow);
    a.counts.opened('w1', '10.0.0.1', 'u_one');
    a.counts.opened('w2', '10.0.0.2', 'u_one');
    b.counts.opened('w1', '10.0.0.1', 'u_two');
    // The same connection id on another gateway is another socket.
    const seen = await eventually(() => b.counts.count('10.0.0.1', 'u_one'), (value) => value.byIp === 2 && value.byUser === 2, 'both gateways counted');
    assert.deepEqual(seen, { byIp: 2, byUser: 2 });
    assert.deepEqual(await a.counts.count('10.0.0.2', 'u_two'), { byIp: 1, byUser: 1 });
    a.counts.closed('w1', '10.0.0.1', 'u_one');
    await eventually(() => b.counts.count('10.0.0.1', 'u_one'), (value) => value.byIp === 1 && value.byUser === 1, 'the closed socket uncounted');
    await a.counts.close();
    await b.counts.close();
    assert.deepEqual(await b.counts.count('10.0.0.1', 'u_one'), { byIp: 0, byUser: 0 }, 'a gateway that closes takes its sockets with it');
  });

  test("a crashed gateway's sockets stop counting after the TTL; a live gateway's are renewed past it", async () => {
    const timing = { ttlMs: 1500, heartbeatMs: 100 };
    const crashing = await gateway('gw-crash', timing);
    const live = await gateway('gw-live', timing);
    crashing.counts.opened('w1', '10.0.1.1', 'u_crash');
    crashing.counts.opened('w2', '10.0.1.1', 'u_crash');
    live.counts.opened('w1', '10.0.1.1', 'u_live');
    await eventually(() => live.counts.count('10.0.1.1', 'u_crash'), (value) => value.byIp === 3 && value.byUser === 2, 'all three counted');
    const firstScore = Number(await live.connection.client.zscore('parley:conns:user:u_live', 'gw-live:w1'));
    // The crash: its connection to Redis is gone, nothing says goodbye.
    crashing.connection.client.disconnect();
    await eventually(() => live.counts.count('10.0.1.1', 'u_crash'), (value) => value.byIp === 1 && value.byUser === 0, "the crashed gateway's sockets expired");
    // The live gateway's socket outlives the expiry it had at first (by Redis's clock), because its heartbeat renews it.
    await eventually(() => redisNowMs(live.connection), (now) => now > firstScore, 'the first expiry passed');
    assert.deepEqual(await live.counts.count('10.0.1.1', 'u_live'), { byIp: 1, byUser: 1 });
  });

  test('counting fails while Redis is down (the caller refuses); after Redis restarts empty, the heartbeat counts live sockets again', async () => {
    const timing = { ttlMs: 2000, heartbeatMs: 100 };
    const a = await gateway('gw-restart', timing);
    a.counts.opened('w1', '10.0.2.1', 'u_restart');
    await eventually(() => a.counts.count('10.0.2.1', 'u_restart'), (value) => value.byUser === 1, 'counted');
    await redis.stop();
    await assert.rejects(a.counts.count('10.0.2.1', 'u_restart'), 'no count without Redis: never a zero that lets everyone in');
    // Neither opening nor closing throws while Redis is down.
    a.counts.opened('w2', '10.0.2.1', 'u_restart');
    a.counts.closed('w1', '10.0.2.1', 'u_restart');
    await redis.start();
    // Redis came back empty: only the heartbeat can bring the still-open w2 back, and w1 stays closed.
    const back = await eventually(() => a.counts.count('10.0.2.1', 'u_restart'), (value) => value.byUser === 1, 'the live socket counted again');
    assert.deepEqual(back, { byIp: 1, byUser: 1 });
    assert.equal(await a.connection.client.zscore('parley:conns:user:u_restart', 'gw-restart:w1'), null, 'the socket closed during the outage is not counted');
    const lines = logs.records.filter((record) => record.gateway === 'gw-restart').map((record) => String(record.msg));
    assert.equal(lines.filter((line) => line.startsWith('connection counts in redis failed')).length, 1, 'the outage is logged once, however many writes failed');
    assert.ok(lines.includes('connection counts in redis work again'));
  });
});
