import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { AbortReason } from '../../server/chat/AbortReason.js';
import { DetachedReplies } from '../../server/chat/DetachedReplies.js';
import { Reply } from '../../server/chat/Reply.js';

const reply = (id: string, userId = 'u_a', maxBytes = 1024) => new Reply(id, userId, 'c_1', maxBytes);

describe('DetachedReplies', () => {
  test('a kept reply can be taken back by its owner only, once', () => {
    const kept = new DetachedReplies(10_000);
    const r = reply('r1');
    kept.keep(r);
    assert.equal(kept.size, 1);
    assert.equal(kept.peek('u_b', 'r1'), undefined, "another user's id is not found");
    assert.equal(kept.take('u_b', 'r1'), undefined);
    assert.equal(kept.take('u_a', 'r1'), r);
    assert.equal(kept.take('u_a', 'r1'), undefined);
    assert.equal(r.controller.signal.aborted, false, 'taking it back does not stop it');
    kept.clear();
  });

  test('when the grace period ends a running reply is cancelled with reason disconnect and forgotten', (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const kept = new DetachedReplies(30);
    const r = reply('r1');
    kept.keep(r);
    t.mock.timers.tick(29);
    assert.equal(r.controller.signal.aborted, false, 'kept during the grace period');
    t.mock.timers.tick(1);
    assert.equal(r.controller.signal.reason, AbortReason.disconnect);
    assert.equal(kept.size, 0);
  });

  test('with no grace, or a reply past its byte bound, the reply is cancelled at once', () => {
    const none = new DetachedReplies(0);
    const r = reply('r1');
    none.keep(r);
    assert.equal(r.controller.signal.reason, AbortReason.disconnect);
    assert.equal(none.size, 0);

    const kept = new DetachedReplies(10_000);
    const big = reply('r2', 'u_a', 1024);
    big.delta('x'.repeat(1025));
    assert.equal(big.resumable, false);
    kept.keep(big);
    assert.equal(big.controller.signal.aborted, true);
    assert.equal(kept.size, 0);
  });

  test('a finished reply is kept for its replay and never aborted', (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const kept = new DetachedReplies(30);
    const r = reply('r1');
    r.finish({ type: 'cancelled', id: 'r1' });
    kept.keep(r);
    assert.equal(kept.peek('u_a', 'r1'), r);
    t.mock.timers.tick(30);
    assert.equal(r.controller.signal.aborted, false);
    assert.equal(kept.size, 0);
  });

  test('a newer reply with the same owner and id replaces the older one, which is cancelled', () => {
    const kept = new DetachedReplies(10_000);
    const older = reply('r1');
    const newer = reply('r1');
    kept.keep(older);
    kept.keep(newer);
    assert.equal(older.controller.signal.aborted, true);
    assert.equal(kept.take('u_a', 'r1'), newer);
  });

  test('clear cancels everything kept', () => {
    const kept = new DetachedReplies(10_000);
    const a = reply('a');
    const b = reply('b', 'u_b');
    kept.keep(a);
    kept.keep(b);
    kept.clear();
    assert.equal(a.controller.signal.aborted && b.controller.signal.aborted, true);
    assert.equal(kept.size, 0);
  });
});

describe('Reply', () => {
  test('seqs are assigned as text is taken, gap-free; finish is recorded once', () => {
    const r = reply('r1');
    r.delta('a');
    r.delta('b');
    assert.deepEqual(r.takePending(), { seq: 0, text: 'ab', bytes: 2 });
    assert.equal(r.takePending(), undefined);
    r.delta('c');
    assert.equal(r.takePending()?.seq, 1);
    assert.equal(r.lastSeq, 1);
    r.finish({ type: 'cancelled', id: 'r1' });
    r.finish({ type: 'error', id: 'r1', code: 'internal', message: 'x' });
    assert.deepEqual(r.terminal, { type: 'cancelled', id: 'r1' });
    r.delta('late');
    assert.equal(r.takePending(), undefined, 'no text after the terminal frame');
  });
});

describe('DetachedReplies.dropUser', () => {
  test("cancels and forgets only that user's replies", () => {
    const kept = new DetachedReplies(10_000);
    const mine = reply('r1', 'u_a');
    const theirs = reply('r1', 'u_b');
    kept.keep(mine);
    kept.keep(theirs);
    kept.dropUser('u_a');
    assert.equal(mine.controller.signal.aborted, true);
    assert.equal(theirs.controller.signal.aborted, false);
    assert.equal(kept.take('u_b', 'r1'), theirs);
  });
});
