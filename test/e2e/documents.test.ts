import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import type { ConfigInput } from '../../server/config.js';
import type { GatedEngine } from '../helpers/GatedEngine.js';
import { loadGatedTinyEngine, startTestServer, TEST_INVITE, type TestServer } from '../helpers/startTestServer.js';
import { closeAndCheck, connected, LAN_HOST, lastReplyStatus, launchChromium, openPage, typeAndSend, type GuardedPage } from './browser.js';

/**
 * Documents attached to messages, in the web client against a real Parley with the tiny model:
 * a file attached by the file input or dropped on the chat becomes a chip that goes to ready,
 * goes with the next message, shows on that message (also when the conversation comes back from
 * the server) and is named under the reply's Sources. A file the server refuses gets a chip with
 * the server's reason and never holds a message back. One test holds an upload (page.route) to
 * see the states between: uploading, reading, and Send waiting for them. Every page fails its
 * test on a CSP violation, a page error, a dialog or a request to another origin.
 */

const SERVER_CONFIG: ConfigInput = {
  maxTokens: 24,
  generationTimeoutMs: 60_000,
  allowedHosts: [LAN_HOST],
  // Every page comes from 127.0.0.1: lift the per-IP limits meant for real networks.
  tokenRequestsPerMinute: 1000,
  upgradesPerMinute: 1000,
};

const NOTES = 'Harbour notes.\n\nThe lighthouse keeper logs the tides every morning at six.\nThe ferry leaves at noon.\n';
const FERRY = '# Ferry\n\nThe ferry to the island leaves at noon and returns at four.\n';
/** The first bytes of a PNG: what a picture renamed `.txt` really is. */
const PNG_BYTES = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0x49, 0x48, 0x44, 0x52, 0, 0, 0, 1, 0, 0, 0, 1, 8, 6, 0, 0, 0, 0x1f, 0x15, 0xc4, 0x89]);
const MARKUP_NAME = '<img src=x onerror=alert(1)>.txt';

let engine: GatedEngine;
let browser: Browser;
let server: TestServer;
let opened: GuardedPage[] = [];

before(async () => {
  [engine, browser] = await Promise.all([loadGatedTinyEngine({ slots: 2, contextSize: 2048 }), launchChromium()]);
  server = await startTestServer('uws', engine, SERVER_CONFIG);
});

after(async () => {
  await server?.stop();
  await browser?.close();
  await engine?.dispose();
});

afterEach(async () => {
  engine.gate.open();
  const pages = opened;
  opened = [];
  await closeAndCheck(pages);
});

function lanOrigin(): string {
  return `http://${LAN_HOST}:${server.started.port}`;
}

/** Opens the join link, joins as a new invite user and waits for the socket. */
async function join(name: string, options: Parameters<typeof openPage>[2] = {}): Promise<GuardedPage> {
  const guarded = await openPage(browser, lanOrigin(), options);
  opened.push(guarded);
  const { page } = guarded;
  await page.goto(`${lanOrigin()}/#invite=${TEST_INVITE}`);
  const nameInput = page.locator('chat-join input[name=name]');
  await nameInput.fill(name);
  await nameInput.press('Enter');
  await connected(page);
  return guarded;
}

function chip(page: Page, name: string) {
  return page.locator('chat-attachments li', { hasText: name });
}

/** Attaches files through the composer's file input, as the attach button's picker would. */
async function attach(page: Page, ...files: { name: string; mimeType: string; buffer: Buffer }[]): Promise<void> {
  await page.locator('chat-composer input[type=file]').setInputFiles(files);
}

/**
 * Drags a file over the thread (the drop target shows) and drops it there, with the events a
 * real drag sends: dragenter, dragover, drop, carrying a DataTransfer with the file.
 */
async function drop(page: Page, name: string, text: string): Promise<void> {
  const dataTransfer = await page.evaluateHandle(
    ([fileName, content]) => {
      const transfer = new DataTransfer();
      transfer.items.add(new File([content], fileName, { type: 'text/plain' }));
      return transfer;
    },
    [name, text] as const,
  );
  const thread = page.locator('chat-thread');
  await thread.dispatchEvent('dragenter', { dataTransfer });
  await thread.dispatchEvent('dragover', { dataTransfer });
  await page.locator('chat-app .drop-zone').waitFor();
  await thread.dispatchEvent('drop', { dataTransfer });
  await page.locator('chat-app .drop-zone').waitFor({ state: 'detached' });
}

/** The text of the chips, the sent messages' attachments or the Sources, in page order (whitespace collapsed). */
async function texts(page: Page, selector: string): Promise<string[]> {
  return (await page.locator(selector).allTextContents()).map((text) => text.replace(/\s+/g, ' ').trim());
}

describe('documents attached to messages, in the web client', () => {
  test('a file picked with the attach button and one dropped on the chat go to ready, go with the message, show on it and under the reply, and again when the server sends the conversation back', async () => {
    const { page } = await join('ada');
    const button = page.locator('chat-composer button.attach');
    assert.equal(await button.getAttribute('aria-label'), 'Attach files');

    await attach(page, { name: 'harbour.txt', mimeType: 'text/plain', buffer: Buffer.from(NOTES) });
    await chip(page, 'harbour.txt').and(page.locator('[data-phase=ready]')).waitFor();
    await drop(page, 'ferry.md', FERRY);
    await chip(page, 'ferry.md').and(page.locator('[data-phase=ready]')).waitFor();
    assert.deepEqual(
      (await texts(page, 'chat-attachments li .meta')).map((meta) => meta.replace(/ · .*/, '')),
      [`${Buffer.byteLength(NOTES)} B`, `${Buffer.byteLength(FERRY)} B`],
      'each chip names its size',
    );

    await typeAndSend(page, 'When does the ferry leave?');
    await lastReplyStatus(page, 'done');
    assert.equal(await page.locator('chat-attachments li').count(), 0, 'the chips go with the message');
    const attached = await texts(page, 'chat-message[from=user] .documents li');
    assert.deepEqual(attached, [`harbour.txt ${Buffer.byteLength(NOTES)} B`, `ferry.md ${Buffer.byteLength(FERRY)} B`]);
    const sources = await texts(page, 'chat-message[from=assistant] .sources li');
    assert.ok(sources.length > 0, 'the reply names its sources');
    for (const source of sources) assert.match(source, /^(harbour\.txt|ferry\.md) · parts? \d+(, \d+)*$/);
    assert.deepEqual(sources.map((source) => source.replace(/ · .*/, '')).sort(), ['ferry.md', 'harbour.txt'], 'both files are named, once each');
    assert.ok((await texts(page, 'chat-message[from=assistant] .sources-title')).includes('Sources'));

    // The server's copy: forget this browser's cache and open the conversation from the list.
    await page.evaluate(() => {
      for (const key of Object.keys(localStorage)) if (key.startsWith('parley.v1.conversations.')) localStorage.removeItem(key);
    });
    await page.reload();
    await connected(page);
    await page.locator('chat-sidebar li[data-id]', { hasText: 'When does the ferry leave?' }).locator('button.open').click();
    await page.locator('chat-message[from=assistant][status=done]').waitFor();
    await page.locator('chat-message[from=user] .documents li').first().waitFor();
    assert.deepEqual(await texts(page, 'chat-message[from=user] .documents li'), attached);
    assert.deepEqual(await texts(page, 'chat-message[from=assistant] .sources li'), sources);
  });

  test("a refused file gets a chip with the server's reason and does not hold the message back; a file name of markup is shown as text", async () => {
    const { page, guard } = await join('grace');
    await attach(page, { name: 'photo.txt', mimeType: 'text/plain', buffer: PNG_BYTES }, { name: MARKUP_NAME, mimeType: 'text/plain', buffer: Buffer.from(NOTES) });
    await chip(page, 'photo.txt').and(page.locator('[data-phase=refused]')).waitFor();
    const reason = (await texts(page, 'chat-attachments li[data-phase=refused] .error'))[0] ?? '';
    assert.match(reason, /PNG.*send a PDF or UTF-8 text/, `the server's reason is on the chip: ${reason}`);
    await chip(page, MARKUP_NAME).and(page.locator('[data-phase=ready]')).waitFor();
    assert.deepEqual(await texts(page, 'chat-attachments li .name'), ['photo.txt', MARKUP_NAME]);

    await typeAndSend(page, 'Summarise my notes');
    await lastReplyStatus(page, 'done');
    const attached = await texts(page, 'chat-message[from=user] .documents li .doc-name');
    assert.equal(attached.length, 1, 'only the file the server took went with the message');
    assert.match(attached[0] ?? '', /img src=x onerror=alert\(1\)/, 'the name is shown as the text it is');
    assert.equal((await page.evaluate(() => window.__parleyTest.all('img').length)), 0, 'no element was made from the name');
    assert.deepEqual(guard.dialogs, []);
  });

  test('the chip of a removed file goes; a sixth file is refused here; the remove buttons are named and reachable by keyboard', async () => {
    const { page } = await join('hedy');
    await attach(
      page,
      ...['one', 'two', 'three', 'four', 'five', 'six'].map((word) => ({ name: `${word}.txt`, mimeType: 'text/plain', buffer: Buffer.from(`${word} ${NOTES}`) })),
    );
    await chip(page, 'six.txt').and(page.locator('[data-phase=refused]')).waitFor();
    assert.match((await texts(page, 'chat-attachments li[data-phase=refused] .error'))[0] ?? '', /at most 5 files/);
    await page.locator('chat-attachments li[data-phase=ready]').nth(4).waitFor();

    const remove = page.locator('chat-attachments button.remove[aria-label="Remove two.txt"]');
    await remove.focus();
    await page.keyboard.press('Enter');
    await chip(page, 'two.txt').waitFor({ state: 'detached' });
    assert.equal(await page.locator('chat-attachments li').count(), 5);
    const focused = await page.evaluate(() => document.activeElement?.shadowRoot?.activeElement?.tagName ?? document.activeElement?.tagName);
    assert.equal(focused, 'CHAT-COMPOSER', 'the focus goes back to the message box');
  });

  test('while a file uploads and the server reads it, its chip says so and Send waits; on a phone-width screen the composer keeps its buttons', async () => {
    const { page } = await join('katherine', { viewport: { width: 375, height: 740 } });
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    await page.route('**/api/documents?*', async (route) => {
      await held;
      await route.continue();
    });
    await attach(page, { name: 'tides.txt', mimeType: 'text/plain', buffer: Buffer.from(NOTES) });
    await chip(page, 'tides.txt').and(page.locator('[data-phase=uploading], [data-phase=reading]')).waitFor();
    await page.locator('chat-composer textarea').fill('What about the tides?');
    const send = page.locator('chat-composer button.send');
    assert.equal(await send.isDisabled(), true, 'Send waits for the upload');
    assert.match((await texts(page, 'chat-composer .hint'))[0] ?? '', /waits for a file/);
    await page.locator('chat-composer textarea').press('Enter');
    assert.equal(await page.locator('chat-message').count(), 0, 'Enter does not send either');

    for (const selector of ['chat-composer button.attach', 'chat-composer button.send', 'chat-attachments button.remove']) {
      const box = await page.locator(selector).boundingBox();
      assert.ok(box && box.x >= 0 && box.x + box.width <= 375, `${selector} is on the screen`);
    }

    release();
    await chip(page, 'tides.txt').and(page.locator('[data-phase=ready]')).waitFor();
    assert.equal(await send.isDisabled(), false);
    await send.click();
    await lastReplyStatus(page, 'done');
    assert.deepEqual(await texts(page, 'chat-message[from=user] .documents li .doc-name'), ['tides.txt']);
  });
});
