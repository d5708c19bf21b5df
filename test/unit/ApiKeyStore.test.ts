import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import {
  API_KEYS_FILE,
  ApiKeyStore,
  ApiKeyStoreError,
  ApiKeyStoreFailure,
  hashApiKey,
  isApiKeyFormat,
  KeyOwnerKind,
  LAST_USED_RESOLUTION_MS,
  MAX_KEYS_PER_USER,
  prefixOf,
  type KeyOwner,
} from '../../server/auth/ApiKeyStore.js';

const dirs: string[] = [];
async function freshDataDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'parley-keys-'));
  dirs.push(dir);
  return dir;
}
after(async () => {
  await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

const alice: KeyOwner = { userId: 'a_alice', kind: KeyOwnerKind.account, userName: 'alice', epoch: 0 };
const bob: KeyOwner = { userId: 'u_bob', kind: KeyOwnerKind.invite, userName: 'bob', epoch: 7 };

/** A key that differs from `key` in one character of its random part. */
function flipped(key: string, at = key.length - 5): string {
  return `${key.slice(0, at)}${key[at] === 'A' ? 'B' : 'A'}${key.slice(at + 1)}`;
}

describe('ApiKeyStore', () => {
  test('a key is pk-parley- and 43 base64url characters of 32 random bytes, and every key differs', async () => {
    const store = new ApiKeyStore(await freshDataDir());
    const seen = new Set<string>();
    const prefixes = new Set<string>();
    for (let i = 0; i < MAX_KEYS_PER_USER; i++) {
      const { key, apiKey } = await store.create({ ...alice, userId: `a_${i % 2}` }, `key ${i}`);
      assert.match(key, /^pk-parley-[A-Za-z0-9_-]{43}$/);
      assert.ok(isApiKeyFormat(key));
      const random = Buffer.from(key.slice('pk-parley-'.length), 'base64url');
      assert.equal(random.length, 32, '256 bits');
      assert.equal(random.toString('base64url'), key.slice('pk-parley-'.length), 'canonical base64url');
      assert.equal(apiKey.prefix, key.slice(10, 18), 'the prefix is the 8 characters after pk-parley-');
      assert.equal(prefixOf(key), apiKey.prefix);
      seen.add(key);
      prefixes.add(apiKey.prefix);
    }
    assert.equal(seen.size, MAX_KEYS_PER_USER);
    assert.equal(prefixes.size, MAX_KEYS_PER_USER, 'prefixes are unique');
  });

  test('the file holds the SHA-256 of each key and never the key, and is mode 0600', async () => {
    const dir = await freshDataDir();
    const store = new ApiKeyStore(dir);
    const { key, apiKey } = await store.create(alice, 'editor');
    const { key: other } = await store.create(bob, 'agent');
    const text = await readFile(join(dir, API_KEYS_FILE), 'utf8');
    for (const secret of [key, other]) {
      assert.ok(!text.includes(secret.slice('pk-parley-'.length)), 'no key in the file');
      assert.ok(!text.includes(secret.slice(18)), 'not even the part after the prefix');
      assert.ok(text.includes(hashApiKey(secret)), 'its SHA-256 is');
    }
    assert.equal(hashApiKey(key), Buffer.from(await crypto.subtle.digest('SHA-256', Buffer.from(key))).toString('base64url'));
    assert.ok(text.includes(apiKey.prefix));
    assert.equal((await stat(join(dir, API_KEYS_FILE))).mode & 0o777, 0o600);
    const left = (await readdir(dir)).filter((name) => name !== API_KEYS_FILE);
    assert.deepEqual(left, [], 'no temp or lock file is left behind');
  });

  test('find returns the key that was made, and nothing for a near miss, a malformed key or the prefix alone', async () => {
    const store = new ApiKeyStore(await freshDataDir());
    const { key, apiKey } = await store.create(bob, 'agent');
    const found = await store.find(key);
    assert.deepEqual(found, { ...apiKey, lastUsedAt: undefined, revokedAt: undefined });
    assert.equal(found?.userId, 'u_bob');
    assert.equal(found?.kind, KeyOwnerKind.invite);
    assert.equal(found?.epoch, 7);
    for (const wrong of [flipped(key), flipped(key, 12), `${key}A`, key.slice(0, -1), key.toUpperCase(), ` ${key}`, `pk-parley-${apiKey.prefix}`, apiKey.prefix, hashApiKey(key), '', '__proto__']) {
      assert.equal(await store.find(wrong), undefined, JSON.stringify(wrong));
    }
  });

  test("list gives one user's keys by prefix, newest first, never another user's", async () => {
    let now = 1_000_000;
    const store = new ApiKeyStore(await freshDataDir(), { now: () => now });
    const first = await store.create(alice, 'laptop');
    now += 1000;
    const second = await store.create(alice, 'desktop');
    await store.create(bob, 'agent');
    const listed = await store.list(alice.userId);
    assert.deepEqual(
      listed.map((key) => [key.prefix, key.name, key.createdAt]),
      [
        [second.apiKey.prefix, 'desktop', 1_001_000],
        [first.apiKey.prefix, 'laptop', 1_000_000],
      ],
    );
    assert.deepEqual((await store.list(bob.userId)).map((key) => key.name), ['agent']);
    assert.deepEqual(await store.list('a_nobody'), []);
  });

  test("revoke ends a key for good; a revoke scoped to another user finds nothing and changes nothing", async () => {
    let now = 5_000;
    const dir = await freshDataDir();
    const store = new ApiKeyStore(dir, { now: () => now });
    const { key, apiKey } = await store.create(alice, 'editor');
    assert.equal(await store.revoke(apiKey.prefix, bob.userId), undefined, "not bob's");
    assert.equal((await store.find(key))?.revokedAt, undefined);
    now = 9_000;
    const revoked = await store.revoke(apiKey.prefix, alice.userId);
    assert.equal(revoked?.revokedAt, 9_000);
    assert.equal((await store.find(key))?.revokedAt, 9_000, 'find still knows it, as revoked');
    now = 12_000;
    assert.equal((await store.revoke(apiKey.prefix))?.revokedAt, 9_000, 'revoking again keeps the first time');
    assert.equal(await store.revoke('ZZZZZZZZ'), undefined);
    // A fresh store (a restart, or the CLI) reads the same.
    assert.equal((await new ApiKeyStore(dir).find(key))?.revokedAt, 9_000);
  });

  test('revokeUser (an account removed, a user signed out) revokes every live key of that user only; belowEpoch spares later keys', async () => {
    const store = new ApiKeyStore(await freshDataDir());
    const old1 = await store.create({ ...alice, epoch: 3 }, 'one');
    const old2 = await store.create({ ...alice, epoch: 3 }, 'two');
    const newer = await store.create({ ...alice, epoch: 10 }, 'after the logout');
    const bobs = await store.create(bob, 'agent');
    assert.equal(await store.revokeUser(alice.userId, { belowEpoch: 10 }), 2);
    assert.notEqual((await store.find(old1.key))?.revokedAt, undefined);
    assert.notEqual((await store.find(old2.key))?.revokedAt, undefined);
    assert.equal((await store.find(newer.key))?.revokedAt, undefined, 'a key made at the new epoch stays');
    assert.equal((await store.find(bobs.key))?.revokedAt, undefined, "bob's key stays");
    assert.equal(await store.revokeUser(alice.userId), 1, 'without belowEpoch: all that are left');
    assert.equal(await store.revokeUser(alice.userId), 0);
    assert.notEqual((await store.find(newer.key))?.revokedAt, undefined);
  });

  test(`a user holds at most ${MAX_KEYS_PER_USER} live keys; revoking one makes room; revoked keys kept are bounded`, async () => {
    const dir = await freshDataDir();
    const store = new ApiKeyStore(dir);
    const made = [];
    for (let i = 0; i < MAX_KEYS_PER_USER; i++) made.push(await store.create(alice, `k${i}`));
    await assert.rejects(store.create(alice, 'one too many'), (error: unknown) => error instanceof ApiKeyStoreError && error.reason === ApiKeyStoreFailure.tooManyKeys);
    await store.create(bob, 'another user is not affected');
    await store.revoke(made[0]?.apiKey.prefix ?? '');
    await store.create(alice, 'fits again');
    // Churn: make and revoke many; the file keeps at most 20 revoked keys of the user.
    for (let i = 0; i < 30; i++) {
      const { apiKey } = await store.create(bob, `churn ${i}`);
      await store.revoke(apiKey.prefix);
    }
    const bobs = await store.list(bob.userId);
    assert.equal(bobs.filter((key) => key.revokedAt === undefined).length, 1);
    assert.equal(bobs.filter((key) => key.revokedAt !== undefined).length, 20);
  });

  test('names are trimmed, 1-64 characters, without control characters', async () => {
    const store = new ApiKeyStore(await freshDataDir());
    assert.equal((await store.create(alice, '  my editor  ')).apiKey.name, 'my editor');
    assert.equal((await store.create(alice, 'é'.repeat(64))).apiKey.name.length, 64);
    for (const bad of ['', '   ', 'x'.repeat(65), 'tab\there', 'line\nbreak', 'nul\u0000', 'del\u007f']) {
      await assert.rejects(store.create(alice, bad), (error: unknown) => error instanceof ApiKeyStoreError && error.reason === ApiKeyStoreFailure.badName, JSON.stringify(bad));
    }
  });

  test('markUsed records the time at most once a minute per key', async () => {
    let now = 1_000_000;
    const dir = await freshDataDir();
    const store = new ApiKeyStore(dir, { now: () => now });
    const { key, apiKey } = await store.create(alice, 'editor');
    assert.equal((await store.find(key))?.lastUsedAt, undefined);
    await store.markUsed(apiKey.prefix);
    assert.equal((await store.find(key))?.lastUsedAt, 1_000_000);
    const written = (await stat(join(dir, API_KEYS_FILE), { bigint: true })).ino;
    now += LAST_USED_RESOLUTION_MS - 1;
    await Promise.all([store.markUsed(apiKey.prefix), store.markUsed(apiKey.prefix)]);
    assert.equal((await store.find(key))?.lastUsedAt, 1_000_000, 'within the minute: unchanged');
    assert.equal((await stat(join(dir, API_KEYS_FILE), { bigint: true })).ino, written, 'and the file was not rewritten');
    now += 1;
    await store.markUsed(apiKey.prefix);
    assert.equal((await store.find(key))?.lastUsedAt, 1_000_000 + LAST_USED_RESOLUTION_MS);
    // Another process (a restarted server) also respects the stored time.
    const restarted = new ApiKeyStore(dir, { now: () => now + 10 });
    await restarted.markUsed(apiKey.prefix);
    assert.equal((await store.find(key))?.lastUsedAt, 1_000_000 + LAST_USED_RESOLUTION_MS);
  });

  test('a change made by another process (the CLI) is seen by the next lookup', async () => {
    const dir = await freshDataDir();
    const server = new ApiKeyStore(dir);
    const cli = new ApiKeyStore(dir);
    const { key, apiKey } = await server.create(alice, 'editor');
    assert.equal((await server.find(key))?.revokedAt, undefined, 'cached now');
    await cli.revoke(apiKey.prefix);
    assert.notEqual((await server.find(key))?.revokedAt, undefined, 'the revocation from elsewhere holds at once');
    const made = await cli.create(bob, 'from the cli');
    assert.equal((await server.find(made.key))?.name, 'from the cli');
  });

  test('concurrent changes from two processes lose nothing: last-used updates never bring back a revoked key', async () => {
    let now = 0;
    const dir = await freshDataDir();
    const server = new ApiKeyStore(dir, { now: () => now });
    const cli = new ApiKeyStore(dir, { now: () => now });
    const made = [];
    for (let i = 0; i < 10; i++) made.push(await server.create(alice, `k${i}`));
    now = LAST_USED_RESOLUTION_MS;
    await Promise.all([...made.map(({ apiKey }) => server.markUsed(apiKey.prefix)), ...made.map(({ apiKey }) => cli.revoke(apiKey.prefix)), cli.create(bob, 'new')]);
    for (const { key } of made) {
      const stored = await server.find(key);
      assert.notEqual(stored?.revokedAt, undefined, 'revoked');
    }
    assert.equal((await server.list(bob.userId)).length, 1);
  });

  test('a lock left by a process that died is broken once stale; a bad file is refused with its name', async () => {
    const dir = await freshDataDir();
    const store = new ApiKeyStore(dir);
    const lock = join(dir, `${API_KEYS_FILE}.lock`);
    await writeFile(lock, '');
    const old = new Date(Date.now() - 60_000);
    await utimes(lock, old, old);
    await store.create(alice, 'after a crash');
    assert.deepEqual((await readdir(dir)).sort(), [API_KEYS_FILE]);

    await writeFile(join(dir, API_KEYS_FILE), '{"version":1,"keys":[{"prefix":"x"}]}');
    await assert.rejects(new ApiKeyStore(dir).list(alice.userId), (error: unknown) => error instanceof ApiKeyStoreError && error.message.includes(API_KEYS_FILE));
  });
});
