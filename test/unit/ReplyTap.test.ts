import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Reply, type ReplyTap } from '../../server/chat/Reply.js';

function recorder(): { tap: ReplyTap; events: string[] } {
  const events: string[] = [];
  return {
    events,
    tap: {
      committed: (_reply, piece) => events.push(`commit ${piece.seq} ${piece.text}`),
      queued: (_reply, position) => events.push(`queued ${position}`),
      ended: (reply) => events.push(`ended pending=${reply.hasPending}`),
    },
  };
}

test('a tap sees each commit as it is taken, in seq order, queue positions, and the end once; it never commits itself', () => {
  const reply = new Reply('r1', 'u1', 'c1', 1024);
  const { tap, events } = recorder();
  reply.tap(tap);
  reply.queued(2);
  reply.delta('a');
  reply.delta('b');
  assert.deepEqual(events, ['queued 2'], 'text waits uncommitted until a writer takes it');
  assert.equal(reply.hasPending, true);
  assert.equal(reply.takePending()?.seq, 0);
  reply.delta('c');
  reply.finish({ kind: 'cancelled', usage: { promptTokens: 0, completionTokens: 0 } });
  reply.finish({ kind: 'cancelled', usage: { promptTokens: 0, completionTokens: 0 } });
  assert.equal(reply.takePending()?.text, 'c');
  assert.deepEqual(events, ['queued 2', 'commit 0 ab', 'ended pending=true', 'commit 1 c']);
  assert.equal(reply.hasPending, false);
});

test('a removed tap sees nothing more', () => {
  const reply = new Reply('r1', 'u1', 'c1', 1024);
  const { tap, events } = recorder();
  reply.tap(tap);
  reply.delta('a');
  reply.takePending();
  reply.tap(undefined);
  reply.delta('b');
  reply.takePending();
  reply.finish({ kind: 'cancelled', usage: { promptTokens: 0, completionTokens: 0 } });
  assert.deepEqual(events, ['commit 0 a']);
});
