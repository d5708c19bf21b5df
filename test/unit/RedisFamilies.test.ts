import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { SessionStore } from '../../server/auth/SessionStore.js';
import { RedisFamilies } from '../../server/cluster/RedisFamilies.js';
import { hasRedis, startRedis, type TestRedis } from '../helpers/startRedis.js';

/** Two gateways' SessionStores sharing their refresh sessions through one real Redis. */

function unavailable(): string | undefined {
  if (hasRedis()) return undefined;
  if (process.env.CI) throw new Error('the shared sessions tests need redis-server; .ci/run installs it');
  return 'needs redis-server (apt-get install redis-server)';
}

const DAY = 24 * 3600_000;
const B = 'binding-of-this-page';

describe('SessionStore with RedisFamilies', { skip: unavailable() }, () => {
  let redis: TestRedis;
  const cleanup: (() => Promise<void>)[] = [];
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    for (const step of cleanup) await step();
    await redis?.close();
  });

  /** A gateway's store: its own data dir and Redis connection. */
  async function gateway(maxFamiliesPerUser?: number): Promise<SessionStore> {
    const dir = await mkdtemp(join(tmpdir(), 'parley-shared-sessions-'));
    const connection = new Redis(redis.url);
    cleanup.push(async () => {
      connection.disconnect();
      await rm(dir, { recursive: true, force: true });
    });
    return SessionStore.load(dir, { shared: new RedisFamilies(connection), ...(maxFamiliesPerUser === undefined ? {} : { maxFamiliesPerUser }) });
  }

  test('one jti rotated on two gateways at once rotates once: both get the same successor', async () => {
    const [a, b] = [await gateway(), await gateway()];
    const { family, jti } = await a.startFamily('u_race', Date.now() + DAY, 'invite', B);
    const results = await Promise.all([a.rotate(family, jti, B), b.rotate(family, jti, B), a.rotate(family, jti, B), b.rotate(family, jti, B)]);
    const successors = new Set(results.map((result) => (result.ok ? result.jti : `refused: ${result.reason}`)));
    assert.equal(successors.size, 1, [...successors].join(', '));
    assert.equal(results.filter((result) => result.ok && !result.replayed).length, 1, 'exactly one rotation');
  });

  test('a rotation on one gateway makes the older jti reuse on the other, which revokes the family for both', async () => {
    const [a, b] = [await gateway(), await gateway()];
    const { family, jti } = await a.startFamily('u_reuse', Date.now() + DAY, 'invite', B);
    const first = await b.rotate(family, jti, B);
    assert.ok(first.ok);
    const second = await a.rotate(family, first.jti, B);
    assert.ok(second.ok);
    const reused = await b.rotate(family, jti, B);
    assert.equal(reused.ok ? 'ok' : reused.reason, 'reused');
    const after = await a.rotate(family, second.jti, B);
    assert.equal(after.ok ? 'ok' : after.reason, 'revoked');
  });

  test('revokeUser on one gateway revokes the sessions begun on the other; the per-user bound holds across gateways', async () => {
    const [a, b] = [await gateway(2), await gateway(2)];
    const onB = await b.startFamily('u_gone', Date.now() + DAY, 'account', B);
    assert.equal(await a.isKnown('u_gone'), true, 'known from the shared sessions');
    await a.revokeUser('u_gone');
    await b.sync(onB.family);
    assert.equal(b.isLive(onB.family), false);
    const result = await b.rotate(onB.family, onB.jti, B);
    assert.equal(result.ok ? 'ok' : result.reason, 'revoked');

    const oldest = await a.startFamily('u_many', Date.now() + DAY, 'invite', B);
    await b.startFamily('u_many', Date.now() + 2 * DAY, 'invite', B);
    await a.startFamily('u_many', Date.now() + 3 * DAY, 'invite', B);
    await b.sync(oldest.family);
    assert.equal(b.get(oldest.family), undefined, 'the oldest of three went, with a bound of two');
  });
});
