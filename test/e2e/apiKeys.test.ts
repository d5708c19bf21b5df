import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import type { Browser } from 'playwright-core';
import type { GatedEngine } from '../helpers/GatedEngine.js';
import { ParleyError } from '../../server/ParleyError.js';
import type { HttpRequest } from '../../server/transport/Transport.js';
import { loadGatedTinyEngine, startTestServer, TEST_INVITE, type TestServer } from '../helpers/startTestServer.js';
import { ARTIFACTS, closeAndCheck, connected, LAN_HOST, lastReplyStatus, launchChromium, openPage, typeAndSend, type GuardedPage } from './browser.js';

/**
 * The "API keys" panel: a signed-in user makes a key, sees it exactly once (with a copy button
 * that works on a plain-http LAN origin), and revokes it after a confirmation, by keyboard and
 * mouse. The server's own authenticator confirms the key works, then that it no longer does.
 * Every wait is for a state, never for a time.
 */

let engine: GatedEngine;
let browser: Browser;
let server: TestServer;
let opened: GuardedPage[] = [];

before(async () => {
  [engine, browser] = await Promise.all([loadGatedTinyEngine({ slots: 1 }), launchChromium()]);
  server = await startTestServer('ws', engine, { allowedHosts: [LAN_HOST], tokenRequestsPerMinute: 1000, upgradesPerMinute: 1000 });
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

/** Whether the server takes `key` now: 200, or the status of its refusal. */
async function keyStatus(key: string): Promise<number> {
  const request: HttpRequest = { method: 'GET', path: '/v1/models', query: '', headers: { authorization: `Bearer ${key}` }, remoteAddress: '10.3.3.3', body: Buffer.alloc(0) };
  try {
    await server.started.server.authenticateApiKey(request);
    return 200;
  } catch (error) {
    assert.ok(error instanceof ParleyError);
    return error.httpStatus;
  }
}

describe('API keys on the page', () => {
  test('create a key, see it once with a copy button, then revoke it after a confirmation', async () => {
    const origin = `http://${LAN_HOST}:${server.started.port}`;
    const guarded = await openPage(browser, origin);
    opened.push(guarded);
    const { page, guard } = guarded;
    await page.goto(`${origin}/#invite=${TEST_INVITE}`);
    await page.locator('chat-join input[name=name]').fill('keymaker');
    await page.locator('chat-join input[name=name]').press('Enter');
    await connected(page);

    // Open the panel from the header by keyboard; the focus lands in the name field.
    await page.locator('chat-header button.keys').focus();
    await page.keyboard.press('Enter');
    await page.locator('chat-keys dialog[open]').waitFor();
    await page.locator('chat-keys .none', { hasText: 'No keys yet.' }).waitFor();
    const nameField = page.getByLabel('Name of a new key');
    await assert.doesNotReject(nameField.waitFor());
    assert.equal(await nameField.evaluate((element) => element === (element.getRootNode() as ShadowRoot).activeElement), true, 'the name field has the focus');
    await page.keyboard.type('laptop editor');
    await page.keyboard.press('Enter');

    // Shown once, with the note and a copy button.
    const shown = page.locator('chat-keys input.key-value');
    await shown.waitFor();
    const key = await shown.inputValue();
    assert.match(key, /^pk-parley-[A-Za-z0-9_-]{43}$/);
    const prefix = key.slice(10, 18);
    await page.locator('chat-keys .new-key', { hasText: 'Copy your new key now' }).waitFor();
    assert.ok((await page.locator('chat-keys .new-key').textContent())?.includes('only time Parley shows'));
    await page.getByRole('button', { name: 'Copy', exact: true }).click();
    await page.locator('chat-keys button.copy', { hasText: 'Copied' }).waitFor();
    assert.equal(guard.copies.at(-1), key, 'the copy button copied the key (plain-http fallback)');
    await page.locator(`chat-keys li[data-prefix="${prefix}"]`, { hasText: 'laptop editor' }).waitFor();
    assert.equal(await keyStatus(key), 200, 'the key works');

    // Done: the key is gone from the page for good, and was never stored.
    await page.getByRole('button', { name: 'I have copied it' }).click();
    await shown.waitFor({ state: 'detached' });
    const traces = await page.evaluate((needle) => ({
      text: window.__parleyTest.text().includes(needle),
      inputs: window.__parleyTest.all('input').some((input) => (input as HTMLInputElement).value.includes(needle)),
      local: JSON.stringify({ ...localStorage }).includes(needle),
      session: JSON.stringify({ ...sessionStorage }).includes(needle),
    }), key.slice(18));
    assert.deepEqual(traces, { text: false, inputs: false, local: false, session: false });
    const row = page.locator(`chat-keys li[data-prefix="${prefix}"]`);
    assert.ok((await row.textContent())?.includes(`pk-parley-${prefix}…`), 'listed by its prefix');
    assert.ok((await row.textContent())?.includes('Never used'), 'listed before its first use');
    await page.screenshot({ path: join(ARTIFACTS, 'api-keys.png') });

    // Escape closes the panel and does nothing else: a reply running behind it goes on.
    await page.getByRole('button', { name: 'Close' }).click();
    await page.locator('chat-keys dialog[open]').waitFor({ state: 'detached' });
    engine.gate.hold(2);
    await typeAndSend(page, 'keep going');
    await lastReplyStatus(page, 'streaming');
    await page.getByRole('button', { name: 'API keys' }).click();
    await page.locator('chat-keys dialog[open]').waitFor();
    await page.keyboard.press('Escape');
    await page.locator('chat-keys dialog[open]').waitFor({ state: 'detached' });
    assert.equal(await page.evaluate(() => window.__parleyTest.lastReply()?.status), 'streaming', 'Escape in the panel did not stop the reply');
    engine.gate.open();
    await lastReplyStatus(page, 'done');

    // Opening it again lists the key, never the key itself.
    await page.getByRole('button', { name: 'API keys' }).click();
    await row.waitFor();
    assert.ok((await row.textContent())?.includes('Last used'), 'the use above is listed');
    assert.equal(await page.evaluate((needle) => window.__parleyTest.text().includes(needle), key.slice(18)), false);

    // Revoke: a confirmation first; Keep leaves it, Revoke ends it.
    await page.getByRole('button', { name: 'Revoke laptop editor' }).click();
    const keep = page.locator('chat-keys button.keep');
    await keep.waitFor();
    assert.ok((await page.locator('chat-keys .confirm').textContent())?.includes('Revoke “laptop editor”?'));
    assert.equal(await keep.evaluate((element) => element === (element.getRootNode() as ShadowRoot).activeElement), true, 'the focus is on the safe choice');
    await page.keyboard.press('Escape');
    await keep.waitFor({ state: 'detached' });
    assert.equal(await page.locator('chat-keys dialog[open]').count(), 1, 'Escape on the question cancels it, not the panel');
    await page.getByRole('button', { name: 'Revoke laptop editor' }).click();
    await keep.click();
    await page.getByRole('button', { name: 'Revoke laptop editor' }).waitFor();
    assert.equal(await keyStatus(key), 200, 'kept');
    await page.getByRole('button', { name: 'Revoke laptop editor' }).click();
    await page.locator('chat-keys button.confirm-revoke').click();
    await page.locator('chat-keys .none', { hasText: 'No keys yet.' }).waitFor();
    assert.equal(await keyStatus(key), 401, 'the revoked key is refused at once');
    await page.getByRole('button', { name: 'Close' }).click();
    await page.locator('chat-keys dialog[open]').waitFor({ state: 'detached' });
  });
});
