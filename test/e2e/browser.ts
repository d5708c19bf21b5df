import { mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type BrowserContext, type BrowserContextOptions, type Page } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';
/** Resolves to 127.0.0.1 inside the browser: an origin that is not loopback, so not a secure context. */
export const LAN_HOST = 'parley.test';
export const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/', import.meta.url));

/**
 * Debian's Chromium, headless, with every background service off. The host resolver maps
 * parley.test to 127.0.0.1 and resolves no other name, so nothing the page does can leave the
 * machine; Playwright gives each launch a fresh profile directory.
 */
export async function launchChromium(): Promise<Browser> {
  await mkdir(ARTIFACTS, { recursive: true });
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-domain-reliability',
      '--disable-client-side-phishing-detection',
      '--no-pings',
      `--host-resolver-rules=MAP ${LAN_HOST} 127.0.0.1, MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost`,
    ],
  });
}

/** What a page did that a test must fail on, plus what it copied. */
export interface PageGuard {
  /** `securitypolicyviolation` events, and CSP errors in the console. */
  readonly violations: string[];
  readonly pageErrors: string[];
  /** Requests to anything but the page's own origin. */
  readonly foreignRequests: string[];
  /** alert/confirm/prompt dialogs (dismissed). */
  readonly dialogs: string[];
  /** Text selected when a `copy` event fired (the plain-http clipboard fallback). */
  readonly copies: string[];
}

export interface GuardedPage {
  readonly page: Page;
  readonly context: BrowserContext;
  readonly guard: PageGuard;
  readonly origin: string;
}

/**
 * A page in a fresh context that records every CSP violation (the DOM event, capturing, and the
 * console report), page error, dialog and request to another origin.
 */
export async function openPage(browser: Browser, origin: string, options: BrowserContextOptions = {}): Promise<GuardedPage> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, ...options });
  const page = await context.newPage();
  const guard: PageGuard = { violations: [], pageErrors: [], foreignRequests: [], dialogs: [], copies: [] };
  await page.exposeBinding('__parleyTestReport', (_source, kind: string, detail: string) => {
    if (kind === 'csp') guard.violations.push(detail);
    if (kind === 'copy') guard.copies.push(detail);
  });
  // A string, not a function: tsx's transform would add helpers the page does not have.
  await page.addInitScript(`
    const report = (kind, detail) => window.__parleyTestReport(kind, detail);
    document.addEventListener('securitypolicyviolation', (event) => {
      report('csp', event.violatedDirective + ' blocked ' + event.blockedURI + ' (' + event.sourceFile + ':' + event.lineNumber + ')');
    }, true);
    // Counts the frames the app has handled, by type: a handler set as a socket's onmessage runs,
    // then the count goes up. A test that sees the count has seen whatever the handler rendered,
    // since rendering is done in microtasks and the test's check runs in a later task.
    const handledFrames = {};
    const onmessage = Object.getOwnPropertyDescriptor(WebSocket.prototype, 'onmessage');
    Object.defineProperty(WebSocket.prototype, 'onmessage', {
      configurable: true,
      enumerable: onmessage.enumerable,
      get() {
        return onmessage.get.call(this);
      },
      set(handler) {
        onmessage.set.call(this, typeof handler !== 'function' ? handler : function (event) {
          try {
            return handler.call(this, event);
          } finally {
            let type = 'unparsed';
            try {
              type = String(JSON.parse(event.data).type);
            } catch {}
            handledFrames[type] = (handledFrames[type] || 0) + 1;
          }
        });
      },
    });
    // Test-side helpers for looking through the app's open shadow roots.
    window.__parleyTest = {
      handled(type) {
        return handledFrames[type] || 0;
      },
      all(selector, root = document) {
        const found = [...root.querySelectorAll(selector)];
        for (const element of root.querySelectorAll('*')) if (element.shadowRoot) found.push(...this.all(selector, element.shadowRoot));
        return found;
      },
      text(root = document.body) {
        let text = '';
        const walk = (node) => {
          if (node.nodeType === Node.TEXT_NODE) text += node.data + ' ';
          if (node.shadowRoot) walk(node.shadowRoot);
          for (const child of node.childNodes) walk(child);
        };
        walk(root);
        return text;
      },
      lastReply() {
        const replies = this.all('chat-message[from=assistant]');
        const last = replies[replies.length - 1];
        if (!last) return undefined;
        return { status: last.getAttribute('status'), text: last.shadowRoot.querySelector('.body').textContent };
      },
      /**
       * Follows the next reply frame by frame: the distinct text lengths seen while it streamed.
       * They are also in this.recorded as they come, for a test that paces the reply by them.
       */
      recordReply(timeoutMs) {
        return new Promise((resolve) => {
          const lengths = [];
          this.recorded = lengths;
          const start = performance.now();
          const tick = () => {
            const reply = this.lastReply();
            if (reply) {
              if (reply.status === 'streaming' && reply.text.length > 0 && lengths[lengths.length - 1] !== reply.text.length) lengths.push(reply.text.length);
              if (['done', 'stopped', 'error', 'interrupted'].includes(reply.status)) return resolve({ status: reply.status, lengths, text: reply.text });
            }
            if (performance.now() - start > timeoutMs) return resolve({ status: 'timeout', lengths, text: reply ? reply.text : '' });
            requestAnimationFrame(tick);
          };
          requestAnimationFrame(tick);
        });
      },
      /** Checks every animation frame, until stopWatch, whether the text ever shows up in the page. */
      startWatch(needle) {
        this.watching = { needle, seen: false, frame: 0 };
        const tick = () => {
          if (this.text().includes(needle)) this.watching.seen = true;
          this.watching.frame = requestAnimationFrame(tick);
        };
        tick();
      },
      stopWatch() {
        cancelAnimationFrame(this.watching.frame);
        if (this.text().includes(this.watching.needle)) this.watching.seen = true;
        return this.watching.seen;
      },
    };
    document.addEventListener('copy', (event) => {
      const target = event.composedPath()[0];
      report('copy', target instanceof HTMLTextAreaElement ? target.value : String(document.getSelection()));
    }, true);
  `);
  page.on('console', (message) => {
    if (/Content[- ]Security[- ]Policy/i.test(message.text())) guard.violations.push(`console: ${message.text()}`);
  });
  page.on('pageerror', (error) => guard.pageErrors.push(error.message));
  page.on('dialog', (dialog) => {
    guard.dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    void dialog.dismiss();
  });
  page.on('request', (request) => {
    if (new URL(request.url()).origin !== origin) guard.foreignRequests.push(request.url());
  });
  return { page, context, guard, origin };
}

/** Closes the pages' contexts, then fails if any of them saw something a test must fail on. */
export async function closeAndCheck(pages: readonly GuardedPage[]): Promise<void> {
  await Promise.all(pages.map(({ context }) => context.close()));
  for (const { guard } of pages) assertClean(guard);
}

/** Nothing a test must fail on happened. */
export function assertClean(guard: PageGuard): void {
  const problems = [
    ...guard.violations.map((entry) => `CSP violation: ${entry}`),
    ...guard.pageErrors.map((entry) => `page error: ${entry}`),
    ...guard.foreignRequests.map((entry) => `request to another origin: ${entry}`),
    ...guard.dialogs.map((entry) => `dialog: ${entry}`),
  ];
  if (problems.length > 0) throw new Error(problems.join('\n'));
}

/** The socket is up: the header says connected. */
export async function connected(page: Page, timeout = 30_000): Promise<void> {
  await page.locator('chat-header[state=connected]').waitFor({ timeout });
}

export async function typeAndSend(page: Page, text: string): Promise<void> {
  const box = page.locator('chat-composer textarea');
  await box.fill(text);
  await box.press('Enter');
}

/** Waits until the last reply on the page is in one of these states. */
export async function lastReplyStatus(page: Page, status: string | string[], timeout = 30_000): Promise<void> {
  const wanted = Array.isArray(status) ? status : [status];
  await page.waitForFunction((states) => states.includes(window.__parleyTest.lastReply()?.status ?? ''), wanted, { timeout, polling: 50 });
}

/** The page-side helpers installed by openPage. */
export interface PageHelpers {
  /** How many frames of this type the app has handled since the page loaded. */
  handled(type: string): number;
  /** The lengths recordReply has seen so far. */
  recorded?: number[];
  all(selector: string): Element[];
  text(): string;
  lastReply(): { status: string; text: string } | undefined;
  recordReply(timeoutMs: number): Promise<{ status: string; lengths: number[]; text: string }>;
  startWatch(needle: string): void;
  stopWatch(): boolean;
}
declare global {
  interface Window {
    __parleyTest: PageHelpers;
  }
}
