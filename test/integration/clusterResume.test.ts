import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { SIGNING_KEY_FILE } from '../../server/auth/loadOrCreateSigningKey.js';
import { replyStreamKey } from '../../server/cluster/RedisReplyRelay.js';
import type { ConfigInput } from '../../server/config.js';
import { assembleReply } from '../helpers/assembleReply.js';
import type { GatedEngine } from '../helpers/GatedEngine.js';
import { hasRedis, startRedis, type TestRedis } from '../helpers/startRedis.js';
import { loadGatedTinyEngine, startTestServer, TRANSPORTS, type TestServer } from '../helpers/startTestServer.js';
import type { TestClient } from '../helpers/TestClient.js';
import { waitUntil } from '../helpers/waitUntil.js';

/** Longer than every cut below: the gate, not the length, keeps a reply running. */
const REPLY_TOKENS = 300;
const PROMPT = 'tell me the whole story';

function skipReason(): string | false {
  if (hasRedis()) return false;
  if (process.env.CI) throw new Error('clusterResume.test.ts needs redis-server; .ci/run installs it');
  return 'needs redis-server (apt-get install redis-server)';
}

/** Whether gateway `server` handed its reply `id` to a follower on another gateway. */
function claimed(server: TestServer, id: string): boolean {
  return server.logs.records.some((record) => record.event === 'reply_claimed' && record.req === id);
}

function lastSeq(client: TestClient, id: string): number {
  return assembleReply(id, [client.frames]).lastSeq;
}

/**
 * Two gateways in this process sharing one Redis and one signing key: a token from one opens a
 * socket on the other. They serve the same gated engine; only gateway A runs replies here.
 */
async function startPair(transport: string, engine: GatedEngine, redis: TestRedis, overrides: ConfigInput): Promise<{ a: TestServer; b: TestServer }> {
  const a = await startTestServer(transport, engine, { maxTokens: REPLY_TOKENS, generationTimeoutMs: 60_000, redis: redis.url, ...overrides });
  const b = await startTestServer(transport, engine, { maxTokens: REPLY_TOKENS, generationTimeoutMs: 60_000, redis: redis.url, signingKeyFile: join(a.dataDir, SIGNING_KEY_FILE), ...overrides });
  return { a, b };
}

describe('resuming a reply on another gateway (--redis)', { skip: skipReason() }, () => {
  let engine: GatedEngine;
  let redis: TestRedis;
  let inspect: Redis;
  before(async () => {
    engine = await loadGatedTinyEngine({ slots: 2, contextSize: 4096 });
    redis = await startRedis();
    inspect = new Redis(redis.url);
  });
  afterEach(() => engine.gate.open());
  after(async () => {
    inspect.disconnect();
    await redis.close();
    await engine.dispose();
  });

  for (const transport of TRANSPORTS) {
    describe(`over ${transport}`, () => {
      let a: TestServer;
      let b: TestServer;
      let reference: string;
      before(async () => {
        ({ a, b } = await startPair(transport, engine, redis, { resumeGraceMs: 20_000 }));
        const client = await a.client('reference');
        const id = client.send(PROMPT);
        assert.equal((await client.terminal(id)).type, 'done');
        reference = client.replyText(id);
        client.close();
      });
      after(async () => {
        await b.stop();
        await a.stop();
      });

      test('a reply dropped from gateway A is resumed on gateway B: every seq after `after` once, live, then done', async () => {
        const token = await a.token('traveller');
        const first = await a.connect(token);
        engine.gate.hold(4);
        const id = first.send(PROMPT);
        await first.waitFor((frame) => frame.type === 'delta' && frame.id === id && frame.seq >= 3);
        first.drop();
        const seen = lastSeq(first, id);
        // Text made while nobody listens waits uncommitted on A; B must get it too.
        await waitUntil(() => a.started.server.chat.detached.size === 1);
        engine.gate.allow(3);
        await engine.gate.stalled();

        const second = await b.connect(token);
        second.sendFrame({ type: 'resume', id, after: seen });
        const resumed = await second.waitForType('resumed', id);
        assert.equal(resumed.after, seen);
        assert.equal(resumed.conversationId, (await first.waitForType('accepted', id)).conversationId);
        assert.equal(second.terminalsFor(id).length, 0, 'the reply is still running when it is resumed');
        engine.gate.open();
        assert.equal((await second.terminal(id)).type, 'done');
        const deltas = second.framesFor(id).filter((frame) => frame.type === 'delta');
        assert.equal(deltas[0]?.type === 'delta' && deltas[0].seq, seen + 1, 'B starts right after `after`');
        // assembleReply throws on any gap or duplicate.
        const rebuilt = assembleReply(id, [first.frames, second.frames]);
        assert.equal(rebuilt.text, reference);
        assert.equal(rebuilt.terminals.length, 1);
        assert.equal(second.framesFor(id).at(-1)?.type, 'done', 'nothing after the terminal frame');
        await waitUntil(() => a.started.server.chat.liveCount === 0);
        assert.ok(b.logs.records.some((record) => record.event === 'reply_resumed' && record.remote === true));
        assert.ok(!b.logs.contains(reference.slice(0, 40)) && !a.logs.contains(reference.slice(0, 40)), 'no reply text in the logs');
      });

      test('a reply that finished while its owner was away is replayed in full on the other gateway', async () => {
        const token = await a.token('sleeper');
        const first = await a.connect(token);
        const id = first.send(PROMPT);
        await first.waitForType('delta', id);
        first.drop();
        await waitUntil(() => a.started.server.chat.liveCount === 0);
        const second = await b.connect(token);
        second.sendFrame({ type: 'resume', id, after: -1 });
        assert.equal((await second.terminal(id)).type, 'done');
        assert.equal(assembleReply(id, [second.frames]).text, reference);
        assert.equal(second.framesFor(id)[0]?.type, 'resumed');
      });

      test("another user's reply cannot be resumed on the other gateway: resume_unavailable, and the reply is untouched", async () => {
        const token = await a.token('owner');
        const first = await a.connect(token);
        engine.gate.hold(2);
        const id = first.send(PROMPT);
        await first.waitForType('delta', id);
        first.drop();
        const seen = lastSeq(first, id);

        const stranger = await b.client('stranger');
        stranger.sendFrame({ type: 'resume', id, after: -1 });
        const refused = await stranger.terminal(id);
        assert.equal(refused.type === 'error' && refused.code, 'resume_unavailable');
        assert.equal(stranger.framesFor(id).length, 1, 'nothing but the refusal');
        const unknown = await b.client('nobody');
        unknown.sendFrame({ type: 'resume', id: 'never-sent', after: -1 });
        const none = await unknown.terminal('never-sent');
        assert.equal(none.type === 'error' && none.code, 'resume_unavailable');

        const back = await b.connect(token);
        back.sendFrame({ type: 'resume', id, after: 1_000_000 });
        const beyond = await back.waitFor((frame) => frame.type === 'error');
        assert.equal(beyond.type === 'error' && beyond.code, 'bad_frame', '`after` beyond the last seq, as locally');
        assert.equal(beyond.type === 'error' && beyond.id, undefined);
        back.sendFrame({ type: 'resume', id, after: seen });
        await back.waitForType('resumed', id);
        engine.gate.open();
        assert.equal((await back.terminal(id)).type, 'done');
        assert.equal(assembleReply(id, [first.frames, back.frames]).text, reference);
      });

      test('a cancel on gateway B stops the reply on gateway A: one cancelled frame, and A frees the slot', async () => {
        const token = await a.token('canceller');
        const first = await a.connect(token);
        engine.gate.hold(2);
        const id = first.send(PROMPT);
        await first.waitForType('delta', id);
        first.drop();
        const second = await b.connect(token);
        second.sendFrame({ type: 'resume', id, after: lastSeq(first, id) });
        await second.waitForType('resumed', id);
        assert.equal(a.started.server.chat.liveCount, 1);
        second.cancel(id);
        const terminal = await second.terminal(id);
        assert.equal(terminal.type, 'cancelled');
        await waitUntil(() => a.started.server.chat.liveCount === 0);
        const user = (await first.waitForType('ready')).user.id;
        const finished = a.logs.records.find((record) => record.msg === 'generation finished' && record.req === id && record.user === user);
        assert.equal(finished?.reason, 'cancel', "stopped by B's cancel, not by A's grace period");
        await a.started.server.chat.scheduler.whenIdle();
        assert.equal(a.started.server.chat.scheduler.activeCount, 0);
        await sleep(50);
        assert.equal(second.terminalsFor(id).length, 1);
      });

      test('resumed on gateway A again while B follows: B gets resumed_elsewhere, A the rest', async () => {
        const token = await a.token('tabs');
        const first = await a.connect(token);
        engine.gate.hold(3);
        const id = first.send(PROMPT);
        await first.waitFor((frame) => frame.type === 'delta' && frame.id === id && frame.seq >= 2);
        first.drop();
        const onB = await b.connect(token);
        onB.sendFrame({ type: 'resume', id, after: lastSeq(first, id) });
        await onB.waitForType('resumed', id);
        await waitUntil(() => claimed(a, id), 10_000, 'A sees the claim');

        const again = await a.connect(token);
        const seen = assembleReply(id, [first.frames, onB.frames]).lastSeq;
        again.sendFrame({ type: 'resume', id, after: seen });
        await again.waitForType('resumed', id);
        const moved = await onB.terminal(id);
        assert.equal(moved.type === 'error' && moved.code, 'resumed_elsewhere');
        engine.gate.open();
        assert.equal((await again.terminal(id)).type, 'done');
        assert.equal(assembleReply(id, [first.frames, onB.frames.filter((frame) => frame.type !== 'error'), again.frames]).text, reference);
        await sleep(50);
        assert.equal(onB.terminalsFor(id).length, 1, 'nothing more on B after resumed_elsewhere');
      });
    });
  }

  describe('the grace period across gateways', () => {
    const GRACE_MS = 1500;
    let a: TestServer;
    let b: TestServer;
    before(async () => {
      ({ a, b } = await startPair(TRANSPORTS[0] ?? 'ws', engine, redis, { resumeGraceMs: GRACE_MS }));
    });
    after(async () => {
      await b.stop();
      await a.stop();
    });

    test("a reply followed from B outlives A's grace period; when B's socket drops the grace applies again; then the stream expires", async () => {
      const token = await a.token('follower');
      const first = await a.connect(token);
      engine.gate.hold(2);
      const id = first.send(PROMPT);
      await first.waitFor((frame) => frame.type === 'delta' && frame.id === id && frame.seq >= 1);
      first.drop();
      const key = replyStreamKey((await first.waitForType('ready')).user.id, id);
      assert.equal(await inspect.exists(key), 1, 'the reply is copied to its stream');

      const second = await b.connect(token);
      second.sendFrame({ type: 'resume', id, after: lastSeq(first, id) });
      await second.waitForType('resumed', id);
      await waitUntil(() => claimed(a, id), 10_000, 'A sees the claim');
      await sleep(GRACE_MS * 2);
      assert.equal(a.started.server.chat.liveCount, 1, 'A keeps running the reply B follows');
      assert.equal(second.terminalsFor(id).length, 0);

      second.drop();
      await waitUntil(() => a.started.server.chat.detached.size === 1, 10_000, 'A sees the drop');
      await waitUntil(() => a.started.server.chat.liveCount === 0, GRACE_MS * 10, 'A cancels it after the grace period');
      assert.equal(a.started.server.chat.scheduler.activeCount, 0);
      const gone = Date.now() + GRACE_MS * 10;
      while ((await inspect.exists(key)) === 1) {
        assert.ok(Date.now() < gone, 'the stream expires after the grace period');
        await sleep(50);
      }
      const late = await b.connect(token);
      late.sendFrame({ type: 'resume', id, after: -1 });
      const terminal = await late.terminal(id);
      assert.equal(terminal.type === 'error' && terminal.code, 'resume_unavailable');
    });
  });

  describe('the resume buffer bound across gateways', () => {
    let a: TestServer;
    let b: TestServer;
    before(async () => {
      // A whole reply is far more than 2048 bytes of text (about 7 bytes a token).
      ({ a, b } = await startPair(TRANSPORTS[0] ?? 'ws', engine, redis, { resumeGraceMs: 20_000, maxTokens: 1000, maxReplyBytes: 2048 }));
    });
    after(async () => {
      await b.stop();
      await a.stop();
    });

    test('a reply past maxReplyBytes is no longer copied: its stream is deleted and B answers resume_unavailable', async () => {
      const token = await a.token('wordy');
      const first = await a.connect(token);
      const id = first.send(PROMPT);
      assert.equal((await first.terminal(id)).type, 'done');
      assert.ok(Buffer.byteLength(first.replyText(id)) > 2048, 'the reply outgrew the buffer');
      const key = replyStreamKey((await first.waitForType('ready')).user.id, id);
      assert.equal(await inspect.exists(key), 0);
      first.drop();
      const second = await b.connect(token);
      second.sendFrame({ type: 'resume', id, after: -1 });
      const terminal = await second.terminal(id);
      assert.equal(terminal.type === 'error' && terminal.code, 'resume_unavailable');
    });
  });
});
