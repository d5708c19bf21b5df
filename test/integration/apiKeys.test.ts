import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { decodeJwt } from 'jose';
import type { ApiKeyListResponse, CreateApiKeyResponse } from '../../shared/protocol.js';
import { API_KEYS_FILE, ApiKeyStore, hashApiKey } from '../../server/auth/ApiKeyStore.js';
import { Role } from '../../server/auth/Principal.js';
import { UserStore } from '../../server/auth/UserStore.js';
import type { LlamaEngine } from '../../server/engine/LlamaEngine.js';
import { toHttpResponse } from '../../server/http/toHttpResponse.js';
import { ParleyError } from '../../server/ParleyError.js';
import type { HttpRequest } from '../../server/transport/Transport.js';
import { loadTinyEngine, startTestServer, TEST_INVITE, TRANSPORTS, type TestServer } from '../helpers/startTestServer.js';

/**
 * API keys for the OpenAI-compatible API: made, listed and revoked by their owner over HTTP on
 * a real server (both transports), and checked by the server's own authenticator, called on a
 * constructed request as the /v1 API calls it.
 */

const PASSWORD = 'keys-pass-PARLEY-5151';

interface Reply {
  readonly status: number;
  readonly text: string;
  readonly headers: Headers;
}

async function api(server: TestServer, method: string, path: string, options: { bearer?: string; json?: unknown; body?: string; contentType?: string } = {}): Promise<Reply> {
  const headers: Record<string, string> = {};
  if (options.bearer !== undefined) headers.authorization = `Bearer ${options.bearer}`;
  if (options.json !== undefined || options.body !== undefined) headers['content-type'] = options.contentType ?? 'application/json';
  const body = options.json !== undefined ? JSON.stringify(options.json) : options.body;
  const response = await fetch(`${server.baseUrl}${path}`, { method, headers, ...(body === undefined ? {} : { body }) });
  return { status: response.status, text: await response.text(), headers: response.headers };
}

async function createKey(server: TestServer, token: string, name: string): Promise<CreateApiKeyResponse> {
  const reply = await api(server, 'POST', '/api/keys', { bearer: token, json: { name } });
  assert.equal(reply.status, 201, reply.text);
  return JSON.parse(reply.text) as CreateApiKeyResponse;
}

async function listKeys(server: TestServer, token: string): Promise<ApiKeyListResponse> {
  const reply = await api(server, 'GET', '/api/keys', { bearer: token });
  assert.equal(reply.status, 200, reply.text);
  return JSON.parse(reply.text) as ApiKeyListResponse;
}

async function login(server: TestServer, name: string, password: string): Promise<string> {
  const reply = await api(server, 'POST', '/api/login', { json: { name, password } });
  assert.equal(reply.status, 200, reply.text);
  return (JSON.parse(reply.text) as { token: string }).token;
}

/** A request as the transports hand it to the HTTP handler, from `ip`. */
function keyRequest(authorization: string | undefined, ip = '127.0.0.1'): HttpRequest {
  return { method: 'GET', path: '/v1/models', query: '', headers: authorization === undefined ? {} : { authorization }, remoteAddress: ip, body: Buffer.alloc(0) };
}

/** What the authenticator answers, as the HTTP status a refusal maps to (200 with the principal when accepted). */
async function check(server: TestServer, authorization: string | undefined, ip?: string) {
  try {
    const principal = await server.started.server.authenticateApiKey(keyRequest(authorization, ip));
    return { status: 200, principal, error: undefined };
  } catch (error) {
    assert.ok(error instanceof ParleyError, `a ParleyError, not ${String(error)}`);
    return { status: error.httpStatus, principal: undefined, error };
  }
}

const bearer = (key: string) => `Bearer ${key}`;

/** Polls an async condition; the deadline only bounds how long a broken build takes to fail. */
async function eventually(condition: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`${what} not met`);
    await sleep(10);
  }
}

for (const transport of TRANSPORTS) {
  describe(`API keys over ${transport}`, () => {
    let engine: LlamaEngine;
    let server: TestServer;
    /** Every key made in this suite: none may ever show up in a log. */
    const made: string[] = [];
    const remember = (created: CreateApiKeyResponse) => {
      made.push(created.key);
      return created;
    };

    before(async () => {
      engine = await loadTinyEngine({ slots: 1 });
      server = await startTestServer(transport, engine, { tokenRequestsPerMinute: 1000, loginFailuresBeforeLockout: 1000 });
      const users = new UserStore(server.dataDir);
      await users.add('root', PASSWORD, Role.admin);
      await users.add('carol', PASSWORD);
    });
    after(async () => {
      await server?.stop();
      await engine?.dispose();
    });

    test('create, list and revoke over HTTP: the key is shown in the creating answer only, and only its hash is stored', async () => {
      const token = await server.token('dora');
      assert.deepEqual(await listKeys(server, token), { items: [] });
      const before = Date.now();
      const created = remember(await createKey(server, token, '  my editor '));
      assert.match(created.key, /^pk-parley-[A-Za-z0-9_-]{43}$/);
      assert.equal(created.prefix, created.key.slice(10, 18));
      assert.equal(created.name, 'my editor');
      assert.ok(created.createdAt >= before - 1000 && created.createdAt <= Date.now() + 1000);

      const listed = await api(server, 'GET', '/api/keys', { bearer: token });
      assert.equal(listed.headers.get('cache-control'), 'no-store');
      assert.ok(!listed.text.includes(created.key.slice(18)), 'a listing never holds the key');
      assert.deepEqual(JSON.parse(listed.text), { items: [{ name: 'my editor', prefix: created.prefix, createdAt: created.createdAt }] });

      const file = await readFile(join(server.dataDir, API_KEYS_FILE), 'utf8');
      assert.ok(!file.includes(created.key.slice(10)), 'the data dir holds no key');
      assert.ok(file.includes(hashApiKey(created.key)));

      const revoked = await api(server, 'DELETE', `/api/keys/${created.prefix}`, { bearer: token });
      assert.equal(revoked.status, 204);
      assert.deepEqual(await listKeys(server, token), { items: [] }, 'a revoked key is no longer listed');
      assert.equal((await api(server, 'DELETE', `/api/keys/${created.prefix}`, { bearer: token })).status, 204, 'revoking twice is harmless');
    });

    test("another user's prefix gets the same 404 as an unknown one, and their key keeps working", async () => {
      const owner = await server.token('owner');
      const other = await server.token('other');
      const created = remember(await createKey(server, owner, 'private'));
      const foreign = await api(server, 'DELETE', `/api/keys/${created.prefix}`, { bearer: other });
      const unknown = await api(server, 'DELETE', '/api/keys/ZZZZZZZZ', { bearer: other });
      assert.equal(foreign.status, 404);
      assert.equal(foreign.text, unknown.text);
      assert.equal((await api(server, 'DELETE', '/api/keys/not-a-prefix', { bearer: other })).status, 404);
      assert.deepEqual(await listKeys(server, other), { items: [] }, "nobody lists another's keys");
      assert.equal((await check(server, bearer(created.key))).status, 200, 'the key still works');
      assert.equal((await listKeys(server, owner)).items.length, 1);
    });

    test('only an access token manages keys: none, a bad one or an API key gets 401 with WWW-Authenticate', async () => {
      const token = await server.token('erin');
      const created = remember(await createKey(server, token, 'mine'));
      for (const credential of [undefined, 'not-a-jwt', created.key]) {
        for (const [method, path] of [['GET', '/api/keys'], ['POST', '/api/keys'], ['DELETE', `/api/keys/${created.prefix}`]] as const) {
          const reply = await api(server, method, path, { ...(credential === undefined ? {} : { bearer: credential }), ...(method === 'POST' ? { json: { name: 'more' } } : {}) });
          assert.equal(reply.status, 401, `${method} ${path} with ${credential === undefined ? 'nothing' : credential.slice(0, 12)}`);
          assert.equal(reply.headers.get('www-authenticate'), 'Bearer');
          assert.equal(JSON.parse(reply.text).code, 'unauthorized');
        }
      }
      assert.equal((await listKeys(server, token)).items.length, 1, 'nothing was made or revoked');
    });

    test('a bad body gets 400 or 415, another method 405, and the 21st live key 409', async () => {
      const token = await server.token('frank');
      assert.equal((await api(server, 'POST', '/api/keys', { bearer: token, json: {} })).status, 400);
      assert.equal((await api(server, 'POST', '/api/keys', { bearer: token, json: { name: '' } })).status, 400);
      assert.equal((await api(server, 'POST', '/api/keys', { bearer: token, json: { name: '   ' } })).status, 400);
      assert.equal((await api(server, 'POST', '/api/keys', { bearer: token, json: { name: 'x'.repeat(65) } })).status, 400);
      assert.equal((await api(server, 'POST', '/api/keys', { bearer: token, json: { name: 'a', extra: 1 } })).status, 400);
      assert.equal((await api(server, 'POST', '/api/keys', { bearer: token, body: '{"name":' })).status, 400);
      assert.equal((await api(server, 'POST', '/api/keys', { bearer: token, body: 'name=a', contentType: 'application/x-www-form-urlencoded' })).status, 415);
      const put = await api(server, 'PUT', '/api/keys', { bearer: token, json: { name: 'a' } });
      assert.equal(put.status, 405);
      assert.equal(put.headers.get('allow'), 'GET, POST');
      assert.equal((await api(server, 'GET', '/api/keys/ABCDEFGH', { bearer: token })).status, 405);
      const keys = [];
      for (let i = 0; i < 20; i++) keys.push(remember(await createKey(server, token, `key ${i}`)));
      const refused = await api(server, 'POST', '/api/keys', { bearer: token, json: { name: 'one too many' } });
      assert.equal(refused.status, 409);
      assert.equal(JSON.parse(refused.text).code, 'conflict');
      assert.equal((await api(server, 'DELETE', `/api/keys/${keys[0]?.prefix}`, { bearer: token })).status, 204);
      remember(await createKey(server, token, 'fits again'));
    });

    test("a good key gives its user's principal: an invite user's id and name, an account's name and role", async () => {
      const token = await server.token('gina');
      const invite = remember(await createKey(server, token, 'agent'));
      const accepted = await check(server, bearer(invite.key));
      assert.equal(accepted.status, 200);
      assert.deepEqual({ ...accepted.principal, expiresAt: undefined }, { userId: decodeJwt(token).sub, name: 'gina', role: 'user', keyPrefix: invite.prefix, expiresAt: undefined });
      assert.ok((accepted.principal?.expiresAt ?? 0) > Date.now() + 3600_000, 'far enough ahead for any request');
      assert.equal((await check(server, `bearer   ${invite.key}  `)).status, 200, 'the scheme is case-insensitive');

      const rootToken = await login(server, 'root', PASSWORD);
      const admin = remember(await createKey(server, rootToken, 'ops'));
      const asAdmin = await check(server, bearer(admin.key));
      assert.equal(asAdmin.principal?.userId, decodeJwt(rootToken).sub);
      assert.equal(asAdmin.principal?.name, 'root');
      assert.equal(asAdmin.principal?.role, 'admin', "an account's key carries the account's role");
    });

    test('a revoked key, a wrong key, a malformed header and no header get 401 with one message for every presented key', async () => {
      const token = await server.token('hugo');
      const created = remember(await createKey(server, token, 'soon gone'));
      assert.equal((await api(server, 'DELETE', `/api/keys/${created.prefix}`, { bearer: token })).status, 204);
      const ip = '10.1.1.1';
      const revoked = await check(server, bearer(created.key), ip);
      const wrong = await check(server, bearer(`${created.key.slice(0, -3)}${created.key.endsWith('AAA') ? 'BBB' : 'AAA'}`), ip);
      const malformed = await check(server, 'Basic dXNlcjpwYXNz', ip);
      const jwt = await check(server, bearer(token), ip);
      const missing = await check(server, undefined, ip);
      for (const outcome of [revoked, wrong, malformed, jwt, missing]) assert.equal(outcome.status, 401);
      assert.equal(revoked.error?.message, wrong.error?.message, 'a revoked key and a wrong one cannot be told apart');
      assert.equal(malformed.error?.message, wrong.error?.message);
      const response = toHttpResponse(revoked.error as ParleyError);
      assert.deepEqual(JSON.parse(String(response.body)), { code: 'unauthorized', message: 'Invalid API key.' });
    });

    test("removing the account ends its keys at once, and they are marked revoked", async () => {
      const users = new UserStore(server.dataDir);
      await users.add('ivan', PASSWORD);
      const token = await login(server, 'ivan', PASSWORD);
      const userId = decodeJwt(token).sub as string;
      const created = remember(await createKey(server, token, 'laptop'));
      assert.equal((await check(server, bearer(created.key))).status, 200);
      await users.remove('ivan');
      assert.equal((await check(server, bearer(created.key), '10.1.1.2')).status, 401, 'the next request is refused');
      const stored = await new ApiKeyStore(server.dataDir).list(userId);
      assert.notEqual(stored[0]?.revokedAt, undefined);
      await users.add('ivan', PASSWORD);
      assert.equal((await check(server, bearer(created.key), '10.1.1.2')).status, 401, 'a new account of the same name is another user');
    });

    test('signing out ends the keys at once and for good', async () => {
      const token = await server.token('jane');
      const userId = decodeJwt(token).sub as string;
      const created = remember(await createKey(server, token, 'cli'));
      assert.equal((await check(server, bearer(created.key))).status, 200);
      assert.equal((await api(server, 'POST', '/api/logout', { bearer: token })).status, 200);
      assert.equal((await check(server, bearer(created.key), '10.1.1.3')).status, 401);
      // Durable: the store marks it revoked, so forgetting the epoch (after a day) brings nothing back.
      const store = new ApiKeyStore(server.dataDir);
      await eventually(async () => (await store.list(userId)).every((key) => key.revokedAt !== undefined), 'the key is marked revoked');
    });

    test("an admin's revocation ends the user's keys, without any request needed to notice", async () => {
      await new UserStore(server.dataDir).add('kim', PASSWORD);
      const kimToken = await login(server, 'kim', PASSWORD);
      const kimId = decodeJwt(kimToken).sub as string;
      const created = remember(await createKey(server, kimToken, 'agent'));
      const bystander = remember(await createKey(server, await server.token('bystander'), 'unaffected'));
      const rootToken = await login(server, 'root', PASSWORD);
      assert.equal((await api(server, 'POST', '/api/admin/revoke', { bearer: rootToken, json: { user: 'kim' } })).status, 200);
      const store = new ApiKeyStore(server.dataDir);
      await eventually(async () => (await store.list(kimId)).every((key) => key.revokedAt !== undefined), 'the key is marked revoked');
      assert.equal((await check(server, bearer(created.key), '10.1.1.4')).status, 401);
      assert.equal((await check(server, bearer(bystander.key))).status, 200, "another user's key is untouched");
      // The revocation blocks kim's account; once an admin lifts it, signing in again gives a
      // new epoch: a key made now works.
      assert.equal((await api(server, 'POST', '/api/admin/unblock', { bearer: rootToken, json: { user: 'kim' } })).status, 200);
      const again = await login(server, 'kim', PASSWORD);
      const fresh = remember(await createKey(server, again, 'after'));
      assert.equal((await check(server, bearer(fresh.key))).status, 200);
    });

    test('a use is recorded as lastUsedAt, to the minute', async () => {
      const token = await server.token('lena');
      const created = remember(await createKey(server, token, 'used'));
      assert.equal((await listKeys(server, token)).items[0]?.lastUsedAt, undefined);
      const before = Date.now();
      assert.equal((await check(server, bearer(created.key))).status, 200);
      const lastUsedAt = (await listKeys(server, token)).items[0]?.lastUsedAt ?? 0;
      assert.ok(lastUsedAt >= before - 1000 && lastUsedAt <= Date.now() + 1000, `lastUsedAt ${lastUsedAt}`);
      assert.equal((await check(server, bearer(created.key))).status, 200);
      assert.equal((await listKeys(server, token)).items[0]?.lastUsedAt, lastUsedAt, 'not rewritten within the minute');
    });

    test('the log has the key events with IP and prefix, and never a key', async () => {
      const records = server.logs.records;
      assert.ok(made.length > 20);
      for (const key of made) {
        assert.ok(!server.logs.contains(key.slice(10)), 'no key, whole or in part past its prefix, is in the log');
      }
      const refused = records.filter((record) => record.event === 'api_key_refused');
      assert.ok(refused.length >= 5);
      for (const record of refused) assert.equal(typeof record.ip, 'string');
      assert.ok(refused.some((record) => record.reason === 'revoked' && typeof record.prefix === 'string'));
      assert.ok(refused.some((record) => record.reason === 'unknown' && record.prefix === undefined), 'an unknown key leaves no trace of itself');
      assert.ok(records.some((record) => record.event === 'api_key_created' && typeof record.prefix === 'string'));
      assert.ok(records.some((record) => record.event === 'api_key_revoked'));
    });
  });

  describe(`API key lockout over ${transport}`, () => {
    let engine: LlamaEngine;
    before(async () => {
      engine = await loadTinyEngine({ slots: 1 });
    });
    after(async () => {
      await engine?.dispose();
    });

    test('after loginFailuresBeforeLockout wrong keys the address gets 429 with a retry time, even with a good key, and for sign-ins too', async () => {
      const own = await startTestServer(transport, engine, { loginFailuresBeforeLockout: 3, tokenRequestsPerMinute: 1000 });
      try {
        const token = await own.token('mallory');
        const created = await createKey(own, token, 'real');
        const wrong = `${created.key.slice(0, 12)}${'A'.repeat(41)}`;
        // No credential at all does not count: a tool not yet configured locks nobody out.
        for (let i = 0; i < 5; i++) assert.equal((await check(own, undefined)).status, 401);
        for (let i = 0; i < 3; i++) assert.equal((await check(own, bearer(wrong))).status, 401, `wrong key ${i + 1}`);
        const locked = await check(own, bearer(created.key));
        assert.equal(locked.status, 429, 'the good key is refused while the address is locked out');
        assert.equal(locked.error?.code, 'rate_limited');
        assert.ok((locked.error?.retryAfterMs ?? 0) > 0);
        const response = toHttpResponse(locked.error as ParleyError);
        assert.ok(Number(response.headers['retry-after']) >= 1);
        const signIn = await api(own, 'POST', '/api/token', { json: { invite: TEST_INVITE, name: 'x' } });
        assert.equal(signIn.status, 429, 'the lockout is the sign-in lockout: the right invite is refused too');
        assert.equal((await check(own, bearer(created.key), '10.2.2.2')).status, 200, 'another address is not locked out');
        const lockouts = own.logs.records.filter((record) => record.event === 'lockout');
        assert.equal(lockouts.length, 1);
        assert.equal(lockouts[0]?.method, 'api_key');
        assert.ok(!own.logs.contains(created.key.slice(10)) && !own.logs.contains(wrong.slice(10)));
      } finally {
        await own.stop();
      }
    });
  });
}
