import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { FileDocument } from '../../server/auth/FileDocument.js';
import type { StateDocument } from '../../server/auth/StateDocument.js';
import { RedisDocument } from '../../server/cluster/RedisDocument.js';
import { hasRedis, startRedis, type TestRedis } from '../helpers/startRedis.js';

/** The documents' contract, for the file (the default) and for Redis (gateways sharing state). */

const dirs: string[] = [];
after(async () => {
  await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

/** Adds one to a counter document: a read-modify-write that loses counts if two writers overlap. */
function increment(document: StateDocument): Promise<number> {
  return document.update((text) => {
    const next = Number(text ?? '0') + 1;
    return { text: String(next), result: next };
  });
}

/** Two writers on one document, each adding `each` at once, interleaved. */
async function race(first: StateDocument, second: StateDocument, each: number): Promise<void> {
  await Promise.all(Array.from({ length: each }, () => [increment(first), increment(second)]).flat());
}

function redisUnavailable(): string | undefined {
  if (hasRedis()) return undefined;
  if (process.env.CI) throw new Error('the Redis document tests need redis-server; .ci/run installs it');
  return 'needs redis-server (apt-get install redis-server)';
}

describe('FileDocument', () => {
  test('absent reads as undefined; an update writes mode 0600; a change without text writes nothing', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'parley-document-'));
    dirs.push(dir);
    const file = join(dir, 'state.json');
    const document = new FileDocument(file, { lock: true });
    assert.equal(await document.read(), undefined);
    assert.equal(await document.update(() => ({ result: 'nothing' })), 'nothing');
    assert.deepEqual(await readdir(dir), []);
    await document.update(() => ({ text: 'one', result: undefined }));
    assert.equal(await document.read(), 'one');
    assert.equal((await stat(file)).mode & 0o777, 0o600);
  });

  test('two processes\' worth of writers on one file (the lock) lose no update; a change that throws writes nothing and frees the lock', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'parley-document-'));
    dirs.push(dir);
    const file = join(dir, 'counter');
    const first = new FileDocument(file, { lock: true });
    const second = new FileDocument(file, { lock: true });
    await race(first, second, 25);
    assert.equal(await first.read(), '50');
    await assert.rejects(
      second.update(() => {
        throw new Error('refused');
      }),
      /refused/,
    );
    assert.equal(await increment(first), 51);
    assert.deepEqual((await readdir(dir)).sort(), ['counter'], 'no lock or temp file left');
  });
});

describe('RedisDocument', { skip: redisUnavailable() }, () => {
  let redis: TestRedis;
  const connections: Redis[] = [];
  const connect = () => {
    const connection = new Redis(redis.url);
    connections.push(connection);
    return connection;
  };
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    for (const connection of connections) connection.disconnect();
    await redis?.close();
  });

  test('two gateways updating one key at once lose no update (compare-and-set on the version)', async () => {
    const first = new RedisDocument(connect(), 'test:counter');
    const second = new RedisDocument(connect(), 'test:counter');
    assert.equal(await first.read(), undefined);
    await race(first, second, 25);
    assert.equal(await first.read(), '50');
    assert.equal(await second.read(), '50');
  });

  test('a change computed from a version another writer replaced is not written: it runs again on the newer text', async () => {
    const connection = connect();
    const document = new RedisDocument(connection, 'test:cas');
    await document.update(() => ({ text: 'first', result: undefined }));
    const seen: (string | undefined)[] = [];
    const result = await document.update((text) => {
      seen.push(text);
      // Another writer gets in between this read and this write (sent before the write, on the same connection).
      if (seen.length === 1) void connection.hset('test:cas', 'version', '7', 'text', 'theirs');
      return { text: `${text ?? ''}+mine`, result: seen.length };
    });
    assert.deepEqual(seen, ['first', 'theirs']);
    assert.equal(result, 2);
    assert.equal(await document.read(), 'theirs+mine', 'built on the other writer\'s text, not over it');
  });

  test('seedFrom copies a local document in only while the key was never written', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'parley-document-'));
    dirs.push(dir);
    const local = new FileDocument(join(dir, 'users.json'));
    const shared = new RedisDocument(connect(), 'test:seed');
    assert.equal(await shared.seedFrom(local), false, 'nothing to copy');
    await local.update(() => ({ text: 'from the data dir', result: undefined }));
    assert.equal(await shared.seedFrom(local), true);
    await local.update(() => ({ text: 'changed later', result: undefined }));
    assert.equal(await shared.seedFrom(local), false);
    assert.equal(await shared.read(), 'from the data dir');
  });
});
