import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { UserStore } from '../../server/auth/UserStore.js';
import type { ConfigInput } from '../../server/config.js';
import type { Reply } from '../../server/chat/Reply.js';
import type { GatedEngine } from '../helpers/GatedEngine.js';
import { loadGatedTinyEngine, startTestServer, TEST_INVITE, type TestServer } from '../helpers/startTestServer.js';
import { TcpProxy } from '../helpers/TcpProxy.js';
import { waitUntil } from '../helpers/waitUntil.js';
import { closeAndCheck, connected, LAN_HOST, lastReplyStatus, launchChromium, openPage, typeAndSend, type GuardedPage } from './browser.js';

/**
 * "Nothing lost": the web client in Chromium, with the network between it and Parley cut by
 * a TCP proxy (every connection reset at once, as when Wi-Fi drops). The tiny model decodes
 * greedily, so the same prompt in a fresh conversation always gets the same reply: a reply cut
 * and resumed must come out exactly as one that never was.
 *
 * The engine is behind a Gate (see test/helpers/Gate.ts): a test that must act while a reply is
 * still running holds the gate, so the reply is running however fast the machine is, and opens
 * it once the reply may end. The tiny model never ends a reply on its own, so every reply runs
 * to maxTokens: a short reply is enough, the gate and not the length keeps one running.
 */

const SERVER_CONFIG: ConfigInput = {
  /** About 1,300 characters: longer than every cut below (the most passes 70 pieces before a cut). */
  maxTokens: 200,
  generationTimeoutMs: 60_000,
  // Every page comes from 127.0.0.1: lift the per-IP limits meant for real networks.
  tokenRequestsPerMinute: 1000,
  upgradesPerMinute: 1000,
};
const PROMPT = 'Tell me about the harbor at night';
const PASSWORD = 'dana-pass-PARLEY-3141';

let engine: GatedEngine;
let browser: Browser;
let opened: GuardedPage[] = [];

before(async () => {
  [engine, browser] = await Promise.all([loadGatedTinyEngine({ slots: 2, contextSize: 2048 }), launchChromium()]);
});

after(async () => {
  await browser?.close();
  await engine?.dispose();
});

afterEach(async () => {
  // A test that failed with the gate held must not leave the next one hanging.
  engine.gate.open();
  const pages = opened;
  opened = [];
  await closeAndCheck(pages);
});

interface Behind {
  readonly server: TestServer;
  readonly proxy: TcpProxy;
  /** The page's origin: through the proxy. */
  readonly origin: string;
  stop(): Promise<void>;
}

/** A Parley reached through a TcpProxy at http://parley.test:<proxy port>. */
async function startBehindProxy(overrides: ConfigInput = {}): Promise<Behind> {
  const proxy = await TcpProxy.start();
  const server = await startTestServer('uws', engine, { ...SERVER_CONFIG, allowedHosts: [`${LAN_HOST}:${proxy.port}`, LAN_HOST], ...overrides });
  proxy.target = server.started.port;
  return {
    server,
    proxy,
    origin: `http://${LAN_HOST}:${proxy.port}`,
    async stop() {
      await proxy.close();
      await server.stop();
    },
  };
}

interface Watched extends GuardedPage {
  /** Console errors (a gap in a reply's seqs is logged as one). */
  readonly consoleErrors: string[];
  /** Every frame the page sent on any of its sockets, parsed. */
  readonly sent: Array<Record<string, unknown>>;
  /** Every frame the page received on any of its sockets, parsed. */
  readonly received: Array<Record<string, unknown>>;
}

/** A page in a fresh context, with its console errors and socket frames kept. */
async function open(origin: string): Promise<Watched> {
  const guarded = await openPage(browser, origin);
  opened.push(guarded);
  const consoleErrors: string[] = [];
  const sent: Array<Record<string, unknown>> = [];
  const received: Array<Record<string, unknown>> = [];
  guarded.page.on('console', (message) => {
    if (message.type() === 'error') consoleErrors.push(message.text());
  });
  guarded.page.on('websocket', (socket) => {
    socket.on('framesent', ({ payload }) => {
      if (typeof payload === 'string') sent.push(JSON.parse(payload) as Record<string, unknown>);
    });
    socket.on('framereceived', ({ payload }) => {
      if (typeof payload === 'string') received.push(JSON.parse(payload) as Record<string, unknown>);
    });
  });
  return { ...guarded, consoleErrors, sent, received };
}

/** Joins through the invite link. */
async function join(origin: string, name: string): Promise<Watched> {
  const guarded = await open(origin);
  await guarded.page.goto(`${origin}/#invite=${TEST_INVITE}`);
  const nameInput = guarded.page.locator('chat-join input[name=name]');
  await nameInput.fill(name);
  await nameInput.press('Enter');
  await connected(guarded.page);
  return guarded;
}

/** Signs in to a named account (there is no form for it: the page posts /api/login, which sets the cookie, and reloads). */
async function login(origin: string, name: string, password: string): Promise<Watched> {
  const guarded = await open(origin);
  await guarded.page.goto(`${origin}/`);
  await guarded.page.locator('chat-join').waitFor();
  const status = await guarded.page.evaluate(
    async (body) => {
      const response = await fetch('/api/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      // Kept as the page keeps a sign-in's binding value: the cookie alone refreshes nothing.
      const { refreshBinding } = (await response.json()) as { refreshBinding?: string };
      if (refreshBinding) localStorage.setItem('parley.v1.refreshBinding', refreshBinding);
      return response.status;
    },
    { name, password },
  );
  assert.equal(status, 200);
  await guarded.page.reload();
  await connected(guarded.page);
  return guarded;
}

async function lastReply(page: Page): Promise<{ status: string; text: string; footer: string }> {
  const reply = page.locator('chat-message[from=assistant]').last();
  return {
    status: (await reply.getAttribute('status')) ?? '',
    text: await reply.locator('.body').innerText(),
    footer: await reply.locator('footer').innerText(),
  };
}

/** The page has handled a `conversations` frame (the server's list) since it loaded, and rendered it. */
async function conversationsHandled(page: Page): Promise<void> {
  await page.waitForFunction(() => window.__parleyTest.handled('conversations') > 0, undefined, { timeout: 30_000, polling: 50 });
}

/**
 * The raw text of the open conversation's last message once the page has saved it in `status`:
 * exactly what was applied from the deltas, before any Markdown rendering.
 */
async function savedReply(page: Page, status = 'done'): Promise<string> {
  const handle = await page.waitForFunction(
    (wanted) => {
      const raw = Object.entries(localStorage).find(([key]) => key.startsWith('parley.v1.conversations.'))?.[1];
      if (!raw) return undefined;
      const state = JSON.parse(raw) as { currentId?: string; conversations: Array<{ id: string; messages: Array<{ text: string; status: string }> }> };
      const last = state.conversations.find((conversation) => conversation.id === state.currentId)?.messages.at(-1);
      return last?.status === wanted ? last.text : undefined;
    },
    status,
    { timeout: 30_000, polling: 100 },
  );
  return (await handle.jsonValue()) as string;
}

/**
 * The server's copy of the reply to the page's last message while the server keeps it for a
 * resume (its socket dropped), else undefined. Other replies may be kept too: earlier tests'.
 */
function keptReply({ sent, received }: Watched, server: TestServer): Reply | undefined {
  const user = received.findLast((frame) => frame.type === 'ready')?.user as { id: string } | undefined;
  const id = sent.findLast((frame) => frame.type === 'send')?.id;
  assert.ok(user !== undefined && typeof id === 'string', 'the page is signed in and sent a message');
  return server.started.server.chat.detached.peek(user.id, id);
}

/** The reply to PROMPT in a new conversation, straight from the server over a plain socket. */
async function serverReference(server: TestServer): Promise<string> {
  const client = await server.client('Reference');
  const id = client.send(PROMPT);
  const terminal = await client.terminal(id, 90_000);
  assert.equal(terminal.type, 'done');
  client.close();
  return client.replyText(id);
}

/** The whole reply to PROMPT in a new conversation, with nothing cut: what every resumed reply must equal. */
async function referenceReply(page: Page): Promise<string> {
  await page.locator('chat-sidebar button.new').click();
  await typeAndSend(page, PROMPT);
  await lastReplyStatus(page, 'done', 90_000);
  const reply = await lastReply(page);
  assert.match(reply.footer, /max_tokens|length limit/);
  return reply.text;
}

/** Waits until the last reply is streaming with more than `length` characters (it cannot end: the gate holds it). */
async function waitForStreamingText(page: Page, length: number): Promise<void> {
  await page.waitForFunction(
    (wanted) => {
      const reply = window.__parleyTest.lastReply();
      return reply?.status === 'streaming' && reply.text.length > wanted;
    },
    length,
    { timeout: 30_000, polling: 'raf' },
  );
}

/**
 * The conversation goes on: another message, whose reply streams (one piece through the gate) and
 * is stopped. Also a checkpoint for what the page sent before: one socket's frames are reported
 * in order, so once this message is in `sent`, every frame sent before it (a resume, say) is too.
 */
async function carryOn({ page, sent }: Watched, text: string): Promise<void> {
  engine.gate.hold(1);
  await typeAndSend(page, text);
  await waitUntil(() => sent.some((frame) => frame.type === 'send' && frame.text === text), 30_000, `the page sent "${text}"`);
  await lastReplyStatus(page, 'streaming');
  await page.keyboard.press('Escape');
  await lastReplyStatus(page, 'stopped');
}

describe('replies survive a dropped connection', () => {
  let behind: Behind;
  /** The raw text of the reply to PROMPT, never cut. */
  let reference: string;
  before(async () => {
    behind = await startBehindProxy();
    reference = await serverReference(behind.server);
  });
  afterEach(() => {
    behind.proxy.blocked = false;
  });
  after(async () => {
    await behind?.stop();
  });

  test('a reply cut off mid-stream resumes after the reconnect, with exactly the text it would have had', async () => {
    const { page, consoleErrors, sent } = await join(behind.origin, 'Roamer');
    // The same reply, uncut, as the page renders it.
    const rendered = await referenceReply(page);
    assert.ok(rendered.length > 400, `a long reference reply (${rendered.length} characters)`);
    assert.equal(await savedReply(page), reference);

    await page.locator('chat-sidebar button.new').click();
    // 25 pieces (about 160 characters), then the reply waits at the gate: the cut lands mid-reply.
    engine.gate.hold(25);
    await typeAndSend(page, PROMPT);
    await waitForStreamingText(page, 120);
    const accepted = behind.proxy.accepted;
    assert.ok(behind.proxy.cutAll() > 0, 'connections were open to cut');
    await page.waitForFunction(() => window.__parleyTest.lastReply()?.status === 'reconnecting', undefined, { timeout: 30_000, polling: 'raf' });
    const partial = await lastReply(page);
    assert.ok(partial.text.length > 100, 'the text so far stays while reconnecting');
    assert.match(partial.footer, /Reconnecting/);
    assert.ok(rendered.startsWith(partial.text), 'what arrived before the cut is the start of the reply');

    await connected(page);
    assert.ok(behind.proxy.accepted > accepted, 'a new connection');
    // Resumed (the page streams again) while the reply is still held, so still running.
    await lastReplyStatus(page, 'streaming');
    assert.equal(behind.server.started.server.chat.scheduler.activeCount, 1, 'the reply was still running when it was resumed');
    const resume = sent.find((frame) => frame.type === 'resume');
    assert.ok(resume, 'the client asked to resume');
    assert.equal(typeof resume.after, 'number');
    assert.ok((resume.after as number) >= 0, 'from the last seq it had');
    engine.gate.open();
    await lastReplyStatus(page, 'done');
    const resumed = await lastReply(page);
    assert.equal(resumed.text, rendered, 'no text lost and none repeated');
    assert.equal(await savedReply(page), reference);
    assert.match(resumed.footer, /tok\/s/);
    assert.deepEqual(
      consoleErrors.filter((text) => /gap/.test(text)),
      [],
      'no seq was skipped',
    );
    assert.equal(await page.locator('chat-message').count(), 2, 'one exchange in the conversation, nothing doubled');
  });

  test('a reply that ends while the network is down arrives whole, with its end, once it is back', async () => {
    const watched = await join(behind.origin, 'Tunnel');
    const { page } = watched;
    engine.gate.hold(12);
    await typeAndSend(page, PROMPT);
    await waitForStreamingText(page, 60);
    behind.proxy.blocked = true;
    behind.proxy.cutAll();
    await page.waitForFunction(() => window.__parleyTest.lastReply()?.status === 'reconnecting', undefined, { timeout: 30_000, polling: 'raf' });
    // The server has noticed the drop and keeps the reply, still running, for a resume.
    await waitUntil(() => keptReply(watched, behind.server) !== undefined, 30_000, 'the server kept the dropped reply');
    const kept = keptReply(watched, behind.server) as Reply;
    assert.equal(kept.finished, false, 'the reply is still running once nobody is attached');
    // The server finishes the reply with nobody attached.
    engine.gate.open();
    await waitUntil(() => kept.finished, 30_000, 'the reply finished on the server');
    assert.equal((await lastReply(page)).status, 'reconnecting');
    behind.proxy.blocked = false;
    await connected(page);
    await lastReplyStatus(page, 'done');
    assert.equal(await savedReply(page), reference);
    assert.match((await lastReply(page)).footer, /tok\/s/);
  });

  test('cut again and again: a reply dropped three times still comes out whole', async () => {
    const { page, consoleErrors, sent } = await join(behind.origin, 'Commuter');
    // 10 pieces (about 70 characters) before the first cut, 30 more (about 190) before each of
    // the others: 70 pieces in all, far from the reply's end, so it is cut three times.
    engine.gate.hold(10);
    await typeAndSend(page, PROMPT);
    let cuts = 0;
    for (let length = 60; cuts < 3; length += 150) {
      await page.waitForFunction(
        (wanted) => {
          const reply = window.__parleyTest.lastReply();
          return reply?.status === 'done' || (reply?.status === 'streaming' && reply.text.length > wanted);
        },
        length,
        { timeout: 30_000, polling: 'raf' },
      );
      if ((await lastReply(page)).status === 'done') break;
      behind.proxy.cutAll();
      cuts++;
      await page.locator('chat-header[state=reconnecting]').waitFor();
      await connected(page);
      // Resumed before the next pieces pass.
      await lastReplyStatus(page, 'streaming');
      engine.gate.allow(30);
    }
    assert.equal(cuts, 3, 'the reply was cut three times before it ended');
    engine.gate.open();
    await lastReplyStatus(page, 'done');
    assert.equal(await savedReply(page), reference);
    assert.equal(sent.filter((frame) => frame.type === 'resume').length, cuts);
    assert.deepEqual(consoleErrors.filter((text) => /gap/.test(text)), []);
  });

  test('a reply whose device dropped off is followed to its end on another device of the same account; back online, the first gets it whole too', async () => {
    await new UserStore(behind.server.dataDir).add('erin', PASSWORD);
    const laptop = await login(behind.origin, 'erin', PASSWORD);
    // The reply waits at the gate until the phone follows it, however long the phone's sign-in takes.
    engine.gate.hold(12);
    await typeAndSend(laptop.page, PROMPT);
    await waitForStreamingText(laptop.page, 60);
    behind.proxy.blocked = true;
    behind.proxy.cutAll();

    // Not through the proxy: the phone has its own network.
    const phone = await login(`http://${LAN_HOST}:${behind.server.started.port}`, 'erin', PASSWORD);
    const remote = phone.page.locator('chat-sidebar li[data-remote]');
    await remote.waitFor();
    await remote.locator('button.open').click();
    await lastReplyStatus(phone.page, 'streaming');
    assert.equal(behind.server.started.server.chat.scheduler.activeCount, 1, 'the phone follows a reply that is still running');
    assert.ok(
      phone.sent.some((frame) => frame.type === 'resume' && frame.after === -1),
      'the phone follows the reply from its first delta',
    );
    engine.gate.open();
    await lastReplyStatus(phone.page, 'done');
    assert.equal(await savedReply(phone.page), reference);

    behind.proxy.blocked = false;
    await connected(laptop.page);
    await lastReplyStatus(laptop.page, 'done');
    assert.equal(await savedReply(laptop.page), reference);
  });
  test('a page reloaded mid-reply picks the reply up again, and it ends with exactly the whole text, once', async () => {
    const { page, sent, consoleErrors } = await join(behind.origin, 'Reloader');
    // The reply waits at the gate until the reloaded page has picked it up.
    engine.gate.hold(25);
    await typeAndSend(page, PROMPT);
    await waitForStreamingText(page, 120);
    const before = sent.length;
    await page.reload();
    await connected(page);
    // The replay from the start has arrived: the reloaded page streams the reply, still running.
    await waitForStreamingText(page, 120);
    assert.equal(behind.server.started.server.chat.scheduler.activeCount, 1, 'the reply was still running when the page picked it up');
    assert.ok(
      sent.slice(before).some((frame) => frame.type === 'resume' && frame.after === -1),
      'the reloaded page resumed the reply from its first delta',
    );
    engine.gate.open();
    await lastReplyStatus(page, 'done');
    assert.equal(await savedReply(page), reference, 'no text lost and none repeated');
    assert.match((await lastReply(page)).footer, /tok\/s/);
    assert.equal(await page.locator('chat-message').count(), 2, 'one exchange in the conversation, nothing doubled');
    assert.deepEqual(consoleErrors.filter((text) => /gap/.test(text)), [], 'no seq was skipped');
    const stored = await page.evaluate(() => Object.entries(localStorage).find(([key]) => key.startsWith('parley.v1.conversations.'))?.[1] ?? '');
    assert.doesNotMatch(stored, /"requestId"/, 'a finished reply keeps no request id');
  });

  test('Stop pressed while reconnecting stops the reply as soon as the connection is back, keeping its text', async () => {
    const { page, sent } = await join(behind.origin, 'Decider');
    engine.gate.hold(12);
    await typeAndSend(page, PROMPT);
    await waitForStreamingText(page, 60);
    behind.proxy.blocked = true;
    behind.proxy.cutAll();
    await page.waitForFunction(() => window.__parleyTest.lastReply()?.status === 'reconnecting', undefined, { timeout: 30_000, polling: 'raf' });
    await page.keyboard.press('Escape');
    behind.proxy.blocked = false;
    await lastReplyStatus(page, 'stopped');
    const resume = sent.findIndex((frame) => frame.type === 'resume');
    const cancel = sent.findIndex((frame) => frame.type === 'cancel');
    assert.ok(resume >= 0 && cancel > resume, 'resumed, then cancelled');
    const stopped = await lastReply(page);
    assert.ok(stopped.text.length >= 60 && reference.startsWith(await savedReply(page, 'stopped')), 'the text up to the stop, with nothing repeated');
    const { scheduler } = behind.server.started.server.chat;
    await waitUntil(() => scheduler.activeCount === 0, 30_000, 'the slot is free');
  });

  test('a conversation started on one device shows up on another signed in to the same account, and opens there', async () => {
    await new UserStore(behind.server.dataDir).add('dana', PASSWORD);
    const laptop = await login(behind.origin, 'dana', PASSWORD);
    await typeAndSend(laptop.page, 'notes from the laptop');
    await lastReplyStatus(laptop.page, 'done');
    const laptopReply = await lastReply(laptop.page);

    // A fresh browser context: no localStorage, only the server's copy.
    const phone = await login(behind.origin, 'dana', PASSWORD);
    const remote = phone.page.locator('chat-sidebar li[data-remote]', { hasText: 'notes from the laptop' });
    await remote.waitFor();
    await remote.locator('button.open').click();
    await phone.page.locator('chat-message[from=user]').first().waitFor();
    assert.equal(await phone.page.locator('chat-message[from=user] .body').innerText(), 'notes from the laptop');
    assert.equal((await lastReply(phone.page)).text, laptopReply.text);
    assert.equal(await phone.page.locator('chat-sidebar li[data-remote]').count(), 0, 'opened, it is a conversation of this browser now');

    // It carries on from here, in the same server conversation.
    await carryOn(phone, 'and from the phone');
    assert.equal(await phone.page.locator('chat-message').count(), 4);

    // After a reload it is still there; deleted (on the server), it does not come back.
    await phone.page.reload();
    await connected(phone.page);
    await phone.page.locator('chat-sidebar li', { hasText: 'notes from the laptop' }).waitFor();
    assert.equal(await phone.page.locator('chat-message').count(), 4);
    await phone.page.locator('chat-sidebar li.current button.delete').click();
    await phone.page.locator('chat-sidebar button.confirm-delete').click();
    await phone.page.locator('chat-sidebar li', { hasText: 'notes from the laptop' }).waitFor({ state: 'detached' });
    await phone.page.reload();
    await connected(phone.page);
    // The server's list has been merged.
    await conversationsHandled(phone.page);
    assert.equal(await phone.page.locator('chat-sidebar li', { hasText: 'notes from the laptop' }).count(), 0);
    // Invite users are separate people: another one sees none of it.
    const stranger = await join(behind.origin, 'Stranger');
    await conversationsHandled(stranger.page);
    assert.equal(await stranger.page.locator('chat-sidebar li[data-id]').count(), 0);
  });
});

describe('a reply the server could not keep', () => {
  test('past the grace period: the partial text stays, with a clear message', async () => {
    const behind = await startBehindProxy({ resumeGraceMs: 1000 });
    try {
      const { chat } = behind.server.started.server;
      const watched = await join(behind.origin, 'Tunneler');
      const { page } = watched;
      // The reply waits at the gate: the cut lands mid-reply, and only the grace period ends it.
      engine.gate.hold(15);
      await typeAndSend(page, PROMPT);
      await waitForStreamingText(page, 80);
      assert.equal(chat.scheduler.activeCount, 1);
      // The network stays down for longer than the server keeps the reply.
      behind.proxy.blocked = true;
      behind.proxy.cutAll();
      await page.waitForFunction(() => window.__parleyTest.lastReply()?.status === 'reconnecting', undefined, { timeout: 30_000, polling: 'raf' });
      const partial = await lastReply(page);
      // Held at the gate, the reply ends only when the server gives up on it once the grace period is over.
      await waitUntil(() => chat.scheduler.activeCount === 0 && chat.detached.size === 0, 30_000, 'the grace period ended and the reply with it');
      behind.proxy.blocked = false;
      await connected(page);
      await lastReplyStatus(page, 'interrupted');
      const reply = await lastReply(page);
      assert.match(reply.footer, /The connection dropped and the reply could not be recovered/);
      assert.ok(reply.text.length >= partial.text.length && reply.text.startsWith(partial.text), 'the partial text stays');
      // And the conversation goes on.
      await carryOn(watched, 'still there?');
    } finally {
      await behind.stop();
    }
  });

  test('a page reloaded mid-reply on a server that keeps nothing across drops: the reply is marked as cut by the page closing, and not asked for', async () => {
    const behind = await startBehindProxy({ resumeGraceMs: 0 });
    try {
      const watched = await join(behind.origin, 'Impatient');
      const { page, sent } = watched;
      engine.gate.hold(15);
      await typeAndSend(page, PROMPT);
      await waitForStreamingText(page, 80);
      await page.reload();
      await connected(page);
      await lastReplyStatus(page, 'interrupted');
      assert.match((await lastReply(page)).footer, /page closed/);
      // A resume would have been sent before the next message.
      await carryOn(watched, 'anyone?');
      assert.equal(sent.filter((frame) => frame.type === 'resume').length, 0, 'no resume was asked for');
    } finally {
      await behind.stop();
    }
  });

  test('a server that keeps nothing across drops (resumeGraceMs 0): the client does not try, and says the reply was cut off', async () => {
    const behind = await startBehindProxy({ resumeGraceMs: 0 });
    try {
      const watched = await join(behind.origin, 'Hurried');
      const { page, sent } = watched;
      engine.gate.hold(15);
      await typeAndSend(page, PROMPT);
      await waitForStreamingText(page, 80);
      behind.proxy.cutAll();
      await lastReplyStatus(page, 'interrupted');
      assert.match((await lastReply(page)).footer, /cut off/);
      await connected(page);
      // A resume would have been sent, and answered, before the next message and its reply.
      await carryOn(watched, 'anyone?');
      const cut = page.locator('chat-message[from=assistant]').first();
      assert.equal(await cut.getAttribute('status'), 'interrupted');
      assert.match(await cut.locator('footer').innerText(), /cut off/);
      assert.equal(sent.filter((frame) => frame.type === 'resume').length, 0, 'no resume was asked for');
    } finally {
      await behind.stop();
    }
  });
});
