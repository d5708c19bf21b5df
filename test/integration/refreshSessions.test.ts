import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { join as joinPath } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { decodeJwt } from 'jose';
import { SESSIONS_FILE } from '../../server/auth/SessionStore.js';
import { UserStore } from '../../server/auth/UserStore.js';
import type { LlamaEngine } from '../../server/engine/LlamaEngine.js';
import { loadTinyEngine, startTestServer, TEST_INVITE, TRANSPORTS, type TestServer } from '../helpers/startTestServer.js';
import { TestClient } from '../helpers/TestClient.js';
import { bearerUpgradeStatus } from '../helpers/upgradeStatus.js';

/**
 * The refresh cookie's second security round (issue 15, section 4): logout takes only a cookie
 * that could still refresh, and is limited per address; a just-rotated cookie has a grace window
 * for the page that holds the session's binding; the cookie alone (which another port of this
 * host can set or receive) refreshes nothing without the binding value the page keeps.
 */

const BINDING_HEADER = 'x-parley-binding';

interface Reply {
  readonly status: number;
  readonly body: Record<string, unknown>;
  readonly headers: Headers;
  /** `parley_refresh=<value>` from Set-Cookie; undefined when none or cleared. */
  readonly cookie: string | undefined;
}

/** One signed-in page: its cookie and the binding value it keeps. */
interface Session {
  readonly token: string;
  readonly cookie: string;
  readonly binding: string;
  readonly userId: string;
}

async function post(server: TestServer, path: string, options: { json?: unknown; cookie?: string; binding?: string; bearer?: string } = {}): Promise<Reply> {
  const headers: Record<string, string> = {};
  if (options.json !== undefined) headers['content-type'] = 'application/json';
  if (options.cookie !== undefined) headers.cookie = options.cookie;
  if (options.binding !== undefined) headers[BINDING_HEADER] = options.binding;
  if (options.bearer !== undefined) headers.authorization = `Bearer ${options.bearer}`;
  const response = await fetch(`${server.baseUrl}${path}`, { method: 'POST', headers, ...(options.json === undefined ? {} : { body: JSON.stringify(options.json) }) });
  const text = await response.text();
  const pair = response.headers.get('set-cookie')?.split(';')[0]?.trim();
  return { status: response.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {}, headers: response.headers, cookie: pair && pair !== 'parley_refresh=' ? pair : undefined };
}

/** Every binding value handed out, to check the log against. */
const issuedBindings = new Set<string>();

function asSession(reply: Reply): Session {
  assert.equal(reply.status, 200, JSON.stringify(reply.body));
  if (typeof reply.body.refreshBinding === 'string') issuedBindings.add(reply.body.refreshBinding);
  assert.ok(reply.cookie);
  assert.equal(typeof reply.body.refreshBinding, 'string', 'a sign-in answers with the binding value');
  const token = reply.body.token as string;
  return { token, cookie: reply.cookie, binding: reply.body.refreshBinding as string, userId: decodeJwt(token).sub as string };
}

const join = async (server: TestServer, name = 'tester') => asSession(await post(server, '/api/token', { json: { invite: TEST_INVITE, name } }));
const signIn = async (server: TestServer, name: string, password: string) => asSession(await post(server, '/api/login', { json: { name, password } }));
/** A refresh by the page: its cookie and its binding; returns the session as it is afterwards. */
async function refreshed(server: TestServer, session: Session, cookie = session.cookie): Promise<Session & { reply: Reply }> {
  const reply = await post(server, '/api/token/refresh', { cookie, binding: session.binding });
  assert.equal(reply.status, 200, JSON.stringify(reply.body));
  assert.ok(reply.cookie);
  assert.equal(reply.body.refreshBinding, undefined, 'only a sign-in hands the binding out');
  return { ...session, token: reply.body.token as string, cookie: reply.cookie, reply };
}

/** The refresh token's id, from a `parley_refresh=<jwt>` cookie pair. */
function jtiOf(cookie: string): string {
  return decodeJwt(cookie.slice(cookie.indexOf('=') + 1)).jti as string;
}

async function openSocket(server: TestServer, token: string): Promise<TestClient> {
  const client = await TestClient.connect(server.wsUrl, token);
  await client.waitForType('ready');
  return client;
}

/**
 * The socket is still open and answering: a frame sent now gets its answer (an error frame for
 * a frame that is not JSON), which a close sent before it would have overtaken.
 */
async function stillServes(socket: TestClient): Promise<void> {
  const from = socket.frames.length;
  socket.sendRaw('not json');
  await socket.waitFor((frame) => frame.type === 'error', 10_000, from);
  assert.equal(socket.closeCode, undefined);
}

let engine: LlamaEngine;
before(async () => {
  engine = await loadTinyEngine({ slots: 2, contextSize: 512 });
});
after(async () => {
  await engine.dispose();
});

for (const transport of TRANSPORTS) {
  describe(`refresh cookie and logout over ${transport}`, () => {
    let server: TestServer;
    const PASSWORD = 'dora-pass-PARLEY-4410';
    before(async () => {
      server = await startTestServer(transport, engine, { maxTokens: 4, tokenRequestsPerMinute: 1000, logoutsPerMinute: 1000 });
      await new UserStore(server.dataDir).add('dora', PASSWORD);
    });
    after(async () => {
      await server.stop();
    });

    // ---- logout (item 1) ---------------------------------------------------

    test('a dead cookie signs no one out: after a logout and a new sign-in, replaying the first cookie to /api/logout gets 401, the new socket stays open and the new cookie still refreshes', async () => {
      const first = await signIn(server, 'dora', PASSWORD);
      assert.equal((await post(server, '/api/logout', { cookie: first.cookie, binding: first.binding })).status, 200);
      const second = await signIn(server, 'dora', PASSWORD);
      assert.equal(second.userId, first.userId, 'the same account');
      const socket = await openSocket(server, second.token);

      const replay = await post(server, '/api/logout', { cookie: first.cookie, binding: first.binding });
      assert.equal(replay.status, 401);
      assert.match(replay.headers.get('set-cookie') ?? '', /^parley_refresh=;.*Max-Age=0/, 'the dead cookie is cleared');
      await stillServes(socket);
      await refreshed(server, second);
      socket.close();
    });

    test('logout with a cookie rotated away, or without the session’s binding, gets 401 and ends nothing', async () => {
      const page = await join(server, 'Rotating');
      const once = await refreshed(server, page);
      const twice = await refreshed(server, once);
      const socket = await openSocket(server, twice.token);
      for (const [what, cookie, binding] of [
        ['two rotations old', page.cookie, page.binding],
        ['no binding', twice.cookie, undefined],
        ['another binding', twice.cookie, 'not-the-pages-value'],
      ] as const) {
        assert.equal((await post(server, '/api/logout', { cookie, ...(binding === undefined ? {} : { binding }) })).status, 401, what);
      }
      await stillServes(socket);
      assert.equal(await bearerUpgradeStatus(server.wsUrl, twice.token), 101);
      await refreshed(server, twice);
      socket.close();
    });

    test('logouts with dead cookies leave sessions.json untouched', async () => {
      const page = await join(server, 'Gone');
      assert.equal((await post(server, '/api/logout', { cookie: page.cookie, binding: page.binding })).status, 200);
      const file = joinPath(server.dataDir, SESSIONS_FILE);
      const before = { text: await readFile(file, 'utf8'), mtime: (await stat(file)).mtimeMs };
      for (let i = 0; i < 20; i++) assert.equal((await post(server, '/api/logout', { cookie: page.cookie, binding: page.binding })).status, 401);
      assert.equal(await readFile(file, 'utf8'), before.text);
      assert.equal((await stat(file)).mtimeMs, before.mtime);
    });

    // ---- grace window (item 5) ---------------------------------------------

    test('two tabs refreshing with the same cookie at once both get 200 and the same successor; nothing is revoked', async () => {
      const page = await join(server, 'TwoTabs');
      const socket = await openSocket(server, page.token);
      const [a, b] = await Promise.all([refreshed(server, page), refreshed(server, page)]);
      // Each answer signs its own cookie (its iat is the second it was made, so two answers that
      // straddle a second differ as strings): the successor is the session's jti, and it is one.
      assert.equal(jtiOf(a.cookie), jtiOf(b.cookie), 'the same successor');
      assert.notEqual(jtiOf(a.cookie), jtiOf(page.cookie));
      for (const token of [a.token, b.token]) assert.equal(await bearerUpgradeStatus(server.wsUrl, token), 101);
      await stillServes(socket);
      await refreshed(server, a);
      assert.ok(!server.logs.records.some((record) => record.event === 'refresh_reuse_detected' && record.user === page.userId));
      socket.close();
    });

    test('a refresh whose answer was lost: the retry with the old cookie gets the same successor, and the session goes on', async () => {
      const page = await join(server, 'Lossy');
      const socket = await openSocket(server, page.token);
      const lost = await refreshed(server, page);
      const retry = await refreshed(server, page);
      assert.equal(jtiOf(retry.cookie), jtiOf(lost.cookie));
      await refreshed(server, retry);
      await stillServes(socket);
      socket.close();
    });

    test('the old cookie from a client without the binding is still reuse: 401, the family is revoked and the socket closes with 4403', async () => {
      const page = await join(server, 'Robbed');
      const socket = await openSocket(server, page.token);
      const next = await refreshed(server, page);
      const thief = await post(server, '/api/token/refresh', { cookie: page.cookie, binding: 'stolen-cookie-no-binding' });
      assert.equal(thief.status, 401);
      assert.equal((await post(server, '/api/token/refresh', { cookie: next.cookie, binding: page.binding })).status, 401, 'the family is revoked');
      assert.equal(await socket.waitClose(), 4403);
      assert.ok(server.logs.records.some((record) => record.event === 'refresh_reuse_detected' && record.user === page.userId));
    });

    // ---- the binding (item 6) ----------------------------------------------

    test('a refresh with the cookie but without the binding, or with a wrong one, gets 401; the page’s own refresh still works', async () => {
      const page = await join(server, 'Bound');
      const socket = await openSocket(server, page.token);
      for (const binding of [undefined, '', 'x', page.binding.slice(0, -1), (await join(server, 'Other')).binding]) {
        const reply = await post(server, '/api/token/refresh', { cookie: page.cookie, ...(binding === undefined ? {} : { binding }) });
        assert.equal(reply.status, 401, String(binding));
        assert.equal(reply.body.token, undefined);
      }
      assert.ok(server.logs.records.some((record) => record.event === 'refresh_refused' && record.reason === 'unbound' && record.user === page.userId));
      await refreshed(server, page);
      await stillServes(socket);
      socket.close();
    });

    test('a cookie tossed in from another port: with two refresh cookies, the page’s binding picks its own session', async () => {
      const victim = await join(server, 'Victim');
      const attacker = await join(server, 'Attacker');
      const both = `${attacker.cookie}; ${victim.cookie}`;
      const reply = await post(server, '/api/token/refresh', { cookie: both, binding: victim.binding });
      assert.equal(reply.status, 200);
      assert.equal(decodeJwt(reply.body.token as string).sub, victim.userId, 'the page stays in its own account');
      assert.equal((await post(server, '/api/token/refresh', { cookie: both })).status, 401, 'without the binding, neither');
    });

    test('no binding value handed out in this suite is in the log', () => {
      assert.ok(issuedBindings.size > 5);
      for (const binding of issuedBindings) assert.ok(!server.logs.contains(binding));
    });
  });

  describe(`logout limit over ${transport}`, () => {
    test('logouts per minute per IP are limited: past the limit, 429 with Retry-After, before any credential is looked at', async () => {
      const own = await startTestServer(transport, engine, { logoutsPerMinute: 3 });
      try {
        for (let i = 0; i < 3; i++) assert.equal((await post(own, '/api/logout', { cookie: 'parley_refresh=dead' })).status, 401);
        const page = await join(own, 'Late');
        const refused = await post(own, '/api/logout', { cookie: page.cookie, binding: page.binding });
        assert.equal(refused.status, 429);
        assert.equal(refused.body.code, 'rate_limited');
        assert.ok(Number(refused.headers.get('retry-after')) >= 1);
        assert.equal(await bearerUpgradeStatus(own.wsUrl, page.token), 101, 'the refused logout ended nothing');
      } finally {
        await own.stop();
      }
    });
  });
}
