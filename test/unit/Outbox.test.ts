import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { Outbox } from '../../server/chat/Outbox.js';
import { Reply, type ReplyListener } from '../../server/chat/Reply.js';
import type { ReplyOutcome } from '../../server/chat/ReplyOutcome.js';
import { toTerminalFrame } from '../../server/chat/toTerminalFrame.js';
import { ParleyError } from '../../server/ParleyError.js';
import type { ErrorCode } from '../../shared/errorCodes.js';
import { SendStatus, TransportName, type Connection } from '../../server/transport/Connection.js';
import { isTerminalFrame, type ServerFrame, type TerminalFrame } from '../../shared/protocol.js';
import { mulberry32 } from '../../models/mulberry32.js';

/**
 * A connection that records what was written. `status` is what the next send() reports;
 * `buffered` is what bufferedAmount() reports. `writesWhileBlocked` counts writes made after the
 * connection signalled backpressure and before the test called drain(): it must stay 0.
 */
class FakeConnection implements Connection {
  readonly id = 'conn-1';
  readonly transport = TransportName.ws;
  readonly remoteAddress = '127.0.0.1';
  readonly principal = { userId: 'u_test', name: 'Test', role: 'user' as const, expiresAt: 0 };
  isOpen = true;
  status: SendStatus = SendStatus.sent;
  buffered = 0;
  readonly sent: string[] = [];
  writesWhileBlocked = 0;
  private signalledBlocked = false;

  constructor(private readonly highWaterBytes: number) {}

  send(text: string): SendStatus {
    if (!this.isOpen) return SendStatus.closed;
    if (this.signalledBlocked) this.writesWhileBlocked++;
    this.sent.push(text);
    if (this.status === SendStatus.backpressure || this.buffered >= this.highWaterBytes) this.signalledBlocked = true;
    return this.status;
  }

  bufferedAmount(): number {
    return this.buffered;
  }

  close(): void {
    this.isOpen = false;
  }

  /** The transport reports that its buffer drained. */
  drained(): void {
    this.signalledBlocked = false;
  }

  get frames(): ServerFrame[] {
    return this.sent.map((text) => JSON.parse(text) as ServerFrame);
  }
}

type DeltaOut = { type: 'delta'; id: string; seq: number; text: string };

/** The outcome a terminal frame stands for. */
function outcomeOf(frame: TerminalFrame): ReplyOutcome {
  const usage = { promptTokens: 1, completionTokens: 1 };
  if (frame.type === 'done') return { kind: 'finished', stopReason: frame.stopReason, usage: frame.usage, timing: frame.timing };
  if (frame.type === 'cancelled') return { kind: 'cancelled', usage };
  return { kind: 'failed', error: new ParleyError(frame.code as ErrorCode, frame.message), usage };
}

/** A listener that writes through `outbox` as ClientSession's does; `onEnded` runs after the terminal frame is queued. */
function listenerFor(outbox: () => Outbox, onEnded: (reply: Reply) => void = () => undefined): ReplyListener {
  return {
    queued: (reply, position) => outbox().send({ type: 'queued', id: reply.id, position }),
    textPending: (reply, bytes) => outbox().deltaPending(reply, bytes),
    ended: (reply) => {
      if (reply.outcome) outbox().send(toTerminalFrame(reply.id, reply.outcome));
      onEnded(reply);
    },
    released: () => undefined,
  };
}

/** Attaches `reply` to `listener` after a drop, as ClientSession's resume does. */
function resumeOn(reply: Reply, listener: ReplyListener, send: (frame: ServerFrame) => void, after: number): void {
  reply.detach();
  send({ type: 'resumed', id: reply.id, conversationId: reply.conversationId, after });
  for (const { seq, text } of reply.committedAfter(after)) send({ type: 'delta', id: reply.id, seq, text });
  reply.attach(listener);
}

/**
 * An Outbox with Replies in front of it, as ClientSession wires them: `delta(id, text)` goes to the
 * id's current Reply, a terminal frame finishes it, and the next delta for that id starts a new one.
 */
function setup(options: { highWaterBytes?: number; maxQueuedBytes?: number } = {}) {
  const highWaterBytes = options.highWaterBytes ?? 1024;
  const connection = new FakeConnection(highWaterBytes);
  let overflows = 0;
  const replies = new Map<string, Reply>();
  const target: ReplyListener = listenerFor(
    () => real,
    (reply) => {
      if (replies.get(reply.id) === reply) replies.delete(reply.id);
    },
  );
  const real: Outbox = new Outbox(connection, {
    highWaterBytes,
    maxQueuedBytes: options.maxQueuedBytes ?? 1 << 20,
    onOverflow: () => {
      overflows++;
    },
    owns: (reply) => reply.attached === target,
  });
  const replyFor = (id: string) => {
    let reply = replies.get(id);
    if (!reply) {
      reply = new Reply(id, 'u_test', 'c1', 1 << 20);
      replies.set(id, reply);
      reply.attach(target);
    }
    return reply;
  };
  const outbox = {
    send(frame: ServerFrame) {
      if (isTerminalFrame(frame)) replyFor(frame.id).finish(outcomeOf(frame));
      else real.send(frame);
    },
    delta(id: string, text: string) {
      replyFor(id).delta(text);
    },
    get pendingBytes() {
      return real.pendingBytes;
    },
    reply: (id: string) => replies.get(id),
  };
  const drain = () => {
    connection.drained();
    real.drain();
  };
  return { connection, outbox, real, drain, overflows: () => overflows };
}

const accepted = (id: string): ServerFrame => ({ type: 'accepted', id, conversationId: 'c1' });
const done = (id: string): ServerFrame => ({
  type: 'done',
  id,
  stopReason: 'eos',
  usage: { promptTokens: 1, completionTokens: 1 },
  timing: { firstTokenMs: 0, tokensPerSecond: 0 },
});
const cancelled = (id: string): ServerFrame => ({ type: 'cancelled', id });
const failed = (id: string): ServerFrame => ({ type: 'error', id, code: 'engine_error', message: 'The model failed.' });

function deltasOf(frames: ServerFrame[], id: string): DeltaOut[] {
  return frames.filter((frame): frame is DeltaOut => frame.type === 'delta' && frame.id === id);
}

describe('Outbox', () => {
  test('frames and deltas are written at once, in order, when the connection is not backed up', () => {
    const { connection, outbox } = setup();
    outbox.send(accepted('r1'));
    outbox.delta('r1', 'Hel');
    outbox.delta('r1', 'lo');
    outbox.send(done('r1'));
    assert.deepEqual(connection.frames, [
      accepted('r1'),
      { type: 'delta', id: 'r1', seq: 0, text: 'Hel' },
      { type: 'delta', id: 'r1', seq: 1, text: 'lo' },
      done('r1'),
    ]);
    assert.equal(outbox.pendingBytes, 0);
  });

  test('after a send reports backpressure, nothing more is written until drain(), then everything goes in order', () => {
    const { connection, outbox, drain } = setup();
    connection.status = SendStatus.backpressure;
    outbox.send(accepted('r1'));
    assert.equal(connection.sent.length, 1, 'the frame that hit backpressure was handed to the socket');

    connection.status = SendStatus.sent;
    outbox.delta('r1', 'a');
    outbox.send(accepted('r2'));
    outbox.send(done('r1'));
    assert.equal(connection.sent.length, 1, 'nothing is written while blocked');
    assert.ok(outbox.pendingBytes > 0);

    drain();
    assert.deepEqual(connection.frames, [accepted('r1'), { type: 'delta', id: 'r1', seq: 0, text: 'a' }, accepted('r2'), done('r1')]);
    assert.equal(connection.writesWhileBlocked, 0);
    assert.equal(outbox.pendingBytes, 0);
  });

  test('a bufferedAmount() at or above highWaterBytes blocks the outbox like backpressure does', () => {
    const { connection, outbox, drain } = setup({ highWaterBytes: 100 });
    connection.buffered = 100;
    outbox.send(accepted('r1'));
    outbox.send(accepted('r2'));
    assert.equal(connection.sent.length, 1);

    connection.buffered = 0;
    drain();
    assert.equal(connection.sent.length, 2);
    assert.equal(connection.writesWhileBlocked, 0);
  });

  test('deltas of one id queued under backpressure are merged into one delta with no text lost', () => {
    const { connection, outbox, drain } = setup();
    connection.status = SendStatus.backpressure;
    outbox.send(accepted('r1'));
    connection.status = SendStatus.sent;
    const pieces = ['The', ' quick', ' brown', ' fox', ' 🦊', ''];
    for (const piece of pieces) outbox.delta('r1', piece);
    assert.equal(connection.sent.length, 1);

    drain();
    const deltas = deltasOf(connection.frames, 'r1');
    assert.deepEqual(deltas, [{ type: 'delta', id: 'r1', seq: 0, text: pieces.join('') }]);
  });

  test('seq starts at 0 per id and stays contiguous across merges and interleaved ids', () => {
    const { connection, outbox, drain } = setup();
    const pushed = new Map<string, string>([
      ['a', ''],
      ['b', ''],
    ]);
    const push = (id: string, text: string) => {
      pushed.set(id, (pushed.get(id) ?? '') + text);
      outbox.delta(id, text);
    };
    push('a', 'a0');
    push('b', 'b0');
    connection.status = SendStatus.backpressure;
    push('a', 'a1'); // written, then the socket blocks
    connection.status = SendStatus.sent;
    push('b', 'b1');
    push('a', 'a2');
    push('b', 'b2');
    push('a', 'a3');
    drain();
    push('b', 'b3');
    connection.status = SendStatus.backpressure;
    push('a', 'a4');
    push('a', 'a5');
    connection.status = SendStatus.sent;
    drain();

    for (const id of ['a', 'b']) {
      const deltas = deltasOf(connection.frames, id);
      assert.deepEqual(
        deltas.map((delta) => delta.seq),
        deltas.map((_, index) => index),
        `seqs of ${id}`,
      );
      assert.equal(deltas.map((delta) => delta.text).join(''), pushed.get(id), `text of ${id}`);
    }
    assert.ok(connection.sent.length < 12, 'some deltas were merged');
    assert.equal(connection.writesWhileBlocked, 0);
  });

  test('a terminal frame queued after pending deltas is written after them, for done, cancelled and error frames', () => {
    for (const terminal of [done, cancelled, failed]) {
      const { connection, outbox, drain } = setup();
      connection.status = SendStatus.backpressure;
      outbox.send(accepted('r1'));
      connection.status = SendStatus.sent;
      outbox.delta('r1', 'x');
      outbox.delta('r1', 'y');
      outbox.send(terminal('r1'));
      drain();
      assert.deepEqual(connection.frames, [accepted('r1'), { type: 'delta', id: 'r1', seq: 0, text: 'xy' }, terminal('r1')]);
    }
  });

  test('an error frame without an id does not end any request: seq keeps counting', () => {
    const { connection, outbox } = setup();
    outbox.delta('r1', 'a');
    outbox.send({ type: 'error', code: 'rate_limited', message: 'Slow down.' });
    outbox.delta('r1', 'b');
    assert.deepEqual(
      deltasOf(connection.frames, 'r1').map((delta) => delta.seq),
      [0, 1],
    );
  });

  test('a new request reusing an id after its terminal frame starts at seq 0 and is never merged into the old reply', () => {
    const { connection, outbox, drain } = setup();
    outbox.delta('r1', 'old0');
    connection.status = SendStatus.backpressure;
    outbox.delta('r1', 'old1');
    connection.status = SendStatus.sent;
    outbox.delta('r1', 'old2');
    outbox.send(done('r1'));
    outbox.delta('r1', 'new0');
    outbox.delta('r1', 'new1');
    drain();
    outbox.send(cancelled('r1'));
    outbox.delta('r1', 'newer0');

    assert.deepEqual(connection.frames, [
      { type: 'delta', id: 'r1', seq: 0, text: 'old0' },
      { type: 'delta', id: 'r1', seq: 1, text: 'old1' },
      { type: 'delta', id: 'r1', seq: 2, text: 'old2' },
      done('r1'),
      { type: 'delta', id: 'r1', seq: 0, text: 'new0new1' },
      cancelled('r1'),
      { type: 'delta', id: 'r1', seq: 0, text: 'newer0' },
    ]);
  });

  test('onOverflow runs when the pending text exceeds maxQueuedBytes, and not at or below it', () => {
    const { connection, outbox, overflows } = setup({ maxQueuedBytes: 10 });
    connection.status = SendStatus.backpressure;
    outbox.delta('r1', 'first'); // written: nothing is pending yet
    assert.equal(overflows(), 0);
    outbox.delta('r1', '12345');
    outbox.delta('r1', '67890');
    assert.equal(outbox.pendingBytes, 10);
    assert.equal(overflows(), 0, 'exactly maxQueuedBytes is still allowed');
    outbox.delta('r1', '!');
    assert.equal(outbox.pendingBytes, 11);
    assert.ok(overflows() >= 1);
  });

  test(
    'a frame written at once on a connection that is not backed up never counts as queued for onOverflow',
    () => {
      const { connection, outbox, overflows } = setup({ maxQueuedBytes: 10 });
      outbox.delta('r1', 'a reply chunk longer than ten characters');
      assert.equal(connection.sent.length, 1);
      assert.equal(outbox.pendingBytes, 0);
      assert.equal(overflows(), 0);
    },
  );

  test('nothing is written once the connection reports it is closed, and the queue is dropped', () => {
    const { connection, outbox, drain } = setup();
    connection.status = SendStatus.backpressure;
    outbox.send(accepted('r1'));
    connection.status = SendStatus.sent;
    outbox.delta('r1', 'pending');
    outbox.send(done('r1'));
    connection.close();
    const before = connection.sent.length;

    drain();
    outbox.send(accepted('r2'));
    outbox.delta('r2', 'more');
    assert.equal(connection.sent.length, before);
    assert.equal(outbox.pendingBytes, 0);
  });

  test('text not yet written when the socket closes stays in its Reply, and a resume elsewhere writes it with the next seq', () => {
    const first = setup();
    first.outbox.delta('r1', 'a');
    first.connection.status = SendStatus.backpressure;
    first.outbox.delta('r1', 'b');
    first.connection.status = SendStatus.sent;
    first.outbox.delta('r1', 'c');
    first.outbox.delta('r1', 'd');
    const reply = first.outbox.reply('r1') as Reply;
    first.connection.close();
    first.drain();
    reply.detach();
    reply.delta('e');
    assert.equal(reply.lastSeq, 1, 'seq 0 (a) and 1 (b) were written; c, d and e wait');

    const second = setup();
    const target: ReplyListener = listenerFor(() => secondOutbox);
    const secondOutbox = new Outbox(second.connection, { highWaterBytes: 1024, maxQueuedBytes: 1 << 20, onOverflow: () => undefined, owns: (owned) => owned.attached === target });
    resumeOn(reply, target, (frame) => secondOutbox.send(frame), 0);
    reply.delta('f');
    reply.finish(outcomeOf(done('r1') as TerminalFrame));
    assert.deepEqual(second.connection.frames, [
      { type: 'resumed', id: 'r1', conversationId: 'c1', after: 0 },
      { type: 'delta', id: 'r1', seq: 1, text: 'b' },
      { type: 'delta', id: 'r1', seq: 2, text: 'cde' },
      { type: 'delta', id: 'r1', seq: 3, text: 'f' },
      done('r1'),
    ]);
  });

  test('a reply resumed on another connection takes its pending text along: the old outbox skips it', () => {
    const old = setup();
    old.connection.status = SendStatus.backpressure;
    old.outbox.delta('r1', 'a');
    old.connection.status = SendStatus.sent;
    old.outbox.delta('r1', 'b');
    const reply = old.outbox.reply('r1') as Reply;
    const moved: ServerFrame[] = [];
    const elsewhere: ReplyListener = {
      queued: () => undefined,
      textPending: () => {
        const taken = reply.takePending();
        if (taken) moved.push({ type: 'delta', id: reply.id, seq: taken.seq, text: taken.text });
      },
      ended: () => undefined,
      released: () => undefined,
    };
    resumeOn(reply, elsewhere, (frame) => moved.push(frame), 0);
    old.drain();
    assert.equal(old.connection.sent.length, 1, 'the old connection wrote only seq 0');
    assert.equal(old.real.pendingBytes, 0);
    assert.deepEqual(moved, [
      { type: 'resumed', id: 'r1', conversationId: 'c1', after: 0 },
      { type: 'delta', id: 'r1', seq: 1, text: 'b' },
    ]);
  });

  test('randomized: with random backpressure and drains, every id keeps its text, gap-free seqs, and its terminal frame last', () => {
    const random = mulberry32(20240607);
    const ids = ['alpha', 'beta', 'gamma'];
    const terminals = [done, cancelled, failed];
    for (let round = 0; round < 20; round++) {
      const { connection, outbox, drain } = setup({ highWaterBytes: 64 });
      /** For each id, the text of each request in order: a new entry starts after a terminal frame. */
      const pushed = new Map<string, string[]>(ids.map((id) => [id, ['']]));

      for (let step = 0; step < 300; step++) {
        const roll = random();
        const id = ids[Math.floor(random() * ids.length)] as string;
        if (roll < 0.6) {
          const text = randomText(random);
          const replies = pushed.get(id) as string[];
          replies[replies.length - 1] += text;
          outbox.delta(id, text);
        } else if (roll < 0.67) {
          outbox.send((terminals[Math.floor(random() * terminals.length)] as (id: string) => ServerFrame)(id));
          (pushed.get(id) as string[]).push('');
        } else if (roll < 0.8) {
          connection.status = connection.status === SendStatus.sent ? SendStatus.backpressure : SendStatus.sent;
        } else if (roll < 0.88) {
          connection.buffered = Math.floor(random() * 128);
        } else {
          drain();
        }
      }
      for (const id of ids) {
        outbox.send(done(id));
        (pushed.get(id) as string[]).push('');
      }
      connection.status = SendStatus.sent;
      connection.buffered = 0;
      drain();

      assert.equal(connection.writesWhileBlocked, 0, `round ${round}: written while blocked`);
      assert.equal(outbox.pendingBytes, 0, `round ${round}: left pending`);
      const received = new Map<string, string[]>(ids.map((id) => [id, ['']]));
      const nextSeq = new Map<string, number>(ids.map((id) => [id, 0]));
      for (const frame of connection.frames) {
        if (frame.type === 'delta') {
          assert.equal(frame.seq, nextSeq.get(frame.id), `round ${round}: seq of ${frame.id}`);
          nextSeq.set(frame.id, frame.seq + 1);
          const replies = received.get(frame.id) as string[];
          replies[replies.length - 1] += frame.text;
        } else if ('id' in frame && frame.id !== undefined) {
          nextSeq.set(frame.id, 0);
          (received.get(frame.id) as string[]).push('');
        }
      }
      for (const id of ids) {
        assert.deepEqual(received.get(id), pushed.get(id), `round ${round}: text of each request of ${id}`);
        const last = connection.frames.filter((frame) => 'id' in frame && frame.id === id).at(-1);
        assert.deepEqual(last, done(id), `round ${round}: the terminal frame of ${id} is its last frame`);
      }
    }
  });
});

function randomText(random: () => number): string {
  const alphabet = ['a', 'b', ' ', 'é', '字', '🙂', '\n', '"', '\\'];
  let text = '';
  const length = 1 + Math.floor(random() * 6);
  for (let index = 0; index < length; index++) text += alphabet[Math.floor(random() * alphabet.length)] as string;
  return text;
}

