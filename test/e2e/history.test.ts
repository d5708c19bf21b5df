import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join as joinPath } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { UserStore } from '../../server/auth/UserStore.js';
import type { ConfigInput } from '../../server/config.js';
import type { GatedEngine } from '../helpers/GatedEngine.js';
import { loadGatedTinyEngine, startTestServer, TEST_INVITE, type TestServer } from '../helpers/startTestServer.js';
import { closeAndCheck, connected, LAN_HOST, lastReplyStatus, launchChromium, openPage, typeAndSend, type GuardedPage } from './browser.js';

/**
 * Stored conversations in the web client: the server keeps them (encrypted SQLite in the data
 * dir) and is the source of truth; the page's localStorage is a cache. Two browser contexts
 * signed in to one named account are two devices; a second server on the same data dir is a
 * restart. Every page fails its test on a CSP violation, a page error, a dialog or a request to
 * another origin, so the downloads below are made under the page's strict CSP.
 *
 * The engine is behind a Gate (test/helpers/Gate.ts): a reply that must still be running when
 * the server stops waits at the gate, however fast the machine is. Nothing here waits for a
 * fixed time: every wait is for a state.
 */

const SERVER_CONFIG: ConfigInput = {
  maxTokens: 40,
  generationTimeoutMs: 60_000,
  allowedHosts: [LAN_HOST],
  // Every page comes from 127.0.0.1: lift the per-IP limits meant for real networks.
  tokenRequestsPerMinute: 1000,
  upgradesPerMinute: 1000,
};
const PASSWORD = 'harbour-pass-PARLEY-2718';

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

async function open(origin: string): Promise<GuardedPage> {
  const page = await openPage(browser, origin);
  opened.push(page);
  return page;
}

function lanOrigin(server: TestServer): string {
  return `http://${LAN_HOST}:${server.started.port}`;
}

/** Opens the join link and joins as a new invite user. */
async function join(origin: string, name: string): Promise<GuardedPage> {
  const guarded = await open(origin);
  await guarded.page.goto(`${origin}/#invite=${TEST_INVITE}`);
  const nameInput = guarded.page.locator('chat-join input[name=name]');
  await nameInput.fill(name);
  await nameInput.press('Enter');
  await connected(guarded.page);
  return guarded;
}

/** A fresh browser context (a device of its own) signed in to a named account. */
async function login(origin: string, name: string): Promise<GuardedPage> {
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
    { name, password: PASSWORD },
  );
  assert.equal(status, 200);
  await guarded.page.reload();
  await connected(guarded.page);
  return guarded;
}

/** How many lists (`conversations` frames) the page has merged since it loaded. */
async function listsMerged(page: Page): Promise<number> {
  return page.evaluate(() => window.__parleyTest.handled('conversations'));
}

/** The page has merged the server's list more than `seen` times since it loaded. */
async function listMerged(page: Page, seen = 0): Promise<void> {
  await page.waitForFunction((count) => window.__parleyTest.handled('conversations') > count, seen, { timeout: 30_000, polling: 50 });
}

/** Sends a message and waits for its whole reply (the gate is open). */
async function sendAndFinish(page: Page, text: string): Promise<void> {
  const before = await page.locator('chat-message[from=assistant]').count();
  await typeAndSend(page, text);
  await page.locator('chat-message[from=assistant]').nth(before).waitFor();
  await lastReplyStatus(page, 'done');
}

/** Sends a message whose reply streams `pieces` pieces and waits at the gate, and stops it with Esc. */
async function sendAndStop(page: Page, text: string, pieces = 2): Promise<void> {
  engine.gate.hold(pieces);
  await typeAndSend(page, text);
  await lastReplyStatus(page, 'streaming');
  await page.keyboard.press('Escape');
  await lastReplyStatus(page, 'stopped');
  engine.gate.open();
}

async function newConversation(page: Page): Promise<void> {
  await page.locator('chat-sidebar button.new').click();
  await page.locator('chat-message').first().waitFor({ state: 'detached' });
}

/** The texts of the open conversation's messages, in order, with their statuses. */
async function thread(page: Page): Promise<Array<{ from: string; status: string; text: string }>> {
  return page.evaluate(() =>
    window.__parleyTest.all('chat-message').map((element) => ({
      from: element.getAttribute('from') ?? '',
      status: element.getAttribute('status') ?? '',
      text: element.shadowRoot?.querySelector('.body')?.textContent ?? '',
    })),
  );
}

/** The sidebar item of the conversation whose title contains `title`. */
function item(page: Page, title: string) {
  return page.locator('chat-sidebar li[data-id]', { hasText: title });
}

/**
 * Opens a conversation from the sidebar and waits until it is on the page: `messages` messages,
 * the first of them `first` (the title, unless it was renamed), none of them still on its way.
 */
async function openConversation(page: Page, title: string, messages: number, first = title): Promise<void> {
  await item(page, title).locator('button.open').click();
  await page.waitForFunction(
    ([count, text]) => {
      const shown = window.__parleyTest.all('chat-message');
      return shown.length === count && shown[0]?.shadowRoot?.querySelector('.body')?.textContent === text && shown.every((element) => ['done', 'stopped', 'error', 'interrupted'].includes(element.getAttribute('status') ?? ''));
    },
    [messages, first] as const,
    { timeout: 30_000, polling: 50 },
  );
  await page.locator('chat-sidebar li.current[data-id]', { hasText: title }).waitFor();
}

/** The user id of the signed-in page and its cached conversations (localStorage). */
async function cache(page: Page): Promise<{ userId: string; conversations: Array<{ serverId?: string; title: string }> }> {
  const [key, raw] = await page.evaluate(() => Object.entries(localStorage).find(([name]) => name.startsWith('parley.v1.conversations.')) ?? ['', '{"conversations":[]}']);
  return { userId: key.slice('parley.v1.conversations.'.length), conversations: (JSON.parse(raw) as { conversations: Array<{ serverId?: string; title: string }> }).conversations };
}

describe('conversations kept by the server, in the web client', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer('uws', engine, SERVER_CONFIG);
  });
  after(async () => {
    await server?.stop();
  });

  test('two devices of one account see the same conversations with their messages; a rename or delete on one shows on the other after a reload', async () => {
    await new UserStore(server.dataDir).add('fern', PASSWORD);
    const laptop = await login(lanOrigin(server), 'fern');
    await sendAndFinish(laptop.page, 'laptop harbour notes');
    await newConversation(laptop.page);
    await sendAndStop(laptop.page, 'a second thread');
    await openConversation(laptop.page, 'laptop harbour notes', 2);
    const notes = await thread(laptop.page);

    // Another device: nothing cached, everything from the server.
    const phone = await login(lanOrigin(server), 'fern');
    await item(phone.page, 'laptop harbour notes').waitFor();
    await item(phone.page, 'a second thread').waitFor();
    assert.equal(await phone.page.locator('chat-sidebar li[data-remote]').count(), 2, 'both are on the server only, until opened');
    await openConversation(phone.page, 'laptop harbour notes', 2);
    assert.deepEqual(await thread(phone.page), notes, 'the same messages, with the same text');
    // A reply the server stored as stopped shows as stopped.
    await openConversation(phone.page, 'a second thread', 2);
    const stopped = phone.page.locator('chat-message[from=assistant]').last();
    assert.equal(await stopped.getAttribute('status'), 'stopped');
    assert.match(await stopped.locator('footer').innerText(), /Stopped/);

    // Renamed on the phone: on the server first, then on the page.
    await item(phone.page, 'laptop harbour notes').locator('button.rename-button').click();
    const input = phone.page.locator('chat-sidebar input.rename');
    await input.fill('Renamed on the phone');
    await input.press('Enter');
    await item(phone.page, 'Renamed on the phone').waitFor();
    const { userId } = await cache(phone.page);
    const repository = server.started.server.chat.conversations.repository;
    assert.ok((await repository.listConversations(userId)).some((conversation) => conversation.title === 'Renamed on the phone'));

    // Deleted on the laptop (after the confirmation).
    await item(laptop.page, 'a second thread').locator('button.delete').click();
    await laptop.page.locator('chat-sidebar button.confirm-delete').click();
    await item(laptop.page, 'a second thread').waitFor({ state: 'detached' });
    assert.deepEqual(
      (await repository.listConversations(userId)).map((conversation) => conversation.title),
      ['Renamed on the phone'],
      'deleted on the server',
    );

    // Each device, reloaded, shows what the other did.
    await laptop.page.reload();
    await connected(laptop.page);
    await item(laptop.page, 'Renamed on the phone').waitFor();
    await openConversation(laptop.page, 'Renamed on the phone', 2, 'laptop harbour notes');
    assert.deepEqual(await thread(laptop.page), notes);

    await phone.page.reload();
    await connected(phone.page);
    await listMerged(phone.page);
    await item(phone.page, 'Renamed on the phone').waitFor();
    assert.equal(await item(phone.page, 'a second thread').count(), 0, 'the conversation deleted on the laptop is gone from the phone');
    // It was open on the phone: the page says where it went.
    assert.match(await phone.page.locator('.sync-notice').innerText(), /“a second thread” was deleted in another tab or on another device/);
    assert.equal(await phone.page.locator('chat-sidebar li[data-id]').count(), 1);
  });

  test('a rename or a delete the server refuses changes nothing, and the page says so', async () => {
    const { page } = await join(lanOrigin(server), 'Refused');
    await sendAndFinish(page, 'keep me as I am');
    // The server is there but refuses every change (as an overloaded one would).
    await page.route('**/api/conversations/**', (route) =>
      ['PATCH', 'DELETE'].includes(route.request().method())
        ? route.fulfill({ status: 503, contentType: 'application/json', body: JSON.stringify({ code: 'internal', message: 'Not now.' }) })
        : route.fallback(),
    );
    await item(page, 'keep me as I am').locator('button.rename-button').click();
    await page.locator('chat-sidebar input.rename').fill('A new name');
    await page.locator('chat-sidebar input.rename').press('Enter');
    const notice = page.locator('.sync-notice');
    await notice.waitFor();
    assert.match(await notice.innerText(), /Could not rename “keep me as I am”: Not now\./);
    assert.equal(await notice.getAttribute('role'), 'alert');
    assert.equal(await item(page, 'keep me as I am').count(), 1, 'the old title stays');

    await page.locator('.sync-notice button.dismiss').click();
    await notice.waitFor({ state: 'detached' });
    await item(page, 'keep me as I am').locator('button.delete').click();
    await page.locator('chat-sidebar button.confirm-delete').click();
    await notice.waitFor();
    assert.match(await notice.innerText(), /Could not delete “keep me as I am”/);
    assert.equal(await item(page, 'keep me as I am').count(), 1, 'the conversation stays');
    assert.equal((await thread(page)).length, 2, 'with its messages');
    const { userId } = await cache(page);
    assert.equal((await server.started.server.chat.conversations.repository.listConversations(userId)).length, 1);
  });

  test('export one conversation as Markdown and all as JSON; delete all, after a confirmation, empties the list for good', async () => {
    const { page } = await join(lanOrigin(server), 'Exporter');
    await sendAndFinish(page, 'export me please');
    const reply = (await thread(page))[1]?.text ?? '';
    assert.match(reply, /^Quiet lanterns/);
    await newConversation(page);
    await sendAndStop(page, 'and me too');

    // One conversation, as Markdown: the open one.
    await item(page, 'export me please').locator('button.open').click();
    const [markdown] = await Promise.all([page.waitForEvent('download'), page.locator('chat-sidebar button.export-one[data-format=markdown]').click()]);
    assert.match(markdown.suggestedFilename(), /^parley-[A-Za-z0-9_-]+\.md$/);
    const text = await readFile((await markdown.path()) as string, 'utf8');
    assert.match(text, /^# export me please\n/);
    assert.match(text, /## You\n\nexport me please\n/);
    assert.ok(text.includes(`## Parley\n\n${reply.slice(0, 40)}`), 'the reply is in the file');
    assert.ok(!text.includes('and me too'), 'only that conversation');

    // All of them, as JSON.
    const [json] = await Promise.all([page.waitForEvent('download'), page.locator('chat-sidebar button.export-all[data-format=json]').click()]);
    assert.equal(json.suggestedFilename(), 'parley-conversations.json');
    const exported = JSON.parse(await readFile((await json.path()) as string, 'utf8')) as {
      conversations: Array<{ title: string; messages: Array<{ role: string; text: string; outcome?: string }> }>;
    };
    assert.deepEqual(exported.conversations.map((conversation) => conversation.title).sort(), ['and me too', 'export me please']);
    const stoppedOne = exported.conversations.find((conversation) => conversation.title === 'and me too');
    assert.deepEqual(
      stoppedOne?.messages.map((message) => [message.role, message.outcome]),
      [
        ['user', undefined],
        ['assistant', 'stopped'],
      ],
    );

    // Delete all asks first; Cancel (here with Esc) keeps everything.
    await page.locator('chat-sidebar button.delete-all').click();
    const keep = page.locator('chat-sidebar button.keep-all');
    await keep.waitFor();
    assert.match(await page.locator('chat-sidebar .row.confirm').innerText(), /Delete all 2 conversations\? This cannot be undone\./);
    assert.equal(await keep.evaluate((button) => (button.getRootNode() as ShadowRoot).activeElement === button), true, 'the focus is on Cancel');
    await page.keyboard.press('Escape');
    await page.locator('chat-sidebar button.delete-all').waitFor();
    assert.equal(await page.locator('chat-sidebar li[data-id]').count(), 2);

    await page.locator('chat-sidebar button.delete-all').click();
    await page.locator('chat-sidebar button.confirm-delete-all').click();
    await page.locator('chat-sidebar li.none').waitFor();
    assert.equal(await page.locator('chat-sidebar li[data-id]').count(), 0);
    assert.equal(await page.locator('chat-message').count(), 0);
    const { userId } = await cache(page);
    assert.equal((await server.started.server.chat.conversations.repository.listConversations(userId)).length, 0, 'deleted on the server');

    await page.reload();
    await connected(page);
    await listMerged(page);
    assert.equal(await page.locator('chat-sidebar li[data-id]').count(), 0, 'still empty after a reload');
    await page.locator('chat-sidebar li.none').waitFor();
  });
});

describe('conversations across a server restart, in the web client', () => {
  let dataDir: string;
  let server: TestServer | undefined;
  before(async () => {
    dataDir = await mkdtemp(joinPath(tmpdir(), 'parley-e2e-history-'));
  });
  after(async () => {
    await server?.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  /** The same port and data dir (signing key, sessions, stored conversations); the port may need a moment. */
  async function startOn(port: number): Promise<TestServer> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await startTestServer('ws', engine, { ...SERVER_CONFIG, port }, { dataDir });
      } catch (error) {
        if (attempt >= 30) throw error;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  }

  test('after a restart the page shows the history, the next message continues the same conversation, and a reply cut by the restart reads as interrupted', async () => {
    server = await startOn(0);
    const port = server.started.port;
    const origin = `http://${LAN_HOST}:${port}`;
    await new UserStore(dataDir).add('gale', PASSWORD);
    const { page } = await login(origin, 'gale');
    await sendAndStop(page, 'before the restart');
    // A second conversation whose reply is still running (held at the gate) when the server stops.
    await newConversation(page);
    engine.gate.hold(2);
    await typeAndSend(page, 'cut by the restart');
    await lastReplyStatus(page, 'streaming');

    const lists = await listsMerged(page);
    await server.stop();
    server = undefined;
    await lastReplyStatus(page, 'interrupted');
    await page.locator('chat-header[state=reconnecting]').waitFor();
    engine.gate.open();

    server = await startOn(port);
    await connected(page);
    await listMerged(page, lists);
    // Both conversations are still there, with their messages.
    await openConversation(page, 'before the restart', 2);
    assert.equal(await item(page, 'cut by the restart').count(), 1);
    await sendAndFinish(page, 'after the restart');
    assert.equal(await page.locator('chat-message').count(), 4);
    assert.equal(await page.locator('chat-message .notice').count(), 0, 'no notice about a lost conversation');
    assert.ok(!(await page.evaluate(() => window.__parleyTest.text())).includes('no longer had'));

    // The server's own copy: one conversation, now four turns.
    const cached = await cache(page);
    const serverId = cached.conversations.find((conversation) => conversation.title.startsWith('before the restart'))?.serverId;
    assert.ok(serverId);
    const response = await fetch(`${server.baseUrl}/api/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'gale', password: PASSWORD }) });
    assert.equal(response.status, 200);
    const client = await server.connect(((await response.json()) as { token: string }).token);
    client.sendFrame({ type: 'get_conversation', conversationId: serverId });
    const stored = await client.waitForType('conversation');
    assert.deepEqual(
      stored.turns.map((turn) => turn.role),
      ['user', 'assistant', 'user', 'assistant'],
    );
    assert.equal(stored.turns[2]?.text, 'after the restart');

    // A device with nothing cached gets the same history from the server, the cut reply marked as such.
    const other = await login(origin, 'gale');
    await openConversation(other.page, 'before the restart', 4);
    assert.deepEqual(
      (await thread(other.page)).map(({ from, status }) => [from, status]),
      [
        ['user', 'done'],
        ['assistant', 'stopped'],
        ['user', 'done'],
        ['assistant', 'done'],
      ],
    );
    await openConversation(other.page, 'cut by the restart', 2);
    const cut = other.page.locator('chat-message[from=assistant]').last();
    assert.equal(await cut.getAttribute('status'), 'interrupted');
    assert.match(await cut.locator('footer').innerText(), /server stopped/);
    assert.match(await cut.locator('.body').innerText(), /^Quiet/);
  });
});
