import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AbortReason } from '../../server/chat/AbortReason.js';
import { Reply, type ReplyListener } from '../../server/chat/Reply.js';
import { ReplyRegistry } from '../../server/chat/ReplyRegistry.js';

const reply = (id: string, userId = 'u_a', maxBytes = 1024) => new Reply(id, userId, 'c_1', maxBytes);
const cancelled = { kind: 'cancelled', usage: { promptTokens: 0, completionTokens: 0 } } as const;

/** A listener that records what it was told. */
function listener(): ReplyListener & { released: ReplyListener['released']; releasedIds: string[]; endedIds: string[] } {
  const releasedIds: string[] = [];
  const endedIds: string[] = [];
  return {
    releasedIds,
    endedIds,
    queued: () => undefined,
    textPending: () => undefined,
    ended: (r) => endedIds.push(r.id),
    released: (r) => releasedIds.push(r.id),
  };
}

describe('ReplyRegistry', () => {
  test('a reply is found by its owner only, and taken by another listener of the owner, which the first is told of', () => {
    const registry = new ReplyRegistry(10_000);
    const first = listener();
    const r = reply('r1');
    registry.add(r, first);
    assert.equal(registry.get('u_b', 'r1'), undefined, "another user's id is not found");
    const second = listener();
    assert.equal(registry.take('u_b', 'r1', second), undefined);
    assert.equal(registry.take('u_a', 'r1', second), r);
    assert.deepEqual(first.releasedIds, ['r1']);
    assert.equal(r.controller.signal.aborted, false, 'taking it does not stop it');
    registry.clear();
  });

  test('a detached running reply is kept for the grace period, then cancelled with reason disconnect and forgotten', (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const registry = new ReplyRegistry(30);
    const owner = listener();
    const r = reply('r1');
    registry.add(r, owner);
    registry.detachAll(owner);
    assert.equal(registry.detachedCount, 1);
    assert.equal(registry.peek('u_a', 'r1'), r);
    t.mock.timers.tick(29);
    assert.equal(r.controller.signal.aborted, false, 'kept during the grace period');
    t.mock.timers.tick(1);
    assert.equal(r.controller.signal.reason, AbortReason.disconnect);
    assert.equal(registry.size, 0);
  });

  test('with no grace, or a reply past its byte bound, a detached reply is cancelled at once', () => {
    const none = new ReplyRegistry(0);
    const owner = listener();
    const r = reply('r1');
    none.add(r, owner);
    none.detachAll(owner);
    assert.equal(r.controller.signal.reason, AbortReason.disconnect);
    assert.equal(none.size, 0);

    const kept = new ReplyRegistry(10_000);
    const big = reply('r2', 'u_a', 1024);
    kept.add(big, owner);
    big.delta('x'.repeat(1025));
    assert.equal(big.resumable, false);
    kept.detachAll(owner);
    assert.equal(big.controller.signal.aborted, true);
    assert.equal(kept.size, 0);
  });

  test('an ended reply stays reachable for the grace period after its end, never aborted, then is forgotten', (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const registry = new ReplyRegistry(30);
    const owner = listener();
    const r = reply('r1');
    registry.add(r, owner);
    r.finish(cancelled);
    registry.ended(r);
    registry.detachAll(owner);
    assert.equal(registry.peek('u_a', 'r1'), r);
    const back = listener();
    assert.equal(registry.take('u_a', 'r1', back), r, 'its end can be replayed');
    r.attach(back);
    assert.deepEqual(back.endedIds, ['r1']);
    t.mock.timers.tick(30);
    assert.equal(r.controller.signal.aborted, false);
    assert.equal(registry.size, 0);
  });

  test('a newer reply with the same owner and id replaces the older one, which is cancelled', () => {
    const registry = new ReplyRegistry(10_000);
    const owner = listener();
    const older = reply('r1');
    const newer = reply('r1');
    registry.add(older, owner);
    registry.add(newer, owner);
    assert.equal(older.controller.signal.aborted, true);
    assert.equal(registry.get('u_a', 'r1'), newer);
    registry.clear();
  });

  test('each user keeps at most maxEndedPerUser ended replies, the oldest going first', () => {
    const registry = new ReplyRegistry(10_000, 2);
    const owner = listener();
    const replies = ['r1', 'r2', 'r3'].map((id) => reply(id));
    for (const r of replies) {
      registry.add(r, owner);
      r.finish(cancelled);
      registry.ended(r);
    }
    assert.equal(registry.get('u_a', 'r1'), undefined);
    assert.ok(registry.get('u_a', 'r2') && registry.get('u_a', 'r3'));
    registry.clear();
  });

  test('dropUser and clear cancel what still runs and forget everything of theirs', () => {
    const registry = new ReplyRegistry(10_000);
    const owner = listener();
    const mine = reply('r1', 'u_a');
    const theirs = reply('r1', 'u_b');
    registry.add(mine, owner);
    registry.add(theirs, owner);
    registry.dropUser('u_a');
    assert.equal(mine.controller.signal.aborted, true);
    assert.equal(theirs.controller.signal.aborted, false);
    registry.clear();
    assert.equal(theirs.controller.signal.aborted, true);
    assert.equal(registry.size, 0);
  });
});
