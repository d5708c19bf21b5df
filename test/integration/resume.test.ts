import { after, afterEach, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { assembleReply } from '../helpers/assembleReply.js';
import type { GatedEngine } from '../helpers/GatedEngine.js';
import { loadGatedTinyEngine, startTestServer, TRANSPORTS, type TestServer } from '../helpers/startTestServer.js';
import type { TestClient } from '../helpers/TestClient.js';
import { mulberry32 } from '../../models/mulberry32.js';
import { waitUntil } from '../helpers/waitUntil.js';

/** Longer than every cut below: the gate, not the length, keeps a reply running. */
const REPLY_TOKENS = 300;
const PROMPT = 'tell me the whole story';

/** The seq of the last delta this client saw for `id`, -1 if none. */
function lastSeq(client: TestClient, id: string): number {
  return assembleReply(id, [client.frames]).lastSeq;
}

for (const transport of TRANSPORTS) {
  describe(`resuming replies over ${transport}`, () => {
    let engine: GatedEngine;
    let server: TestServer;
    let reference: string;
    before(async () => {
      engine = await loadGatedTinyEngine({ slots: 2, contextSize: 4096 });
      server = await startTestServer(transport, engine, { maxTokens: REPLY_TOKENS, resumeGraceMs: 20_000 });
      const client = await server.client('reference');
      const id = client.send(PROMPT);
      assert.equal((await client.terminal(id)).type, 'done');
      reference = client.replyText(id);
      client.close();
    });
    afterEach(() => engine.gate.open());
    after(async () => {
      await server.stop();
      await engine.dispose();
    });

    test('a reply dropped mid-stream is resumed on a new socket with no gap and no duplicate', async () => {
      const token = await server.token('traveller');
      const first = await server.connect(token);
      engine.gate.hold(4);
      const id = first.send(PROMPT);
      await first.waitFor((frame) => frame.type === 'delta' && frame.id === id && frame.seq >= 3);
      first.drop();
      const seen = lastSeq(first, id);

      const second = await server.connect(token);
      second.sendFrame({ type: 'resume', id, after: seen });
      const resumed = await second.waitForType('resumed', id);
      assert.equal(resumed.after, seen);
      assert.equal(second.terminalsFor(id).length, 0, 'the reply is still running when it is resumed');
      engine.gate.open();
      assert.equal((await second.terminal(id)).type, 'done');
      const rebuilt = assembleReply(id, [first.frames, second.frames]);
      assert.equal(rebuilt.text, reference);
      assert.equal(rebuilt.terminals.length, 1);
    });

    test('cut at random points, several times per reply, every reply is rebuilt whole: no gap, no duplicate', async (t) => {
      const random = mulberry32(0x5eed);
      let cuts = 0;
      for (let round = 0; round < 6; round++) {
        const token = await server.token(`wanderer-${round}`);
        const sockets: TestClient[] = [await server.connect(token)];
        const id = `cut-${round}`;
        // Every cut lands mid-reply: the gate lets a random number of pieces out between cuts.
        engine.gate.hold();
        (sockets[0] as TestClient).sendFrame({ type: 'send', id, text: PROMPT });
        for (let drop = 0; drop < 3; drop++) {
          const current = sockets.at(-1) as TestClient;
          // Cut right away (maybe before the send is even read), or after a random number of pieces.
          const cutAfter = Math.floor(random() * 60) - 10;
          if (cutAfter >= 0) {
            engine.gate.allow(cutAfter + 1);
            await engine.gate.stalled();
          }
          current.drop();
          cuts++;
          const seen = assembleReply(id, sockets.map((socket) => socket.frames)).lastSeq;
          const next = await server.connect(token);
          sockets.push(next);
          next.sendFrame({ type: 'resume', id, after: seen });
          await next.waitFor((frame) => 'id' in frame && frame.id === id && (frame.type === 'resumed' || frame.type === 'error'));
          if (next.terminalsFor(id).some((frame) => frame.type === 'error')) break;
        }
        engine.gate.open();
        const last = sockets.at(-1) as TestClient;
        const terminal = await last.terminal(id);
        const rebuilt = assembleReply(id, sockets.map((socket) => socket.frames));
        if (terminal.type === 'error') {
          // The send itself was lost in a cut before the server read it: nothing to resume.
          assert.equal(terminal.code, 'resume_unavailable');
          assert.equal(rebuilt.text, '');
        } else {
          assert.equal(terminal.type, 'done');
          assert.equal(rebuilt.text, reference, `round ${round}`);
        }
        assert.equal(rebuilt.terminals.length, 1, `round ${round}: one terminal frame`);
      }
      t.diagnostic(`${cuts} cuts`);
    });

    test('a reply that finishes while its owner is away is replayed in full, with its done frame', async () => {
      const token = await server.token('sleeper');
      const first = await server.connect(token);
      const id = first.send(PROMPT);
      await first.waitForType('delta', id);
      first.drop();
      await waitUntil(() => server.started.server.chat.liveCount === 0);

      const second = await server.connect(token);
      second.sendFrame({ type: 'resume', id, after: -1 });
      assert.equal((await second.terminal(id)).type, 'done');
      const replayed = assembleReply(id, [second.frames]);
      assert.equal(replayed.text, reference, 'after -1 replays every delta');
      assert.equal(second.framesFor(id)[0]?.type, 'resumed');
    });

    test('only the owner can resume: another user gets resume_unavailable and the reply is untouched', async () => {
      const token = await server.token('owner');
      const first = await server.connect(token);
      const id = first.send(PROMPT);
      await first.waitForType('delta', id);
      first.drop();
      const seen = lastSeq(first, id);

      const stranger = await server.client('stranger');
      stranger.sendFrame({ type: 'resume', id, after: -1 });
      const refused = await stranger.terminal(id);
      assert.equal(refused.type, 'error');
      assert.equal(refused.type === 'error' && refused.code, 'resume_unavailable');
      assert.equal(stranger.framesFor(id).filter((frame) => frame.type === 'delta').length, 0);

      const back = await server.connect(token);
      back.sendFrame({ type: 'resume', id, after: seen });
      assert.equal((await back.terminal(id)).type, 'done');
      assert.equal(assembleReply(id, [first.frames, back.frames]).text, reference);
    });

    test('resuming from a new socket while the old one is still open moves the reply: the old socket gets resumed_elsewhere', async () => {
      const token = await server.token('tabs');
      const old = await server.connect(token);
      engine.gate.hold(3);
      const id = old.send(PROMPT);
      await old.waitFor((frame) => frame.type === 'delta' && frame.id === id && frame.seq >= 2);
      const seen = lastSeq(old, id);

      const fresh = await server.connect(token);
      fresh.sendFrame({ type: 'resume', id, after: seen });
      await fresh.waitForType('resumed', id);
      engine.gate.open();
      assert.equal((await fresh.terminal(id)).type, 'done');
      const oldFrames = old.framesFor(id);
      // The old socket may have received more deltas before the move; the new one starts after `seen`.
      const rebuilt = assembleReply(id, [old.frames.filter((frame) => !(frame.type === 'delta' && frame.seq > seen)), fresh.frames]);
      assert.equal(rebuilt.text, reference);
      assert.equal(fresh.terminalsFor(id).length, 1);
      const moved = await old.terminal(id);
      assert.equal(moved.type === 'error' && moved.code, 'resumed_elsewhere');
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal(old.terminalsFor(id).length, 1, 'each socket sees one terminal frame for the id');
      assert.equal(old.framesFor(id).at(-1), moved, 'nothing after it on the old socket');
      assert.ok(oldFrames.length >= 1);
    });

    test('a cancel after resuming stops the reply with one cancelled frame', async () => {
      const token = await server.token('canceller');
      const first = await server.connect(token);
      engine.gate.hold(2);
      const id = first.send(PROMPT);
      await first.waitForType('delta', id);
      first.drop();
      const second = await server.connect(token);
      second.sendFrame({ type: 'resume', id, after: lastSeq(first, id) });
      await second.waitForType('resumed', id);
      second.cancel(id);
      const terminal = await second.terminal(id);
      assert.equal(terminal.type, 'cancelled');
      await server.started.server.chat.scheduler.whenIdle();
      assert.equal(second.terminalsFor(id).length, 1);
    });

    test('resume.after past the last delta sent is refused without ending the reply', async () => {
      const token = await server.token('future');
      const first = await server.connect(token);
      const id = first.send(PROMPT);
      await first.waitForType('delta', id);
      first.drop();
      await waitUntil(() => server.started.server.chat.liveCount === 0);
      const second = await server.connect(token);
      second.sendFrame({ type: 'resume', id, after: 1_000_000 });
      const error = await second.waitFor((frame) => frame.type === 'error');
      assert.equal(error.type === 'error' && error.code, 'bad_frame');
      assert.equal(error.type === 'error' && error.id, undefined);
      second.sendFrame({ type: 'resume', id, after: -1 });
      assert.equal((await second.terminal(id)).type, 'done');
    });

    test('an unknown id gets resume_unavailable as its terminal frame', async () => {
      const client = await server.client('nobody');
      client.sendFrame({ type: 'resume', id: 'never-sent', after: -1 });
      const terminal = await client.terminal('never-sent');
      assert.equal(terminal.type === 'error' && terminal.code, 'resume_unavailable');
    });

    test('conversations survive reconnects for their owner, who can list them and open them again', async () => {
      const token = await server.token('returning');
      const first = await server.connect(token);
      const id = first.send('the first message of a conversation');
      const accepted = await first.waitForType('accepted', id);
      await first.terminal(id);
      first.close();

      const second = await server.connect(token);
      second.sendFrame({ type: 'list_conversations' });
      const list = await second.waitForType('conversations');
      const item = list.items.find((entry) => entry.id === accepted.conversationId);
      assert.ok(item, 'the conversation is listed');
      assert.equal(item.title, 'the first message of a conversation');
      assert.equal(item.turns, 2);
      second.sendFrame({ type: 'get_conversation', conversationId: accepted.conversationId });
      const opened = await second.waitForType('conversation');
      assert.deepEqual(
        opened.turns.map((turn) => turn.role),
        ['user', 'assistant'],
      );
      assert.equal(opened.turns[1]?.text, first.replyText(id));
      // It can be continued on the new socket.
      const next = second.send('and a follow-up', accepted.conversationId);
      assert.equal((await second.terminal(next)).type, 'done');

      const other = await server.client('someone-else');
      other.sendFrame({ type: 'list_conversations' });
      assert.equal((await other.waitForType('conversations')).items.length, 0);
      other.sendFrame({ type: 'get_conversation', conversationId: accepted.conversationId });
      const refused = await other.waitFor((frame) => frame.type === 'error');
      assert.equal(refused.type === 'error' && refused.code, 'conversation_not_found');
    });
  });

  describe(`the resume grace period over ${transport}`, () => {
    let engine: GatedEngine;
    let server: TestServer;
    before(async () => {
      engine = await loadGatedTinyEngine({ slots: 1 });
      server = await startTestServer(transport, engine, { generationTimeoutMs: 60_000, resumeGraceMs: 400 });
    });
    // Every reply here streams a little, then runs until it is stopped.
    beforeEach(() => engine.gate.hold(2));
    afterEach(() => engine.gate.open());
    after(async () => {
      await server.stop();
      await engine.dispose();
    });

    test('a dropped reply keeps its slot during the grace period, then is cancelled and frees it', async () => {
      const token = await server.token('gone');
      const first = await server.connect(token);
      const id = first.send(PROMPT);
      await first.waitForType('delta', id);
      first.drop();
      await waitUntil(() => server.started.server.chat.detached.size === 1);
      assert.equal(server.started.server.chat.scheduler.activeCount, 1, 'still generating during the grace period');
      await waitUntil(() => server.started.server.chat.scheduler.activeCount === 0, 10_000);
      assert.equal(server.started.server.chat.detached.size, 0);

      const late = await server.connect(token);
      late.sendFrame({ type: 'resume', id, after: -1 });
      const terminal = await late.terminal(id);
      assert.equal(terminal.type === 'error' && terminal.code, 'resume_unavailable');

      // The freed slot serves the next request.
      engine.gate.allow(1);
      const next = 'after-grace';
      late.sendFrame({ type: 'send', id: next, text: 'next' });
      await late.waitForType('delta', next);
      late.cancel(next);
      const stopped = await late.terminal(next);
      assert.equal(stopped.type, 'cancelled', JSON.stringify(stopped));
    });
  });

  describe(`the resume buffer bound over ${transport}`, () => {
    let engine: GatedEngine;
    let server: TestServer;
    before(async () => {
      engine = await loadGatedTinyEngine({ slots: 1 });
      // A whole reply is far more than 2048 bytes of text (about 7 bytes a token).
      server = await startTestServer(transport, engine, { maxTokens: 1000, generationTimeoutMs: 60_000, resumeGraceMs: 20_000, maxReplyBytes: 2048 });
    });
    afterEach(() => engine.gate.open());
    after(async () => {
      await server.stop();
      await engine.dispose();
    });

    test('a dropped reply that outgrows maxReplyBytes is cancelled and its slot freed', async () => {
      const token = await server.token('wordy');
      const first = await server.connect(token);
      // Dropped while it is still short, the reply outgrows the buffer only once detached.
      engine.gate.hold(2);
      const id = first.send(PROMPT);
      await first.waitForType('delta', id);
      first.drop();
      await waitUntil(() => server.started.server.chat.detached.size === 1);
      engine.gate.open();
      await waitUntil(() => server.started.server.chat.scheduler.activeCount === 0, 10_000);
      const late = await server.connect(token);
      late.sendFrame({ type: 'resume', id, after: -1 });
      const terminal = await late.terminal(id);
      assert.equal(terminal.type === 'error' && terminal.code, 'resume_unavailable');
    });
  });
}
