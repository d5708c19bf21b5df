import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { SESSIONS_FILE, SessionStore } from '../../server/auth/SessionStore.js';

const dirs: string[] = [];
async function freshDataDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'parley-sessions-'));
  dirs.push(dir);
  return dir;
}
after(async () => {
  await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

const DAY = 24 * 3600_000;

/** A store whose clock the test moves. */
async function storeAt(dir: string, clock: { now: number }, epochRetentionMs?: number) {
  return SessionStore.load(dir, { now: () => clock.now, ...(epochRetentionMs === undefined ? {} : { epochRetentionMs }) });
}

describe('SessionStore', () => {
  test('rotation accepts only the current jti and hands out a new one each time', async () => {
    const clock = { now: 1_900_000_000_000 };
    const store = await storeAt(await freshDataDir(), clock);
    const { family, jti } = await store.startFamily('u_a', clock.now + DAY, 'invite');
    const first = await store.rotate(family, jti);
    assert.ok(first.ok);
    assert.notEqual(first.jti, jti);
    const second = await store.rotate(family, first.jti);
    assert.ok(second.ok);
    assert.notEqual(second.jti, first.jti);
    assert.equal(second.session.userId, 'u_a');
    assert.equal(second.session.expiresAt, clock.now + DAY, 'rotation does not extend the session');
  });

  test('presenting a rotated jti is reuse: the family is revoked, so even the newest jti fails', async () => {
    const clock = { now: 1_900_000_000_000 };
    const store = await storeAt(await freshDataDir(), clock);
    const { family, jti } = await store.startFamily('u_a', clock.now + DAY, 'invite');
    const rotated = await store.rotate(family, jti);
    assert.ok(rotated.ok);
    assert.deepEqual(await store.rotate(family, jti), { ok: false, reason: 'reused', userId: 'u_a' });
    assert.deepEqual(await store.rotate(family, rotated.jti), { ok: false, reason: 'revoked', userId: 'u_a' });
  });

  test('two concurrent rotations with the same jti: exactly one succeeds', async () => {
    const clock = { now: 1_900_000_000_000 };
    const store = await storeAt(await freshDataDir(), clock);
    const { family, jti } = await store.startFamily('u_a', clock.now + DAY, 'invite');
    const results = await Promise.all([store.rotate(family, jti), store.rotate(family, jti)]);
    assert.equal(results.filter((result) => result.ok).length, 1);
    assert.deepEqual(results.find((result) => !result.ok), { ok: false, reason: 'reused', userId: 'u_a' });
  });

  test('an unknown family and an expired one are refused', async () => {
    const clock = { now: 1_900_000_000_000 };
    const store = await storeAt(await freshDataDir(), clock);
    assert.deepEqual(await store.rotate('f_nope', 'x'), { ok: false, reason: 'unknown' });
    const { family, jti } = await store.startFamily('u_a', clock.now + 1000, 'invite');
    clock.now += 1000;
    assert.deepEqual(await store.rotate(family, jti), { ok: false, reason: 'expired', userId: 'u_a' });
  });

  test('revokeUser revokes every family of that user only, and raises their epoch', async () => {
    const clock = { now: 1_900_000_000_000 };
    const store = await storeAt(await freshDataDir(), clock);
    const a1 = await store.startFamily('u_a', clock.now + DAY, 'account');
    const a2 = await store.startFamily('u_a', clock.now + DAY, 'account');
    const b = await store.startFamily('u_b', clock.now + DAY, 'invite');
    assert.equal(store.epochOf('u_a'), 0);
    const epoch = await store.revokeUser('u_a');
    assert.ok(epoch > 0);
    assert.equal(store.epochOf('u_a'), epoch);
    assert.equal(store.epochOf('u_b'), 0);
    assert.equal((await store.rotate(a1.family, a1.jti)).ok, false);
    assert.equal((await store.rotate(a2.family, a2.jti)).ok, false);
    assert.equal((await store.rotate(b.family, b.jti)).ok, true);
  });

  test('epochs only go up, even when bumped twice in the same second', async () => {
    const clock = { now: 1_900_000_000_000 };
    const store = await storeAt(await freshDataDir(), clock);
    const first = await store.bumpEpoch('u_a');
    const second = await store.bumpEpoch('u_a');
    assert.ok(second > first);
  });

  test('state survives a reload: families, rotation state, revocation and epochs', async () => {
    const dir = await freshDataDir();
    const clock = { now: 1_900_000_000_000 };
    const store = await storeAt(dir, clock);
    const live = await store.startFamily('u_live', clock.now + DAY, 'invite');
    const rotated = await store.rotate(live.family, live.jti);
    assert.ok(rotated.ok);
    const gone = await store.startFamily('u_gone', clock.now + DAY, 'invite');
    const epoch = await store.revokeUser('u_gone');

    const reloaded = await storeAt(dir, clock);
    assert.equal(reloaded.epochOf('u_gone'), epoch);
    assert.equal((await reloaded.rotate(gone.family, gone.jti)).ok, false);
    assert.deepEqual(await reloaded.rotate(live.family, live.jti), { ok: false, reason: 'reused', userId: 'u_live' });

    const again = await storeAt(dir, clock);
    assert.equal(again.get(live.family)?.revoked, true, 'the reuse revocation was persisted too');
  });

  test('the file is mode 0600, valid JSON, holds no refresh JWT, and no temp file is left behind', async () => {
    const dir = await freshDataDir();
    const clock = { now: 1_900_000_000_000 };
    const store = await storeAt(dir, clock);
    await store.startFamily('u_a', clock.now + DAY, 'invite');
    const file = join(dir, SESSIONS_FILE);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const content = JSON.parse(await readFile(file, 'utf8')) as { version: number };
    assert.equal(content.version, 1);
    assert.ok(!(await readFile(file, 'utf8')).includes('eyJ'), 'no JWT in the file');
    assert.deepEqual((await readdir(dir)).filter((name) => name.endsWith('.tmp')), []);
  });

  test('expired families are pruned, on write and on load', async () => {
    const dir = await freshDataDir();
    const clock = { now: 1_900_000_000_000 };
    const store = await storeAt(dir, clock);
    const short = await store.startFamily('u_short', clock.now + 1000, 'invite');
    await store.startFamily('u_long', clock.now + DAY, 'invite');
    assert.equal(store.size, 2);
    clock.now += 2000;
    await store.startFamily('u_new', clock.now + DAY, 'invite');
    assert.equal(store.size, 2, 'the expired family went when the next one was written');
    assert.equal(store.get(short.family), undefined);

    clock.now += 2 * DAY;
    const reloaded = await storeAt(dir, clock);
    assert.equal(reloaded.size, 0);
    const onDisk = JSON.parse(await readFile(join(dir, SESSIONS_FILE), 'utf8')) as { families: object };
    assert.deepEqual(onDisk.families, {}, 'pruning on load is written back');
  });

  test('an epoch is forgotten after the retention time, and a later bump still exceeds every earlier epoch', async () => {
    const dir = await freshDataDir();
    const clock = { now: 1_900_000_000_000 };
    const store = await storeAt(dir, clock, 60_000);
    const first = await store.revokeUser('u_a');
    clock.now += 61_000;
    store.prune();
    assert.equal(store.epochOf('u_a'), 0);
    assert.equal(store.knows('u_a'), false);
    const second = await store.bumpEpoch('u_a');
    assert.ok(second > first, 'a token issued at the old epoch is still refused after the next bump');
  });

  test('knows() is true for users with a session or an epoch', async () => {
    const clock = { now: 1_900_000_000_000 };
    const store = await storeAt(await freshDataDir(), clock);
    await store.startFamily('u_a', clock.now + DAY, 'invite');
    await store.bumpEpoch('u_b');
    assert.equal(store.knows('u_a'), true);
    assert.equal(store.knows('u_b'), true);
    assert.equal(store.knows('u_c'), false);
  });

  test('a corrupt file is refused with a message that names it', async () => {
    const dir = await freshDataDir();
    await writeFile(join(dir, SESSIONS_FILE), '{"version":1,"families":', { mode: 0o600 });
    await assert.rejects(SessionStore.load(dir), /sessions\.json is not a valid Parley sessions file/);
  });
});
