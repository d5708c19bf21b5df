import { ModelPool } from '../../server/models/ModelPool.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import pino from 'pino';
import { AbortReason } from '../../server/chat/AbortReason.js';
import { ChatCore, type AdmissionListener, type ChatRequest } from '../../server/chat/ChatCore.js';
import { Conversations } from '../../server/chat/Conversations.js';
import type { Reply } from '../../server/chat/Reply.js';
import { loadConfig, type ConfigInput } from '../../server/config.js';
import { MessageOutcome } from '../../server/history/ConversationRepository.js';
import { MemoryConversationRepository } from '../../server/history/MemoryConversationRepository.js';
import { Limiters } from '../../server/limits/Limiters.js';
import { Metrics } from '../../server/metrics/Metrics.js';
import { GatedEngine } from '../helpers/GatedEngine.js';
import { ScriptedEngine } from '../helpers/ScriptedEngine.js';

const log = pino({ level: 'silent' });

/** A chat core over the scripted engine (behind a gate), real limiters and a memory store. */
function setup(overrides: ConfigInput = {}, engineOptions: { slots?: number; replyWords?: number } = {}) {
  const config = loadConfig({ maxTokens: 20, resumeGraceMs: 0, ...overrides });
  const scripted = new ScriptedEngine(engineOptions.slots ?? 2, engineOptions.replyWords ?? 5);
  const engine = new GatedEngine(scripted);
  const repository = new MemoryConversationRepository();
  const limiters = new Limiters(config);
  const conversations = new Conversations(repository, { maxTurns: config.maxTurnsPerConversation, maxPerUser: config.maxConversationsPerUser, maxCached: 100 });
  const core = new ChatCore(config, { models: ModelPool.single(engine, 'scripted'), limiters, metrics: new Metrics(), conversations, checkpointMs: 60_000 });
  return { core, engine, scripted, repository, limiters };
}

/** A listener that records every event, in order, as short strings. */
function recorder() {
  const events: string[] = [];
  const texts: string[] = [];
  let ended!: (reply: Reply) => void;
  const end = new Promise<Reply>((resolve) => { ended = resolve; });
  const listener: AdmissionListener = {
    accepted: (reply) => events.push(`accepted ${reply.conversationId.slice(0, 2)}`),
    queued: (_reply, position) => events.push(`queued ${position}`),
    textPending: (reply) => {
      const taken = reply.takePending();
      if (taken) texts.push(taken.text);
    },
    ended: (reply) => {
      events.push(`ended ${reply.outcome?.kind}`);
      ended(reply);
    },
    released: () => events.push('released'),
  };
  return { listener, events, texts, end };
}

let ids = 0;
function request(overrides: Partial<ChatRequest> = {}): ChatRequest {
  ids++;
  return { id: `r${ids}`, userId: 'u_a', budgetKeys: ['u_a'], text: 'hello there', log, ...overrides };
}

describe('the chat core', () => {
  test('an accepted request gets accepted, its text, then exactly one outcome; the exchange is stored', async () => {
    const { core, repository } = setup();
    const seen = recorder();
    const submitted = await core.submit(request(), seen.listener);
    assert.ok(submitted.ok);
    const reply = await seen.end;
    assert.deepEqual(seen.events, ['accepted c_', 'ended finished']);
    assert.equal(seen.texts.join(''), 'w0 w1 w2 w3 w4');
    assert.equal(reply.outcome?.kind === 'finished' && reply.outcome.stopReason, 'eos');
    await core.shutdown(0);
    const messages = await repository.listMessages('u_a', reply.conversationId);
    assert.deepEqual(messages.map((message) => [message.role, message.text, message.outcome]), [
      ['user', 'hello there', undefined],
      ['assistant', 'w0 w1 w2 w3 w4', MessageOutcome.done],
    ]);
    assert.equal(core.liveCount, 0);
  });

  test('a refused request gets its error as its only answer, and a refusal by a limit costs no planning', async () => {
    const { core, scripted } = setup({ generationsPerMinute: 1 });
    const first = recorder();
    assert.ok((await core.submit(request(), first.listener)).ok);
    await first.end;
    const plans = scripted.generations.length;
    const second = recorder();
    const refused = await core.submit(request({ text: 'again' }), second.listener);
    assert.equal(refused.ok, false);
    assert.equal(!refused.ok && refused.error.code, 'rate_limited');
    assert.ok(!refused.ok && (refused.error.retryAfterMs ?? 0) > 0);
    assert.deepEqual(second.events, [], 'no event for a refused request');
    assert.equal(scripted.generations.length, plans);
    await core.shutdown(0);
  });

  test('the token budget reserves the worst case and refunds what the reply did not use', async () => {
    // Each request reserves prompt (3) + maxTokens (20) = 23 of 40; a finished 5-word reply refunds 15.
    const { core } = setup({ tokensPerHour: 40 });
    for (let round = 0; round < 3; round++) {
      const seen = recorder();
      const submitted = await core.submit(request(), seen.listener);
      assert.ok(submitted.ok, `round ${round} fits after the refunds`);
      await seen.end;
    }
    await core.shutdown(0);
  });

  test('a cancel while queued ends the request at once, and it never runs', async () => {
    const { core, engine, scripted } = setup({}, { slots: 1 });
    engine.gate.hold();
    const running = recorder();
    assert.ok((await core.submit(request(), running.listener)).ok);
    const waiting = recorder();
    const controller = new AbortController();
    const submitted = await core.submit(request({ text: 'second', signal: controller.signal }), waiting.listener);
    assert.ok(submitted.ok);
    assert.deepEqual(waiting.events, ['accepted c_', 'queued 1']);
    controller.abort();
    await waiting.end;
    assert.deepEqual(waiting.events, ['accepted c_', 'queued 1', 'ended cancelled']);
    assert.equal(scripted.generations.filter((generation) => generation.text === 'second').length, 0);
    engine.gate.open();
    await running.end;
    await core.shutdown(0);
  });

  test('a cancel during planning (before admission) refuses the request and gives its tokens back', async () => {
    const { core, limiters } = setup({ tokensPerHour: 30 });
    const controller = new AbortController();
    const reserve = limiters.reserveTokens.bind(limiters);
    limiters.reserveTokens = async (keys, tokens) => {
      const decision = await reserve(keys, tokens);
      controller.abort();
      return decision;
    };
    const seen = recorder();
    const refused = await core.submit(request({ signal: controller.signal }), seen.listener);
    assert.equal(refused.ok, false);
    limiters.reserveTokens = reserve;
    // Had the 23 reserved tokens not been given back, this second reservation would not fit in 30.
    const again = recorder();
    assert.ok((await core.submit(request(), again.listener)).ok);
    await again.end;
    await core.shutdown(0);
  });

  test('a cancel during the prompt ends the request as cancelled, with no text', async () => {
    const { core, scripted } = setup();
    scripted.holdPrompts = true;
    const controller = new AbortController();
    const seen = recorder();
    assert.ok((await core.submit(request({ signal: controller.signal }), seen.listener)).ok);
    while (scripted.generations.length === 0) await new Promise((resolve) => setImmediate(resolve));
    controller.abort();
    const reply = await seen.end;
    assert.equal(reply.outcome?.kind, 'cancelled');
    assert.deepEqual(seen.texts, []);
    await core.shutdown(0);
  });

  test('a cancel while generating keeps the text so far, stored as stopped', async () => {
    const { core, engine, repository } = setup();
    engine.gate.hold(2);
    const controller = new AbortController();
    const seen = recorder();
    assert.ok((await core.submit(request({ signal: controller.signal }), seen.listener)).ok);
    await engine.gate.stalled();
    controller.abort();
    const reply = await seen.end;
    assert.equal(reply.outcome?.kind, 'cancelled');
    assert.equal(seen.texts.join(''), 'w0 w1');
    await core.shutdown(0);
    const messages = await repository.listMessages('u_a', reply.conversationId);
    assert.deepEqual(messages.map((message) => [message.text, message.outcome]).at(-1), ['w0 w1', MessageOutcome.stopped]);
  });

  test('a disconnect with no grace period cancels the running reply and frees its slot', async () => {
    const { core, engine } = setup();
    engine.gate.hold(1);
    const seen = recorder();
    assert.ok((await core.submit(request(), seen.listener)).ok);
    await engine.gate.stalled();
    core.replies.detachAll(seen.listener);
    await core.scheduler.whenIdle();
    assert.equal(core.liveCount, 0);
    assert.equal(core.scheduler.activeCount, 0);
    engine.gate.open();
    await core.shutdown(0);
  });

  test('shutdown ends every admitted request, running or queued, with shutting_down, and refuses new ones', async () => {
    const { core, engine } = setup({}, { slots: 1 });
    engine.gate.hold(1);
    const running = recorder();
    const queued = recorder();
    assert.ok((await core.submit(request(), running.listener)).ok);
    assert.ok((await core.submit(request({ text: 'b' }), queued.listener)).ok);
    await core.shutdown(0);
    for (const { end } of [running, queued]) {
      const reply = await end;
      assert.equal(reply.outcome?.kind === 'failed' && reply.outcome.error.code, 'shutting_down');
    }
    assert.deepEqual(queued.events.filter((event) => event.startsWith('ended')), ['ended failed']);
    const late = await core.submit(request(), recorder().listener);
    assert.equal(!late.ok && late.error.code, 'shutting_down');
  });

  test('an engine failure ends that request with engine_error, stored as error, and the conversation stays usable', async () => {
    const { core, scripted, repository } = setup();
    scripted.failAfter = 2;
    const seen = recorder();
    assert.ok((await core.submit(request(), seen.listener)).ok);
    const reply = await seen.end;
    assert.equal(reply.outcome?.kind === 'failed' && reply.outcome.error.code, 'engine_error');
    const next = recorder();
    assert.ok((await core.submit(request({ conversationId: reply.conversationId, text: 'again' }), next.listener)).ok);
    await next.end;
    await core.shutdown(0);
    const outcomes = (await repository.listMessages('u_a', reply.conversationId)).map((message) => message.outcome);
    assert.deepEqual(outcomes, [undefined, MessageOutcome.error, undefined, MessageOutcome.done]);
    // The failed exchange is kept for the record but not sent to the model again.
    assert.deepEqual(scripted.generations.at(-1)?.history, []);
  });

  test('a conversation continues with its earlier turns, each counted once however many sends follow', async () => {
    const { core, scripted } = setup();
    let conversationId: string | undefined;
    for (let turn = 0; turn < 4; turn++) {
      const seen = recorder();
      const submitted = await core.submit(request({ text: `message ${turn}`, ...(conversationId ? { conversationId } : {}) }), seen.listener);
      assert.ok(submitted.ok);
      conversationId = (await seen.end).conversationId;
    }
    assert.equal(scripted.generations.at(-1)?.history.length, 6, 'three earlier exchanges in the prompt');
    assert.equal(scripted.turnCounts, 6, 'each earlier turn was counted once');
    await core.shutdown(0);
  });

  test('another user cannot continue, or even find, a conversation', async () => {
    const { core } = setup();
    const seen = recorder();
    assert.ok((await core.submit(request(), seen.listener)).ok);
    const { conversationId } = await seen.end;
    const stranger = await core.submit(request({ userId: 'u_b', budgetKeys: ['u_b'], conversationId }), recorder().listener);
    assert.equal(!stranger.ok && stranger.error.code, 'conversation_not_found');
    await core.shutdown(0);
  });

  test('a second request to a busy conversation is refused with conversation_busy', async () => {
    const { core, engine } = setup();
    engine.gate.hold(1);
    const first = recorder();
    const submitted = await core.submit(request(), first.listener);
    assert.ok(submitted.ok);
    const busy = await core.submit(request({ conversationId: submitted.reply.conversationId }), recorder().listener);
    assert.equal(!busy.ok && busy.error.code, 'conversation_busy');
    submitted.reply.controller.abort(AbortReason.cancel);
    await first.end;
    engine.gate.open();
    await core.shutdown(0);
  });
});

describe('regenerating', () => {
  test('a regenerated reply is prompted with the history before the exchange it replaces, and replaces it in the store', async () => {
    const { core, scripted, repository } = setup();
    let conversationId: string | undefined;
    for (const text of ['one', 'two']) {
      const seen = recorder();
      assert.ok((await core.submit(request({ text, ...(conversationId ? { conversationId } : {}) }), seen.listener)).ok);
      conversationId = (await seen.end).conversationId;
    }
    const again = recorder();
    assert.ok((await core.submit(request({ text: 'two', conversationId, regenerate: true }), again.listener)).ok);
    await again.end;
    assert.deepEqual(scripted.generations.at(-1)?.history.map((turn) => turn.text), ['one', 'w0 w1 w2 w3 w4']);
    await core.shutdown(0);
    const stored = await repository.listMessages('u_a', conversationId as string);
    assert.deepEqual(stored.map((message) => message.text), ['one', 'w0 w1 w2 w3 w4', 'two', 'w0 w1 w2 w3 w4']);
  });
});

describe('a caller that brings its own history (a stateless API)', () => {
  test('is prompted with that history and its temperature, and nothing is stored', async () => {
    const { core, scripted, repository } = setup();
    const seen = recorder();
    const history = [{ role: 'user', text: 'earlier' }, { role: 'assistant', text: 'answer' }] as const;
    assert.ok((await core.submit(request({ history, options: { temperature: 0.3 } }), seen.listener)).ok);
    const reply = await seen.end;
    assert.equal(reply.outcome?.kind, 'finished');
    assert.match(reply.conversationId, /^x_/);
    assert.deepEqual(scripted.generations.at(-1)?.history.map((turn) => turn.text), ['earlier', 'answer']);
    assert.equal(scripted.generations.at(-1)?.options?.temperature, 0.3);
    assert.deepEqual(await repository.listConversations('u_a'), []);
    await core.shutdown(0);
  });

  test('a history together with a conversation, or a temperature out of range, is refused', async () => {
    const { core } = setup();
    const both = await core.submit(request({ history: [], conversationId: 'c_x' }), recorder().listener);
    assert.equal(!both.ok && both.error.code, 'bad_request');
    const hot = await core.submit(request({ options: { temperature: 3 } }), recorder().listener);
    assert.equal(!hot.ok && hot.error.code, 'bad_request');
    await core.shutdown(0);
  });
});
