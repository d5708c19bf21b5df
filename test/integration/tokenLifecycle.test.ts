import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { WebSocket } from 'ws';
import { UserStore } from '../../server/auth/UserStore.js';
import type { LlamaEngine } from '../../server/engine/LlamaEngine.js';
import { loadTinyEngine, startTestServer, TEST_INVITE, TRANSPORTS, type TestServer } from '../helpers/startTestServer.js';
import { TestClient } from '../helpers/TestClient.js';

interface Reply {
  readonly status: number;
  readonly body: Record<string, unknown>;
  readonly headers: Headers;
  /** The raw Set-Cookie header, if any. */
  readonly setCookie: string | null;
  /** `parley_refresh=<value>` from Set-Cookie, ready to send back; undefined when none or cleared. */
  readonly cookie: string | undefined;
}

/**
 * Each session's binding value (by family), from its sign-in's answer, as a page keeps it: sent
 * with every request that carries one of the session's cookies (the cookie alone refreshes
 * nothing; refreshSessions.test.ts tests that).
 */
const bindings = new Map<string, string>();
function familyOf(cookie: string): string | undefined {
  try {
    const { fam } = decodeJwt(cookie.slice('parley_refresh='.length));
    return typeof fam === 'string' ? fam : undefined;
  } catch {
    return undefined;
  }
}

/** A real fetch with manual cookie handling: nothing is remembered between calls but each session's binding value. */
async function post(server: TestServer, path: string, options: { json?: unknown; cookie?: string; bearer?: string; headers?: Record<string, string> } = {}): Promise<Reply> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.json !== undefined) headers['content-type'] = 'application/json';
  if (options.cookie !== undefined) headers.cookie = options.cookie;
  const binding = options.cookie === undefined ? undefined : bindings.get(familyOf(options.cookie) ?? '');
  if (binding !== undefined) headers['x-parley-binding'] ??= binding;
  if (options.bearer !== undefined) headers.authorization = `Bearer ${options.bearer}`;
  const response = await fetch(`${server.baseUrl}${path}`, {
    method: 'POST',
    headers,
    ...(options.json === undefined ? {} : { body: JSON.stringify(options.json) }),
  });
  const text = await response.text();
  const setCookie = response.headers.get('set-cookie');
  const pair = setCookie?.split(';')[0]?.trim();
  const body = text ? (JSON.parse(text) as Record<string, unknown>) : {};
  if (pair && typeof body.refreshBinding === 'string') bindings.set(familyOf(pair) ?? '', body.refreshBinding);
  return {
    status: response.status,
    body,
    headers: response.headers,
    setCookie,
    cookie: pair && pair !== 'parley_refresh=' ? pair : undefined,
  };
}

interface Login {
  readonly token: string;
  readonly cookie: string;
  readonly reply: Reply;
}

function asLogin(reply: Reply): Login {
  assert.equal(reply.status, 200, JSON.stringify(reply.body));
  assert.ok(reply.cookie, 'a refresh cookie was set');
  return { token: reply.body.token as string, cookie: reply.cookie, reply };
}

const inviteLogin = async (server: TestServer, name = 'tester', invite = TEST_INVITE) => asLogin(await post(server, '/api/token', { json: { invite, name } }));
const passwordLogin = async (server: TestServer, name: string, password: string) => asLogin(await post(server, '/api/login', { json: { name, password } }));
const cookieValue = (cookie: string) => cookie.slice('parley_refresh='.length);

/** The HTTP status of an upgrade attempt: 101 when the socket opened. */
function upgradeStatus(server: TestServer, token: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(server.wsUrl, ['parley.v1', `bearer.${token}`]);
    socket.once('open', () => {
      socket.close();
      resolve(101);
    });
    socket.once('unexpected-response', (_req, res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    socket.once('error', (error) => {
      if (!String(error.message).startsWith('Unexpected server response')) reject(error);
    });
  });
}

/** A JSON POST from a chosen loopback source address (127.0.0.x), to act as several machines. */
function postFrom(server: TestServer, localAddress: string, path: string, json: unknown): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${server.baseUrl}${path}`, { method: 'POST', localAddress, agent: false, headers: { 'content-type': 'application/json' } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end(JSON.stringify(json));
  });
}

async function openSocket(server: TestServer, token: string): Promise<TestClient> {
  const client = await TestClient.connect(server.wsUrl, token);
  await client.waitForType('ready');
  return client;
}

const failing = { consume: () => Promise.reject(new Error('limiter store is down')), get: () => Promise.reject(new Error('limiter store is down')), delete: () => Promise.reject(new Error('limiter store is down')) };

let engine: LlamaEngine;
before(async () => {
  engine = await loadTinyEngine({ slots: 2, contextSize: 512 });
});
after(async () => {
  await engine.dispose();
});

for (const transport of TRANSPORTS) {
  describe(`token lifecycle over ${transport}`, () => {
    let server: TestServer;
    /** Every secret this suite handles, checked against the log at the end. */
    const secrets = new Set<string>([TEST_INVITE]);
    const keep = (...values: Array<string | undefined>) => {
      for (const value of values) if (value) secrets.add(value.startsWith('parley_refresh=') ? cookieValue(value) : value);
    };
    const ADMIN_PASSWORD = 'admin-pass-PARLEY-7781';
    const USER_PASSWORD = 'user-pass-PARLEY-5512';

    before(async () => {
      // Generous limits: this suite makes many token requests from one address; the limit
      // tests below start their own servers.
      server = await startTestServer(transport, engine, { maxTokens: 8, tokenRequestsPerMinute: 1000, logoutsPerMinute: 1000, loginFailuresBeforeLockout: 100 });
      const users = new UserStore(server.dataDir);
      await users.add('root', ADMIN_PASSWORD, 'admin');
      await users.add('carol', USER_PASSWORD);
      keep(ADMIN_PASSWORD, USER_PASSWORD);
    });
    after(async () => {
      await server.stop();
    });

    test('POST /api/token sets the refresh cookie: HttpOnly, SameSite=Strict, Path=/api, Max-Age, and no Secure over http', async () => {
      const login = await inviteLogin(server, 'Ada');
      keep(login.token, login.cookie);
      const attributes = (login.reply.setCookie ?? '').split(';').map((part) => part.trim());
      assert.ok(attributes[0]?.startsWith('parley_refresh=ey'));
      assert.ok(attributes.includes('HttpOnly'));
      assert.ok(attributes.includes('SameSite=Strict'));
      assert.ok(attributes.includes('Path=/api'));
      assert.ok(!attributes.some((attribute) => attribute.toLowerCase() === 'secure'));
      const maxAge = Number(attributes.find((attribute) => attribute.startsWith('Max-Age='))?.slice('Max-Age='.length));
      assert.ok(Math.abs(maxAge - 30 * 24 * 3600) <= 2, `Max-Age ${maxAge} is the 30-day default`);

      const access = decodeJwt(login.token);
      assert.equal(access.role, 'user');
      assert.equal(access.ep, 0);
      const refresh = decodeJwt(cookieValue(login.cookie));
      assert.equal(decodeProtectedHeader(cookieValue(login.cookie)).typ, 'parley-refresh+jwt');
      assert.equal(refresh.aud, 'parley:refresh');
      assert.equal(refresh.sub, access.sub);
      assert.match(String(refresh.fam), /^f_/);
      assert.ok(typeof refresh.jti === 'string' && refresh.jti.length >= 16);
    });

    test('refresh returns a new access token for the same user and rotates the cookie', async () => {
      const login = await inviteLogin(server, 'Rotator');
      const refreshed = await post(server, '/api/token/refresh', { cookie: login.cookie });
      keep(login.token, login.cookie, refreshed.cookie, refreshed.body.token as string);
      assert.equal(refreshed.status, 200);
      assert.ok(refreshed.cookie && refreshed.cookie !== login.cookie, 'a new cookie');
      assert.equal(typeof refreshed.body.expiresAt, 'number');
      assert.equal(decodeJwt(refreshed.body.token as string).sub, decodeJwt(login.token).sub);
      assert.equal(decodeJwt(refreshed.body.token as string).name, 'Rotator');
      assert.equal(decodeJwt(cookieValue(refreshed.cookie)).fam, decodeJwt(cookieValue(login.cookie)).fam, 'same family');
      assert.equal(await upgradeStatus(server, refreshed.body.token as string), 101);
      // And again: each rotation works once.
      const again = await post(server, '/api/token/refresh', { cookie: refreshed.cookie });
      keep(again.cookie, again.body.token as string);
      assert.equal(again.status, 200);
    });

    test('a rotated cookie presented again by another client (not the page’s binding) gets 401 and revokes the family: the newest cookie fails too, and the user is signed out', async () => {
      const login = await inviteLogin(server, 'Victim');
      const socket = await openSocket(server, login.token);
      const rotated = await post(server, '/api/token/refresh', { cookie: login.cookie });
      keep(login.token, login.cookie, rotated.cookie, rotated.body.token as string);
      assert.equal(rotated.status, 200);

      // The page itself would be within the grace window (refreshSessions.test.ts); a copy of the cookie without its binding is not.
      const reuse = await post(server, '/api/token/refresh', { cookie: login.cookie, headers: { 'x-parley-binding': 'not-the-pages-value' } });
      assert.equal(reuse.status, 401);
      assert.equal(reuse.body.code, 'unauthorized');
      assert.match(reuse.setCookie ?? '', /^parley_refresh=;.*Max-Age=0/, 'the cookie is cleared');

      const newest = await post(server, '/api/token/refresh', { cookie: rotated.cookie as string });
      assert.equal(newest.status, 401, 'the whole family is revoked');
      assert.equal(await upgradeStatus(server, rotated.body.token as string), 401, 'access tokens of the family are dead');
      assert.equal(await socket.waitClose(), 4403);
      const userId = decodeJwt(login.token).sub;
      assert.ok(server.logs.records.some((record) => record.event === 'refresh_reuse_detected' && record.user === userId));
    });

    test('refresh without a cookie, with a garbage cookie, or with an access token in the cookie gets 401', async () => {
      const login = await inviteLogin(server);
      keep(login.token, login.cookie);
      for (const cookie of [undefined, 'parley_refresh=not-a-jwt', `parley_refresh=${login.token}`, 'other=1']) {
        const reply = await post(server, '/api/token/refresh', cookie === undefined ? {} : { cookie });
        assert.equal(reply.status, 401, String(cookie));
        assert.equal(reply.body.code, 'unauthorized');
        assert.deepEqual(Object.keys(reply.body).sort(), ['code', 'message']);
      }
    });

    test('a refresh credential used as the WebSocket bearer gets 401 before the upgrade', async () => {
      const login = await inviteLogin(server);
      keep(login.token, login.cookie);
      assert.equal(await upgradeStatus(server, cookieValue(login.cookie)), 401);
      assert.equal(await upgradeStatus(server, login.token), 101, 'control: the access token opens a socket');
    });

    test('logout clears the cookie, refresh then fails, the old access token opens no socket, and an open socket closes with 4403', async () => {
      const login = await inviteLogin(server, 'Leaver');
      keep(login.token, login.cookie);
      const socket = await openSocket(server, login.token);
      const out = await post(server, '/api/logout', { cookie: login.cookie });
      assert.equal(out.status, 200);
      assert.match(out.setCookie ?? '', /^parley_refresh=; HttpOnly; SameSite=Strict; Path=\/api; Max-Age=0/);
      assert.equal((await post(server, '/api/token/refresh', { cookie: login.cookie })).status, 401);
      assert.equal(await upgradeStatus(server, login.token), 401);
      assert.equal(await socket.waitClose(), 4403);
      assert.ok(server.logs.records.some((record) => record.event === 'logout' && record.user === decodeJwt(login.token).sub));
    });

    test('logout with only the bearer access token also ends the session; with no valid credential it gets 401', async () => {
      const login = await inviteLogin(server);
      keep(login.token, login.cookie);
      assert.equal((await post(server, '/api/logout', { bearer: login.token })).status, 200);
      assert.equal((await post(server, '/api/token/refresh', { cookie: login.cookie })).status, 401);
      assert.equal(await upgradeStatus(server, login.token), 401);
      const nothing = await post(server, '/api/logout', { bearer: login.token });
      assert.equal(nothing.status, 401, 'a revoked token is no credential');
      assert.equal((await post(server, '/api/logout')).status, 401);
    });

    test('another user is untouched by a logout', async () => {
      const stays = await inviteLogin(server, 'Stays');
      const leaves = await inviteLogin(server, 'Leaves');
      keep(stays.token, stays.cookie, leaves.token, leaves.cookie);
      const socket = await openSocket(server, stays.token);
      assert.equal((await post(server, '/api/logout', { cookie: leaves.cookie })).status, 200);
      const refreshed = await post(server, '/api/token/refresh', { cookie: stays.cookie });
      keep(refreshed.cookie, refreshed.body.token as string);
      assert.equal(refreshed.status, 200);
      assert.equal(await upgradeStatus(server, stays.token), 101);
      const id = socket.send('still here?');
      assert.equal((await socket.terminal(id)).type, 'done');
      assert.equal(socket.closeCode, undefined);
      socket.close();
    });

    test('a named account logs in with its password; a wrong password and an unknown name get the same 401', async () => {
      const login = await passwordLogin(server, 'Carol', USER_PASSWORD);
      keep(login.token, login.cookie);
      const claims = decodeJwt(login.token);
      assert.equal(claims.name, 'carol');
      assert.equal(claims.role, 'user');
      assert.match(String(claims.sub), /^a_/);
      assert.equal(await upgradeStatus(server, login.token), 101);
      const refreshed = await post(server, '/api/token/refresh', { cookie: login.cookie });
      keep(refreshed.cookie, refreshed.body.token as string);
      assert.equal(decodeJwt(refreshed.body.token as string).sub, claims.sub, 'an account keeps its id across refreshes');

      const wrong = await post(server, '/api/login', { json: { name: 'carol', password: 'not-her-password' } });
      const unknown = await post(server, '/api/login', { json: { name: 'nobody', password: 'not-her-password' } });
      assert.equal(wrong.status, 401);
      assert.deepEqual(wrong.body, unknown.body);
      assert.equal(wrong.setCookie, null);
      assert.ok(server.logs.records.some((record) => record.event === 'login' && record.method === 'password' && record.user === claims.sub));
      assert.ok(server.logs.records.some((record) => record.event === 'login_failed' && record.method === 'password'));
    });

    test('a removed account cannot refresh, and its sessions are revoked', async () => {
      const users = new UserStore(server.dataDir);
      await users.add('temp', 'temp-pass-1234');
      const login = await passwordLogin(server, 'temp', 'temp-pass-1234');
      keep(login.token, login.cookie, 'temp-pass-1234');
      await users.remove('temp');
      assert.equal((await post(server, '/api/token/refresh', { cookie: login.cookie })).status, 401);
      assert.equal(await upgradeStatus(server, login.token), 401);
    });

    test('admin routes: 401 without a valid token, 403 for a non-admin', async () => {
      const user = await inviteLogin(server);
      const carol = await passwordLogin(server, 'carol', USER_PASSWORD);
      keep(user.token, user.cookie, carol.token, carol.cookie);
      for (const path of ['/api/admin/revoke', '/api/admin/rotate-invite']) {
        const json = { user: 'carol' };
        assert.equal((await post(server, path, { json })).status, 401, path);
        assert.equal((await post(server, path, { json, bearer: 'not-a-jwt' })).status, 401, path);
        assert.equal((await post(server, path, { json, bearer: cookieValue(user.cookie) })).status, 401, `${path}: a refresh credential is no bearer`);
        for (const bearer of [user.token, carol.token]) {
          const reply = await post(server, path, { json, bearer });
          assert.equal(reply.status, 403, path);
          assert.equal(reply.body.code, 'forbidden');
        }
      }
      assert.equal(await upgradeStatus(server, carol.token), 101, 'the refused revoke did nothing');
    });

    test('an admin revokes a user: their socket closes with 4403, their access token and cookie stop working', async () => {
      const admin = await passwordLogin(server, 'root', ADMIN_PASSWORD);
      const target = await inviteLogin(server, 'Target');
      keep(admin.token, admin.cookie, target.token, target.cookie);
      assert.equal(decodeJwt(admin.token).role, 'admin');
      const socket = await openSocket(server, target.token);
      const targetId = decodeJwt(target.token).sub as string;
      const reply = await post(server, '/api/admin/revoke', { json: { user: targetId }, bearer: admin.token });
      assert.equal(reply.status, 200);
      assert.deepEqual(reply.body, { user: targetId });
      assert.equal(await socket.waitClose(), 4403);
      assert.equal(await upgradeStatus(server, target.token), 401);
      assert.equal((await post(server, '/api/token/refresh', { cookie: target.cookie })).status, 401);
      assert.equal(await upgradeStatus(server, admin.token), 101, "the admin's own token still works");
      assert.ok(server.logs.records.some((record) => record.event === 'revoked' && record.user === targetId && record.by === decodeJwt(admin.token).sub));

      const byName = await post(server, '/api/admin/revoke', { json: { user: 'CAROL' }, bearer: admin.token });
      assert.equal(byName.status, 200, 'accounts can be named');
      const missing = await post(server, '/api/admin/revoke', { json: { user: 'u_doesnotexist' }, bearer: admin.token });
      assert.equal(missing.status, 404);
      assert.equal((await post(server, '/api/admin/revoke', { json: { who: 'x' }, bearer: admin.token })).status, 400);
      // Revoking also blocked carol and the target's address (this suite's every join comes from
      // 127.0.0.1): lift both for the tests after this one (signInDefences.test.ts tests blocks).
      for (const user of [targetId, 'carol']) assert.equal((await post(server, '/api/admin/unblock', { json: { user }, bearer: admin.token })).status, 200);
    });

    test('state-changing routes: GET gets 405, a body that is not application/json gets 415, a cross-site request gets 403', async () => {
      for (const path of ['/api/token', '/api/login', '/api/token/refresh', '/api/logout', '/api/admin/revoke', '/api/admin/rotate-invite']) {
        const response = await fetch(`${server.baseUrl}${path}`);
        assert.equal(response.status, 405, path);
        assert.equal(response.headers.get('allow'), 'POST');
      }
      const text = await fetch(`${server.baseUrl}/api/login`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{"name":"carol","password":"x"}' });
      assert.equal(text.status, 415);
      const login = await inviteLogin(server);
      keep(login.token, login.cookie);
      for (const site of ['cross-site', 'same-site']) {
        const reply = await post(server, '/api/token/refresh', { cookie: login.cookie, headers: { 'sec-fetch-site': site } });
        assert.equal(reply.status, 403, site);
      }
      assert.equal((await post(server, '/api/token/refresh', { cookie: login.cookie, headers: { 'sec-fetch-site': 'same-origin' } })).status, 200);
    });

    test('the log has the audit events and none of the tokens, cookies, passwords or invite codes', () => {
      const events = new Set(server.logs.records.map((record) => record.event));
      for (const event of ['login', 'login_failed', 'token_refreshed', 'refresh_reuse_detected', 'logout', 'revoked']) {
        assert.ok(events.has(event), `audit event ${event}`);
      }
      for (const record of server.logs.records.filter((record) => typeof record.event === 'string' && record.event !== 'flood_closed')) {
        assert.equal(record.level, 30, `audit records are info: ${JSON.stringify(record)}`);
      }
      assert.ok(secrets.size > 20);
      for (const secret of secrets) {
        const parts = secret.split('.');
        for (const part of parts.length === 3 ? [secret, parts[1] as string, parts[2] as string] : [secret]) {
          assert.ok(!server.logs.contains(part), `the log contains a secret (${secret.slice(0, 12)}…)`);
        }
      }
    });

    test('rotate-invite: the admin gets a new code; the old invite gets 401, the new one works, and the code is not logged', async () => {
      const own = await startTestServer(transport, engine, { invite: undefined, tokenRequestsPerMinute: 1000 });
      try {
        await new UserStore(own.dataDir).add('root', ADMIN_PASSWORD, 'admin');
        const oldInvite = own.started.invite.code;
        const admin = await passwordLogin(own, 'root', ADMIN_PASSWORD);
        const reply = await post(own, '/api/admin/rotate-invite', { bearer: admin.token });
        assert.equal(reply.status, 200);
        const newInvite = reply.body.invite as string;
        assert.match(newInvite, /^[A-Za-z0-9_-]{22}$/);
        assert.notEqual(newInvite, oldInvite);
        assert.equal((await post(own, '/api/token', { json: { invite: oldInvite, name: 'late' } })).status, 401);
        await inviteLogin(own, 'new', newInvite);
        assert.ok(own.logs.records.some((record) => record.event === 'invite_rotated'));
        assert.ok(!own.logs.contains(newInvite) && !own.logs.contains(oldInvite));
        const nonAdmin = await inviteLogin(own, 'x', newInvite);
        assert.equal((await post(own, '/api/admin/rotate-invite', { bearer: nonAdmin.token })).status, 403);
      } finally {
        await own.stop();
      }
    });

    test('after loginFailuresBeforeLockout wrong invites the address gets 429 with retryAfterMs, even with the right invite', async () => {
      const own = await startTestServer(transport, engine, { loginFailuresBeforeLockout: 3, tokenRequestsPerMinute: 1000 });
      try {
        for (let i = 0; i < 3; i++) {
          assert.equal((await post(own, '/api/token', { json: { invite: `wrong-invite-${i}`, name: 'x' } })).status, 401);
        }
        const locked = await post(own, '/api/token', { json: { invite: TEST_INVITE, name: 'x' } });
        assert.equal(locked.status, 429);
        assert.equal(locked.body.code, 'rate_limited');
        assert.ok(typeof locked.body.retryAfterMs === 'number' && locked.body.retryAfterMs > 0);
        assert.ok(Number(locked.headers.get('retry-after')) >= 1);
        assert.equal(locked.setCookie, null);
        assert.equal((await post(own, '/api/login', { json: { name: 'root', password: ADMIN_PASSWORD } })).status, 429, 'the lockout covers passwords too');
        assert.equal(own.logs.records.filter((record) => record.event === 'lockout').length, 1);
        assert.equal(own.logs.records.filter((record) => record.event === 'login_failed').length, 3);
      } finally {
        await own.stop();
      }
    });

    test('wrong passwords lock the address out too, and a success in between resets the count', async () => {
      const own = await startTestServer(transport, engine, { loginFailuresBeforeLockout: 3, tokenRequestsPerMinute: 1000 });
      try {
        await new UserStore(own.dataDir).add('dave', 'dave-pass-1234');
        const wrong = () => post(own, '/api/login', { json: { name: 'dave', password: 'guess-guess' } });
        assert.equal((await wrong()).status, 401);
        assert.equal((await wrong()).status, 401);
        await passwordLogin(own, 'dave', 'dave-pass-1234');
        assert.equal((await wrong()).status, 401);
        assert.equal((await wrong()).status, 401);
        assert.equal((await wrong()).status, 401);
        assert.equal((await post(own, '/api/login', { json: { name: 'dave', password: 'dave-pass-1234' } })).status, 429);
      } finally {
        await own.stop();
      }
    });

    test('wrong passwords also count per account: other addresses and valid logins in between do not reset them, and the account is slowed, not locked', async () => {
      const own = await startTestServer(transport, engine, { loginFailuresBeforeLockout: 3, tokenRequestsPerMinute: 1000 });
      try {
        const users = new UserStore(own.dataDir);
        await users.add('erin', 'erin-pass-1234');
        await users.add('mal', 'mal-pass-1234');
        const guess = (from: string) => postFrom(own, from, '/api/login', { name: 'erin', password: 'guess-guess' });
        // A user with a valid account of their own interleaves guesses at erin's password.
        assert.equal(await guess('127.0.0.2'), 401);
        assert.equal(await guess('127.0.0.2'), 401);
        assert.equal(await postFrom(own, '127.0.0.2', '/api/login', { name: 'mal', password: 'mal-pass-1234' }), 200);
        assert.equal(await guess('127.0.0.3'), 401);
        // Erin's count is now 3: her account is slowed (one attempt per 300 s from addresses she
        // never signed in from), not locked: her right password gets the attempt that is due.
        assert.equal(await postFrom(own, '127.0.0.4', '/api/login', { name: 'erin', password: 'erin-pass-1234' }), 200);
        assert.equal(await guess('127.0.0.5'), 429, 'the next guess from yet another address is not due yet');
        assert.equal(await postFrom(own, '127.0.0.4', '/api/login', { name: 'mal', password: 'mal-pass-1234' }), 200, 'other accounts are unaffected');
        assert.equal(await postFrom(own, '127.0.0.4', '/api/token', { invite: TEST_INVITE, name: 'x' }), 200, 'the address itself is not locked');
      } finally {
        await own.stop();
      }
    });

    test('more token requests per minute than allowed get 429 with retryAfterMs, on every token route', async () => {
      const own = await startTestServer(transport, engine, { tokenRequestsPerMinute: 3 });
      try {
        const login = await inviteLogin(own);
        await post(own, '/api/login', { json: { name: 'nobody', password: 'whatever-pass' } });
        await post(own, '/api/token/refresh', { cookie: login.cookie });
        for (const [path, json] of [['/api/token', { invite: TEST_INVITE, name: 'x' }], ['/api/login', { name: 'x', password: 'y' }], ['/api/token/refresh', undefined]] as const) {
          const reply = await post(own, path, json === undefined ? { cookie: login.cookie } : { json });
          assert.equal(reply.status, 429, path);
          assert.equal(reply.body.code, 'rate_limited');
          assert.ok((reply.body.retryAfterMs as number) > 0);
          assert.ok(Number(reply.headers.get('retry-after')) >= 1);
        }
      } finally {
        await own.stop();
      }
    });

    test('a failing limiter refuses token requests with 503 limiter_unavailable instead of letting them through', async () => {
      for (const limiterOverrides of [{ tokenRequests: failing }, { loginFailures: failing }]) {
        const own = await startTestServer(transport, engine, {}, { limiterOverrides });
        try {
          const reply = await post(own, '/api/token', { json: { invite: TEST_INVITE, name: 'x' } });
          assert.equal(reply.status, 503, Object.keys(limiterOverrides).join());
          assert.equal(reply.body.code, 'limiter_unavailable');
          assert.equal(reply.setCookie, null);
        } finally {
          await own.stop();
        }
      }
    });

    test('sessions survive a restart: a live cookie still refreshes, a logged-out one stays dead', async () => {
      const dataDir = await mkdtemp(join(tmpdir(), 'parley-restart-'));
      try {
        const first = await startTestServer(transport, engine, { dataDir });
        const live = await inviteLogin(first, 'stays');
        const gone = await inviteLogin(first, 'goes');
        assert.equal((await post(first, '/api/logout', { cookie: gone.cookie })).status, 200);
        await first.stop();

        const second = await startTestServer(transport, engine, { dataDir });
        try {
          const refreshed = await post(second, '/api/token/refresh', { cookie: live.cookie });
          assert.equal(refreshed.status, 200);
          assert.equal(await upgradeStatus(second, refreshed.body.token as string), 101);
          assert.equal((await post(second, '/api/token/refresh', { cookie: gone.cookie })).status, 401);
          assert.equal(await upgradeStatus(second, gone.token), 401, 'the epoch survived the restart');
        } finally {
          await second.stop();
        }
      } finally {
        await rm(dataDir, { recursive: true, force: true });
      }
    });
  });
}
