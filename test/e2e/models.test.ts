import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join as joinPath } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { ensureModel } from '../../models/ensureModel.js';
import type { ConfigInput } from '../../server/config.js';
import { readModelFile, type ModelFile } from '../../server/models/ModelFile.js';
import { heldModelPool, type HeldModelPool } from '../helpers/heldModelPool.js';
import { startTestServer, TEST_INVITE, type TestServer } from '../helpers/startTestServer.js';
import { ARTIFACTS, closeAndCheck, connected, LAN_HOST, lastReplyStatus, launchChromium, openPage, typeAndSend, type GuardedPage } from './browser.js';

/**
 * The model picker of the web client, in Debian's Chromium against a real Parley serving the
 * tiny model (the default; it recites "Quiet lanterns glow across the harbor…" whatever it is
 * asked) and the demo model (a bigram toy that answers differently), both generated and run by
 * llama.cpp. Every page fails its test on a CSP violation, a page error, a dialog or a request to
 * another origin.
 *
 * Nothing here waits for a fixed time: every wait is for a state of the page. A model load that
 * must still be in progress is held by the test (`holdLoad`), however fast the machine is.
 */

const TINY = 'parley-tiny';
const DEMO = 'parley-demo';

const SERVER_CONFIG: ConfigInput = {
  threads: 1,
  slots: 2,
  contextSize: 1024,
  temperature: 0,
  maxTokens: 16,
  generationTimeoutMs: 60_000,
  allowedHosts: [LAN_HOST],
  // Every page comes from 127.0.0.1: lift the per-IP limits meant for real networks.
  tokenRequestsPerMinute: 1000,
  upgradesPerMinute: 1000,
};

let browser: Browser;
let files: { tiny: ModelFile; demo: ModelFile };
/** An empty folder stands for the pulled models, so models a developer pulled are not served here. */
let noPulledModels: string;
let opened: GuardedPage[] = [];

before(async () => {
  const [tiny, demo] = await Promise.all([ensureModel('tiny'), ensureModel('demo')]);
  files = { tiny: await readModelFile(tiny.path), demo: await readModelFile(demo.path) };
  noPulledModels = await mkdtemp(joinPath(tmpdir(), 'parley-no-pulled-'));
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  if (noPulledModels) await rm(noPulledModels, { recursive: true, force: true });
});

afterEach(async () => {
  const pages = opened;
  opened = [];
  await closeAndCheck(pages);
});

/** A server that loads the config's models itself, the way `parley --model a --model b` does. */
function startWithModels(paths: readonly string[], overrides: ConfigInput = {}): Promise<TestServer> {
  return startTestServer('ws', undefined, { ...SERVER_CONFIG, models: paths, pulledModelsDir: noPulledModels, ...overrides });
}

function lanOrigin(server: TestServer): string {
  return `http://${LAN_HOST}:${server.started.port}`;
}

/** A page (its `send` frames recorded) that opens the join link and joins as a new invite user. */
async function join(server: TestServer, name: string, options: Parameters<typeof openPage>[2] = {}): Promise<{ guarded: GuardedPage; sends: Array<Record<string, unknown>> }> {
  const origin = lanOrigin(server);
  const guarded = await openPage(browser, origin, options);
  opened.push(guarded);
  const sends: Array<Record<string, unknown>> = [];
  guarded.page.on('websocket', (socket) =>
    socket.on('framesent', ({ payload }) => {
      if (typeof payload !== 'string') return;
      const frame = JSON.parse(payload) as Record<string, unknown>;
      if (frame.type === 'send') sends.push(frame);
    }),
  );
  await guarded.page.goto(`${origin}/#invite=${TEST_INVITE}`);
  const nameInput = guarded.page.locator('chat-join input[name=name]');
  await nameInput.fill(name);
  await nameInput.press('Enter');
  await connected(guarded.page);
  return { guarded, sends };
}

/** The select labelled "Model". */
function picker(page: Page) {
  return page.getByLabel('Model', { exact: true });
}

/** Waits until the picker shows this model as the open conversation's. */
async function pickerShows(page: Page, model: string): Promise<void> {
  await page.waitForFunction((id) => window.__parleyTest.all('chat-model-picker')[0]?.shadowRoot?.querySelector('select')?.value === id, model, { timeout: 30_000, polling: 50 });
}

/** Sends a message and waits for its whole reply; resolves with the reply's text. */
async function sendAndFinish(page: Page, text: string): Promise<string> {
  const before = await page.locator('chat-message[from=assistant]').count();
  await typeAndSend(page, text);
  await page.locator('chat-message[from=assistant]').nth(before).waitFor();
  await lastReplyStatus(page, 'done');
  return (await page.evaluate(() => window.__parleyTest.lastReply()?.text)) ?? '';
}

/** The page has merged the server's list of conversations since it loaded. */
async function listMerged(page: Page): Promise<void> {
  await page.waitForFunction(() => window.__parleyTest.handled('conversations') > 0, undefined, { timeout: 30_000, polling: 50 });
}

/** The user id of the signed-in page (the key of its cache in localStorage, written once it has conversations). */
async function userIdOf(page: Page): Promise<string> {
  const key = await page.waitForFunction(() => Object.keys(localStorage).find((name) => name.startsWith('parley.v1.conversations.')), undefined, { timeout: 30_000, polling: 50 });
  return ((await key.jsonValue()) ?? '').slice('parley.v1.conversations.'.length);
}

/** The model of each of the user's conversations as the server stored it, by title. */
async function storedModels(server: TestServer, userId: string): Promise<Map<string, string>> {
  const conversations = await server.started.server.chat.conversations.repository.listConversations(userId);
  return new Map(conversations.map(({ title, model }) => [title, model]));
}

/** Opens a conversation from the sidebar. */
async function openConversation(page: Page, title: string): Promise<void> {
  await page.locator('chat-sidebar li[data-id]', { hasText: title }).locator('button.open').click();
  await page.locator('chat-sidebar li.current[data-id]', { hasText: title }).waitFor();
}

describe('several models: the picker', () => {
  let server: TestServer;
  before(async () => {
    server = await startWithModels([files.tiny.path, files.demo.path]);
  });
  after(async () => {
    await server?.stop();
  });

  test('lists every model; a message goes to the picked one; the conversation keeps its model across reloads, from the server', async () => {
    const { guarded, sends } = await join(server, 'picker');
    const { page } = guarded;

    // Both models, the default first and chosen for a new conversation.
    const select = picker(page);
    assert.deepEqual(await select.locator('option').evaluateAll((options) => options.map((option) => (option as HTMLOptionElement).value)), [TINY, DEMO]);
    // The demo file says it is the demo model, and the picker says so.
    assert.deepEqual(await select.locator('option').allTextContents(), [files.tiny.displayName, `${files.demo.displayName} (demo)`]);
    assert.equal(await select.inputValue(), TINY);

    // Picked, sent: the demo model answers (the tiny model would recite its passage), after it loads.
    await select.selectOption(DEMO);
    const demoReply = await sendAndFinish(page, 'the cat sat on the');
    assert.doesNotMatch(demoReply, /^Quiet lanterns/);
    assert.equal(sends.at(-1)?.model, DEMO, 'the send names the picked model');
    await pickerShows(page, DEMO);
    await page.screenshot({ path: joinPath(ARTIFACTS, 'model-picker.png') });

    // A new conversation starts at the default, and a send that picks nothing names no model.
    await page.locator('chat-sidebar button.new').click();
    await page.locator('chat-message').first().waitFor({ state: 'detached' });
    await pickerShows(page, TINY);
    const tinyReply = await sendAndFinish(page, 'harbour lights tonight');
    assert.match(tinyReply, /^Quiet lanterns/);
    assert.equal(sends.at(-1)?.model, undefined);

    // The server stored each conversation's model.
    const userId = await userIdOf(page);
    assert.deepEqual(await storedModels(server, userId), new Map([['harbour lights tonight', TINY], ['the cat sat on the', DEMO]]));

    // Reloaded: each conversation shows its own model.
    await page.reload();
    await connected(page);
    await listMerged(page);
    await openConversation(page, 'the cat sat on the');
    await pickerShows(page, DEMO);
    await openConversation(page, 'harbour lights tonight');
    await pickerShows(page, TINY);

    // Nothing cached in this browser: the models come from the server's list.
    await page.evaluate(() => localStorage.clear());
    await page.reload();
    await connected(page);
    await listMerged(page);
    await openConversation(page, 'the cat sat on the');
    await pickerShows(page, DEMO);
    await page.locator('chat-message[from=assistant]').first().waitFor();

    // The next message goes on with the demo model without naming it: the server remembers.
    const sent = sends.length;
    const followUp = await sendAndFinish(page, 'and then');
    assert.doesNotMatch(followUp, /^Quiet lanterns/);
    assert.equal(sends.length, sent + 1);
    assert.equal(sends.at(-1)?.model, undefined);
    assert.equal((await storedModels(server, userId)).get('the cat sat on the'), DEMO);
  });

  test('switching an existing conversation to another model: its next message goes there, and it stays switched', async () => {
    const { guarded, sends } = await join(server, 'switcher');
    const { page } = guarded;
    assert.match(await sendAndFinish(page, 'first on tiny'), /^Quiet lanterns/);
    await picker(page).selectOption(DEMO);
    assert.doesNotMatch(await sendAndFinish(page, 'now the demo'), /^Quiet lanterns/);
    assert.equal(sends.at(-1)?.model, DEMO);
    assert.deepEqual(await storedModels(server, await userIdOf(page)), new Map([['first on tiny', DEMO]]));
    await page.reload();
    await connected(page);
    await listMerged(page);
    await pickerShows(page, DEMO);
  });
});

describe('several models: a model that loads on first use', () => {
  let server: TestServer;
  let models: HeldModelPool;
  let releaseLoad: (() => void) | undefined;
  before(async () => {
    models = heldModelPool([files.tiny, files.demo]);
    server = await startTestServer('ws', models.pool, SERVER_CONFIG);
  });
  after(async () => {
    releaseLoad?.();
    await server?.stop();
    await models?.pool.close();
  });

  test('the reply says the model is loading (its place in line) until the server accepts it, then streams', async () => {
    // A phone: the picker and the line that says the model loads fit its screen.
    const { guarded } = await join(server, 'waiter', { viewport: { width: 390, height: 760 }, isMobile: true, hasTouch: true });
    const { page } = guarded;
    releaseLoad = models.holdLoad(DEMO);
    await picker(page).selectOption(DEMO);
    await typeAndSend(page, 'the cat sat on the');
    await lastReplyStatus(page, 'loading_model');
    await page.screenshot({ path: joinPath(ARTIFACTS, 'model-loading-phone.png') });
    const reply = page.locator('chat-message[from=assistant]').last();
    assert.match(await reply.locator('footer').innerText(), /Loading the model… \(1st in line\)/);
    assert.equal(await page.evaluate(() => window.__parleyTest.handled('accepted')), 0, 'not accepted while the model loads');
    releaseLoad?.();
    await lastReplyStatus(page, 'done');
    assert.doesNotMatch((await page.evaluate(() => window.__parleyTest.lastReply()?.text)) ?? '', /^Quiet lanterns/);
  });
});

describe('several models: a model too large for the memory limit', () => {
  let server: TestServer;
  before(async () => {
    // Room for the tiny model with its contexts, not for the demo model (see estimateModelMemory).
    const { tiny } = files;
    server = await startWithModels([files.tiny.path, files.demo.path], {
      modelMemoryMib: 34 + Math.ceil((tiny.fileBytes * 1.05 + tiny.kvBytesPerToken * 2048) / (1024 * 1024)),
    });
  });
  after(async () => {
    await server?.stop();
  });

  test("the reply shows the server's reason, and another model still answers", async () => {
    const { guarded } = await join(server, 'tight');
    const { page } = guarded;
    await picker(page).selectOption(DEMO);
    await typeAndSend(page, 'the cat sat on the');
    await lastReplyStatus(page, 'error');
    const reply = page.locator('chat-message[from=assistant]').last();
    assert.match(await reply.locator('footer').innerText(), /needs about \d+ MiB.*--model-memory-mib/);
    await pickerShows(page, DEMO);
    await picker(page).selectOption(TINY);
    assert.match(await sendAndFinish(page, 'the tiny one then'), /^Quiet lanterns/);
  });
});

describe('one model', () => {
  let server: TestServer;
  before(async () => {
    server = await startWithModels([files.tiny.path]);
  });
  after(async () => {
    await server?.stop();
  });

  test('no picker, and sends name no model', async () => {
    const { guarded, sends } = await join(server, 'solo');
    const { page } = guarded;
    assert.match(await sendAndFinish(page, 'just the one'), /^Quiet lanterns/);
    assert.equal(await page.locator('chat-model-picker').count(), 0);
    assert.equal(await picker(page).count(), 0);
    assert.equal(sends.length, 1);
    assert.equal(sends[0]?.model, undefined);
  });
});
