import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { DEFAULT_REUSE_GRACE_MS, SESSIONS_FILE, SessionStore } from '../../server/auth/SessionStore.js';

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
/** The binding value of every session in these tests, unless a test says otherwise. */
const B = 'binding-of-this-page';

/** A store whose clock the test moves. */
async function storeAt(dir: string, clock: { now: number }, epochRetentionMs?: number, maxFamiliesPerUser?: number) {
  return SessionStore.load(dir, {
    now: () => clock.now,
    ...(epochRetentionMs === undefined ? {} : { epochRetentionMs }),
    ...(maxFamiliesPerUser === undefined ? {} : { maxFamiliesPerUser }),
  });
}

describe('SessionStore', () => {
  test('rotation accepts only the current jti and hands out a new one each time', async () => {
    const clock = { now: 1_900_000_000_000 };
    const store = await storeAt(await freshDataDir(), clock);
    const { family, jti } = await store.startFamily('u_a', clock.now + DAY, 'invite', B);
    const first = await store.rotate(family, jti, B);
    assert.ok(first.ok);
    assert.notEqual(first.jti, jti);
    const second = await store.rotate(family, first.jti, B);
    assert.ok(second.ok);
    assert.notEqual(second.jti, first.jti);
    assert.equal(second.session.userId, 'u_a');
    assert.equal(second.session.expiresAt, clock.now + DAY, 'rotation does not extend the session');
  });

  test('presenting a jti two rotations old is reuse: the family is revoked, so even the newest jti fails', async () => {
    const clock = { now: 1_900_000_000_000 };
    const store = await storeAt(await freshDataDir(), clock);
    const { family, jti } = await store.startFamily('u_a', clock.now + DAY, 'invite', B);
    const rotated = await store.rotate(family, jti, B);
    assert.ok(rotated.ok);
    const newest = await store.rotate(family, rotated.jti, B);
    assert.ok(newest.ok);
    assert.deepEqual(await store.rotate(family, jti, B), { ok: false, reason: 'reused', userId: 'u_a' });
    assert.deepEqual(await store.rotate(family, newest.jti, B), { ok: false, reason: 'revoked', userId: 'u_a' });
  });

  test('two concurrent rotations with the same jti: one rotates, the other gets the same successor', async () => {
    const clock = { now: 1_900_000_000_000 };
    const store = await storeAt(await freshDataDir(), clock);
    const { family, jti } = await store.startFamily('u_a', clock.now + DAY, 'invite', B);
    const results = await Promise.all([store.rotate(family, jti, B), store.rotate(family, jti, B)]);
    assert.ok(results[0].ok && results[1].ok);
    assert.deepEqual(results.map((result) => result.ok && result.replayed), [false, true]);
    assert.equal(results[0].jti, results[1].jti);
    assert.ok(store.isLive(family));
  });

  test('grace window: the jti just rotated away, with the binding, gets the same successor until the window ends; then it is reuse', async () => {
    const clock = { now: 1_900_000_000_000 };
    const store = await storeAt(await freshDataDir(), clock);
    const { family, jti } = await store.startFamily('u_a', clock.now + DAY, 'invite', B);
    const rotated = await store.rotate(family, jti, B);
    assert.ok(rotated.ok);
    clock.now += DEFAULT_REUSE_GRACE_MS;
    const lost = await store.rotate(family, jti, B);
    assert.ok(lost.ok, 'a lost response: the old jti is retried within the window');
    assert.equal(lost.jti, rotated.jti, 'the same successor, not a new one');
    assert.equal(lost.replayed, true);
    assert.ok(store.isCurrent(family, rotated.jti, B), 'the successor still refreshes');
    clock.now += 1;
    assert.deepEqual(await store.rotate(family, jti, B), { ok: false, reason: 'reused', userId: 'u_a' }, 'after the window it is reuse');
    assert.equal(store.isLive(family), false, 'reuse revokes the family');
    assert.deepEqual(await store.rotate(family, rotated.jti, B), { ok: false, reason: 'revoked', userId: 'u_a' });
  });

  test('grace window: the jti just rotated away from a client without the binding (or with another) is reuse at once', async () => {
    for (const other of [undefined, 'another-binding']) {
      const clock = { now: 1_900_000_000_000 };
      const store = await storeAt(await freshDataDir(), clock);
      const { family, jti } = await store.startFamily('u_a', clock.now + DAY, 'invite', B);
      const rotated = await store.rotate(family, jti, B);
      assert.ok(rotated.ok);
      assert.deepEqual(await store.rotate(family, jti, other), { ok: false, reason: 'reused', userId: 'u_a' }, String(other));
      assert.deepEqual(await store.rotate(family, rotated.jti, B), { ok: false, reason: 'revoked', userId: 'u_a' });
    }
  });

  test('binding: the current jti without the binding, or with another, refreshes nothing and leaves the session as it was', async () => {
    const clock = { now: 1_900_000_000_000 };
    const store = await storeAt(await freshDataDir(), clock);
    const { family, jti } = await store.startFamily('u_a', clock.now + DAY, 'invite', B);
    for (const other of [undefined, '', 'another-binding', `${B}x`]) {
      assert.deepEqual(await store.rotate(family, jti, other), { ok: false, reason: 'unbound', userId: 'u_a' }, String(other));
      assert.equal(store.isCurrent(family, jti, other), false);
    }
    assert.ok(store.isCurrent(family, jti, B));
    assert.ok((await store.rotate(family, jti, B)).ok, 'with the binding it still refreshes');
  });

  test('the file keeps a hash of the binding, never the value', async () => {
    const dir = await freshDataDir();
    const clock = { now: 1_900_000_000_000 };
    const store = await storeAt(dir, clock);
    const { family } = await store.startFamily('u_a', clock.now + DAY, 'invite', B);
    const text = await readFile(join(dir, SESSIONS_FILE), 'utf8');
    assert.ok(!text.includes(B));
    assert.match((JSON.parse(text) as { families: Record<string, { binding: string }> }).families[family]?.binding ?? '', /^[A-Za-z0-9_-]{43}$/);
  });

  test('isCurrent: only a live family’s current jti (or the one just replaced, in the window) with its binding', async () => {
    const clock = { now: 1_900_000_000_000 };
    const store = await storeAt(await freshDataDir(), clock);
    const { family, jti } = await store.startFamily('u_a', clock.now + DAY, 'invite', B);
    const first = await store.rotate(family, jti, B);
    assert.ok(first.ok);
    const second = await store.rotate(family, first.jti, B);
    assert.ok(second.ok);
    assert.equal(store.isCurrent(family, jti, B), false, 'two rotations old');
    assert.equal(store.isCurrent(family, first.jti, B), true, 'just replaced, within the window');
    assert.equal(store.isCurrent(family, second.jti, B), true);
    assert.equal(store.isCurrent('f_nope', second.jti, B), false);
    await store.revokeFamily(family);
    assert.equal(store.isCurrent(family, second.jti, B), false, 'revoked');
  });

  test('an unknown family and an expired one are refused', async () => {
    const clock = { now: 1_900_000_000_000 };
    const store = await storeAt(await freshDataDir(), clock);
    assert.deepEqual(await store.rotate('f_nope', 'x', B), { ok: false, reason: 'unknown' });
    const { family, jti } = await store.startFamily('u_a', clock.now + 1000, 'invite', B);
    clock.now += 1000;
    assert.deepEqual(await store.rotate(family, jti, B), { ok: false, reason: 'expired', userId: 'u_a' });
  });

  test('revokeUser revokes every family of that user only, and raises their epoch', async () => {
    const clock = { now: 1_900_000_000_000 };
    const store = await storeAt(await freshDataDir(), clock);
    const a1 = await store.startFamily('u_a', clock.now + DAY, 'account', B);
    const a2 = await store.startFamily('u_a', clock.now + DAY, 'account', B);
    const b = await store.startFamily('u_b', clock.now + DAY, 'invite', B);
    assert.equal(store.epochOf('u_a'), 0);
    const epoch = await store.revokeUser('u_a');
    assert.ok(epoch > 0);
    assert.equal(store.epochOf('u_a'), epoch);
    assert.equal(store.epochOf('u_b'), 0);
    assert.equal((await store.rotate(a1.family, a1.jti, B)).ok, false);
    assert.equal((await store.rotate(a2.family, a2.jti, B)).ok, false);
    assert.equal((await store.rotate(b.family, b.jti, B)).ok, true);
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
    const live = await store.startFamily('u_live', clock.now + DAY, 'invite', B);
    const rotated = await store.rotate(live.family, live.jti, B);
    assert.ok(rotated.ok);
    const gone = await store.startFamily('u_gone', clock.now + DAY, 'invite', B);
    const epoch = await store.revokeUser('u_gone');

    clock.now += DEFAULT_REUSE_GRACE_MS + 1;
    const reloaded = await storeAt(dir, clock);
    assert.equal(reloaded.epochOf('u_gone'), epoch);
    assert.equal((await reloaded.rotate(gone.family, gone.jti, B)).ok, false);
    assert.deepEqual(await reloaded.rotate(live.family, live.jti, B), { ok: false, reason: 'reused', userId: 'u_live' });

    const again = await storeAt(dir, clock);
    assert.equal(again.get(live.family)?.revoked, true, 'the reuse revocation was persisted too');
  });

  test('the file is mode 0600, valid JSON, holds no refresh JWT, and no temp file is left behind', async () => {
    const dir = await freshDataDir();
    const clock = { now: 1_900_000_000_000 };
    const store = await storeAt(dir, clock);
    await store.startFamily('u_a', clock.now + DAY, 'invite', B);
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
    const short = await store.startFamily('u_short', clock.now + 1000, 'invite', B);
    await store.startFamily('u_long', clock.now + DAY, 'invite', B);
    assert.equal(store.size, 2);
    clock.now += 2000;
    await store.startFamily('u_new', clock.now + DAY, 'invite', B);
    assert.equal(store.size, 2, 'the expired family went when the next one was written');
    assert.equal(store.get(short.family), undefined);

    clock.now += 2 * DAY;
    const reloaded = await storeAt(dir, clock);
    assert.equal(reloaded.size, 0);
    const onDisk = JSON.parse(await readFile(join(dir, SESSIONS_FILE), 'utf8')) as { families: object };
    assert.deepEqual(onDisk.families, {}, 'pruning on load is written back');
  });

  test('revoked families are forgotten after the retention time, so logouts and revocations do not grow the file', async () => {
    const dir = await freshDataDir();
    const clock = { now: 1_900_000_000_000 };
    const store = await storeAt(dir, clock, 60_000);
    const gone = await store.startFamily('u_gone', clock.now + DAY, 'invite', B);
    const live = await store.startFamily('u_live', clock.now + DAY, 'invite', B);
    await store.revokeUser('u_gone');
    clock.now += 59_000;
    assert.equal(store.prune(), false);
    assert.equal(store.get(gone.family)?.revoked, true, 'kept while its epoch is');
    clock.now += 1_000;
    assert.equal(store.prune(), true);
    assert.equal(store.get(gone.family), undefined);
    assert.ok(store.get(live.family));
    await store.bumpEpoch('u_other');
    const onDisk = JSON.parse(await readFile(join(dir, SESSIONS_FILE), 'utf8')) as { families: object };
    assert.deepEqual(Object.keys(onDisk.families), [live.family]);
  });

  test('a user holds at most maxFamiliesPerUser sessions: a new sign-in drops the revoked ones first, then the oldest', async () => {
    const clock = { now: 1_900_000_000_000 };
    const store = await storeAt(await freshDataDir(), clock, undefined, 3);
    const first = await store.startFamily('a_bob', clock.now + DAY, 'account', B);
    clock.now += 1000;
    const second = await store.startFamily('a_bob', clock.now + DAY, 'account', B);
    clock.now += 1000;
    const third = await store.startFamily('a_bob', clock.now + DAY, 'account', B);
    const other = await store.startFamily('u_other', clock.now + DAY, 'invite', B);
    await store.revokeFamily(second.family);
    clock.now += 1000;
    const fourth = await store.startFamily('a_bob', clock.now + DAY, 'account', B);
    assert.equal(store.get(second.family), undefined, 'the revoked one went first');
    assert.ok(store.get(first.family));
    clock.now += 1000;
    const fifth = await store.startFamily('a_bob', clock.now + DAY, 'account', B);
    assert.equal(store.get(first.family), undefined, 'then the oldest');
    assert.deepEqual([third, fourth, fifth].map(({ family }) => store.isLive(family)), [true, true, true]);
    assert.ok(store.isLive(other.family), 'other users keep theirs');
    assert.equal(store.size, 4);
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

  test('raiseEpoch (a revocation from another gateway) takes a higher epoch, never a lower one, ends the user\'s sessions, and is kept on reload', async () => {
    const clock = { now: 1_900_000_000_000 };
    const dir = await freshDataDir();
    const store = await storeAt(dir, clock);
    const mine = await store.startFamily('u_a', clock.now + DAY, 'invite', B);
    const theirs = await store.startFamily('u_b', clock.now + DAY, 'invite', B);
    const bumped = await store.bumpEpoch('u_a');
    assert.equal(await store.raiseEpoch('u_a', bumped - 1), false, 'lower: ignored');
    assert.equal(await store.raiseEpoch('u_a', bumped), false, 'equal: ignored');
    assert.equal(store.isLive(mine.family), true, 'an ignored epoch revokes nothing');
    assert.equal(store.epochOf('u_a'), bumped);
    const raised = store.raiseEpoch('u_a', bumped + 50);
    assert.equal(store.epochOf('u_a'), bumped + 50, 'in memory before the write is awaited');
    assert.equal(await raised, true);
    assert.equal(store.isLive(mine.family), false);
    assert.equal(store.isLive(theirs.family), true);
    assert.deepEqual(store.knownEpochs(), [['u_a', bumped + 50]]);
    assert.equal(await store.raiseEpoch('u_a', Number.NaN), false);
    assert.equal((await storeAt(dir, clock)).epochOf('u_a'), bumped + 50);
    // A local bump after a raised one still goes above it.
    assert.ok((await store.bumpEpoch('u_a')) > bumped + 50);
  });

  test('knows() is true for users with a session or an epoch', async () => {
    const clock = { now: 1_900_000_000_000 };
    const store = await storeAt(await freshDataDir(), clock);
    await store.startFamily('u_a', clock.now + DAY, 'invite', B);
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
