import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { decodeJwt } from 'jose';
import { Redis } from 'ioredis';
import { SIGNING_KEY_FILE } from '../../server/auth/loadOrCreateSigningKey.js';
import { Role } from '../../server/auth/Principal.js';
import { UserStore } from '../../server/auth/UserStore.js';
import { USERS_KEY } from '../../server/cluster/openAuthDocuments.js';
import { RedisDocument } from '../../server/cluster/RedisDocument.js';
import type { ConfigInput } from '../../server/config.js';
import { createApiKey } from '../helpers/createApiKey.js';
import { ScriptedEngine } from '../helpers/ScriptedEngine.js';
import { hasRedis, startRedis, type TestRedis } from '../helpers/startRedis.js';
import { startTestServer, TEST_INVITE, type TestServer } from '../helpers/startTestServer.js';
import { TcpProxy } from '../helpers/TcpProxy.js';
import { bearerUpgradeStatus } from '../helpers/upgradeStatus.js';
import { waitUntil } from '../helpers/waitUntil.js';

/**
 * Auth state shared by gateways over `--redis`: two (or three) in-process gateways with one
 * signing key and one real redis-server. A revocation on one gateway ends the user's sockets,
 * tokens and API keys on the others; a gateway started later, or one whose Redis connection was
 * down, learns it too.
 */

const TRANSPORT = 'ws';
/** Every request here comes from 127.0.0.1, and the per-address budgets hold across the gateways: lifted. */
const ROOMY = { tokenRequestsPerMinute: 100_000, logoutsPerMinute: 100_000, upgradesPerMinute: 100_000 } as const;
/** The issue's bound for a revocation to reach the other gateways' sockets. */
const REVOCATION_BOUND_MS = 1000;

function unavailable(): string | undefined {
  if (hasRedis()) return undefined;
  if (process.env.CI) throw new Error('the shared auth suite needs redis-server; .ci/run installs it');
  return 'needs redis-server (apt-get install redis-server)';
}

async function post(server: TestServer, path: string, options: { bearer?: string; json?: unknown } = {}): Promise<{ status: number; body: Record<string, unknown> }> {
  const headers: Record<string, string> = {};
  if (options.bearer !== undefined) headers.authorization = `Bearer ${options.bearer}`;
  if (options.json !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(`${server.baseUrl}${path}`, { method: 'POST', headers, ...(options.json === undefined ? {} : { body: JSON.stringify(options.json) }) });
  const text = await response.text();
  return { status: response.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

async function request(server: TestServer, method: string, path: string, bearer: string): Promise<number> {
  const response = await fetch(`${server.baseUrl}${path}`, { method, headers: { authorization: `Bearer ${bearer}` } });
  await response.arrayBuffer();
  return response.status;
}

interface Session {
  readonly token: string;
  readonly cookie: string;
  readonly binding: string;
}

/** A sign-in as the page does it (invite), or a refresh: the access token, the refresh cookie and its binding. */
async function session(server: TestServer, path: '/api/token' | '/api/token/refresh', from?: Session): Promise<{ status: number; session?: Session }> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (from) Object.assign(headers, { cookie: from.cookie, 'x-parley-binding': from.binding });
  const response = await fetch(`${server.baseUrl}${path}`, { method: 'POST', headers, body: JSON.stringify(from ? {} : { invite: TEST_INVITE, name: 'Roamer' }) });
  const body = (await response.json()) as { token?: string; refreshBinding?: string };
  const cookie = response.headers.get('set-cookie')?.split(';')[0];
  if (response.status !== 200 || body.token === undefined || cookie === undefined) return { status: response.status };
  return { status: 200, session: { token: body.token, cookie, binding: body.refreshBinding ?? from?.binding ?? '' } };
}

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** `parley <args>` as an operator runs it (no PARLEY_* variable of the test's shell), with `input` on standard input. */
function parley(args: readonly string[], input = ''): Promise<{ code: number; stdout: string; stderr: string }> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('PARLEY_')));
  return new Promise((resolve) => {
    const child = execFile(process.execPath, ['--import', 'tsx', 'server/main.ts', ...args], { cwd: ROOT, env }, (error, stdout, stderr) => {
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
    child.stdin?.end(input);
  });
}

const jtiOf = (cookie: string) => decodeJwt(cookie.slice('parley_refresh='.length)).jti;

/** Resolves with the socket's close code, or rejects if it has not closed `boundMs` after `since`. */
async function closedWithin(socket: { waitClose(timeoutMs?: number): Promise<number> }, since: number, boundMs: number): Promise<number> {
  return socket.waitClose(Math.max(1, since + boundMs - Date.now()));
}

describe('auth state shared over redis', { skip: unavailable() }, () => {
  let redis: TestRedis;
  let a: TestServer;
  let b: TestServer;
  const extra: TestServer[] = [];
  const proxies: TcpProxy[] = [];

  /** Another gateway of this installation: same Redis (or `redisUrl`), A's signing key, its own data dir. */
  const gateway = async (overrides: ConfigInput = {}) => {
    const server = await startTestServer(TRANSPORT, new ScriptedEngine(), { ...ROOMY, redis: redis.url, signingKeyFile: join(a.dataDir, SIGNING_KEY_FILE), ...overrides });
    extra.push(server);
    return server;
  };

  before(async () => {
    redis = await startRedis();
    a = await startTestServer(TRANSPORT, new ScriptedEngine(), { ...ROOMY, redis: redis.url });
    b = await gateway();
  });

  after(async () => {
    for (const server of [...extra, a]) await server?.stop();
    for (const proxy of proxies) await proxy.close();
    await redis?.close();
  });

  test("a logout on A closes the user's socket on B with 4403 within 1 s, and B refuses the old access token", async () => {
    const token = await a.token('Leaver');
    const stays = await a.token('Stays');
    const onB = await b.connect(token);
    const otherOnB = await b.connect(stays);
    assert.equal((await post(a, '/api/logout', { bearer: token })).status, 200);
    const loggedOut = Date.now();
    assert.equal(await closedWithin(onB, loggedOut, REVOCATION_BOUND_MS), 4403);
    assert.equal(await bearerUpgradeStatus(b.wsUrl, token), 401);
    assert.equal((await post(b, '/api/logout', { bearer: token })).status, 401, 'a revoked token is no credential on B either');
    assert.equal(otherOnB.closeCode, undefined, 'another user is untouched');
    assert.equal(await bearerUpgradeStatus(b.wsUrl, stays), 101);
  });

  test('an API key made on A works on B, and once revoked on A is refused on B; a logout on A ends its keys on B', async () => {
    const key = await createApiKey(a, 'Keyholder');
    assert.equal(await request(b, 'GET', '/v1/models', key), 200);
    const owner = await a.token('Keyholder two');
    const made = await fetch(`${a.baseUrl}/api/keys`, { method: 'POST', headers: { authorization: `Bearer ${owner}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'second' }) });
    assert.equal(made.status, 201);
    const { key: second, prefix } = (await made.json()) as { key: string; prefix: string };
    assert.equal(await request(b, 'GET', '/v1/models', second), 200);
    assert.equal(await request(a, 'DELETE', `/api/keys/${prefix}`, owner), 204);
    assert.equal(await request(b, 'GET', '/v1/models', second), 401);
    // The first key's owner signs out on A: B refuses the key from then on.
    const keyOwner = await a.token('Keyholder three');
    const third = await fetch(`${a.baseUrl}/api/keys`, { method: 'POST', headers: { authorization: `Bearer ${keyOwner}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'third' }) });
    const thirdKey = ((await third.json()) as { key: string }).key;
    assert.equal(await request(b, 'GET', '/v1/models', thirdKey), 200);
    assert.equal((await post(a, '/api/logout', { bearer: keyOwner })).status, 200);
    assert.equal(await request(b, 'GET', '/v1/models', thirdKey), 401);
  });

  test("accounts are shared: an admin's revocation on A closes the account's socket on B and B refuses its sign-in", async () => {
    const connection = new Redis(redis.url);
    try {
      // What `parley user add` does to the data dir, done to the shared document.
      const accounts = new UserStore('', { document: new RedisDocument(connection, USERS_KEY) });
      await accounts.add('root', 'admin-pass-PARLEY-2718', Role.admin);
      await accounts.add('carol', 'carol-pass-PARLEY-3141');
    } finally {
      connection.disconnect();
    }
    const admin = await post(a, '/api/login', { json: { name: 'root', password: 'admin-pass-PARLEY-2718' } });
    assert.equal(admin.status, 200);
    const carol = await post(b, '/api/login', { json: { name: 'carol', password: 'carol-pass-PARLEY-3141' } });
    assert.equal(carol.status, 200, 'an account added once signs in on every gateway');
    const onB = await b.connect(carol.body.token as string);
    assert.equal((await post(a, '/api/admin/revoke', { bearer: admin.body.token as string, json: { user: 'carol' } })).status, 200);
    const revoked = Date.now();
    assert.equal(await closedWithin(onB, revoked, REVOCATION_BOUND_MS), 4403);
    assert.equal((await post(b, '/api/login', { json: { name: 'carol', password: 'carol-pass-PARLEY-3141' } })).status, 403, 'the block holds on B');
  });

  test('a session begun on A refreshes on B and back (no sticky sessions); a copied cookie is reuse on either, ending the session everywhere', async () => {
    const start = await session(a, '/api/token');
    assert.ok(start.session);
    const onB = await session(b, '/api/token/refresh', start.session);
    assert.equal(onB.status, 200, 'B knows the session A began');
    assert.ok(onB.session);
    const backOnA = await session(a, '/api/token/refresh', onB.session);
    assert.equal(backOnA.status, 200, 'A sees the rotation B made');
    assert.ok(backOnA.session);
    assert.equal(await bearerUpgradeStatus(b.wsUrl, backOnA.session.token), 101);
    // The first cookie, two rotations old, comes back on B: reuse; the session ends on A too.
    assert.equal((await session(b, '/api/token/refresh', start.session)).status, 401);
    assert.equal((await session(a, '/api/token/refresh', backOnA.session)).status, 401);
  });

  test('the same cookie refreshed on A and B at once rotates once: both get the same successor', async () => {
    const start = await session(a, '/api/token');
    assert.ok(start.session);
    const [onA, onB] = await Promise.all([session(a, '/api/token/refresh', start.session), session(b, '/api/token/refresh', start.session)]);
    assert.equal(onA.status, 200);
    assert.equal(onB.status, 200);
    assert.ok(onA.session && onB.session);
    assert.equal(jtiOf(onA.session.cookie), jtiOf(onB.session.cookie), 'one rotation, one successor');
    assert.equal((await session(b, '/api/token/refresh', onA.session)).status, 200);
  });

  test("a sign-out on A ends the session's refresh on B, and an admin on A can revoke an invite user who signed in on B", async () => {
    const start = await session(a, '/api/token');
    assert.ok(start.session);
    assert.equal((await post(a, '/api/logout', { bearer: start.session.token })).status, 200);
    assert.equal((await session(b, '/api/token/refresh', start.session)).status, 401);

    const connection = new Redis(redis.url);
    try {
      await new UserStore('', { document: new RedisDocument(connection, USERS_KEY) }).add('boss', 'boss-pass-PARLEY-1414', Role.admin);
    } finally {
      connection.disconnect();
    }
    const admin = await post(a, '/api/login', { json: { name: 'boss', password: 'boss-pass-PARLEY-1414' } });
    const elsewhere = await session(b, '/api/token');
    assert.ok(elsewhere.session);
    const userId = decodeJwt(elsewhere.session.token).sub;
    assert.equal((await post(a, '/api/admin/revoke', { bearer: admin.body.token as string, json: { user: userId } })).status, 200, 'A knows the user from the shared sessions');
    assert.equal((await session(b, '/api/token/refresh', elsewhere.session)).status, 401);
    // The revocation also blocked this address (every test user's) on every gateway: lift it.
    assert.equal((await post(a, '/api/admin/unblock', { bearer: admin.body.token as string, json: { user: userId } })).status, 200);
  });

  test("an admin's revocation on A of an invite user who joined on B keeps their device out of every gateway until lifted", async () => {
    const connection = new Redis(redis.url);
    try {
      await new UserStore('', { document: new RedisDocument(connection, USERS_KEY) }).add('warden', 'warden-pass-PARLEY-5772', Role.admin);
    } finally {
      connection.disconnect();
    }
    const admin = (await post(a, '/api/login', { json: { name: 'warden', password: 'warden-pass-PARLEY-5772' } })).body.token as string;
    const device = 'device-of-the-blocked-browser-0123456789';
    const join = (server: TestServer) => post(server, '/api/token', { json: { invite: TEST_INVITE, name: 'Blocked', device } });
    const joined = await join(b);
    assert.equal(joined.status, 200);
    const userId = decodeJwt(joined.body.token as string).sub;
    assert.equal((await post(a, '/api/admin/revoke', { bearer: admin, json: { user: userId } })).status, 200);
    assert.equal((await join(b)).status, 403, 'blocked on the gateway it joined through');
    assert.equal((await join(a)).status, 403, 'and on the one that revoked it');
    assert.equal((await post(b, '/api/admin/unblock', { bearer: admin, json: { user: userId } })).status, 200, 'lifted on another gateway');
    assert.equal((await join(a)).status, 200);
  });

  test('`parley user` and `parley key` with --redis change the accounts and keys every gateway shares', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'parley-cli-'));
    try {
      const shared = ['--data-dir', dataDir, '--redis', redis.url];
      const added = await parley(['user', 'add', 'dora', ...shared], 'dora-pass-PARLEY-1732\n');
      assert.equal(added.code, 0, added.stderr);
      const signedIn = await post(b, '/api/login', { json: { name: 'dora', password: 'dora-pass-PARLEY-1732' } });
      assert.equal(signedIn.status, 200, 'an account added by the command signs in on a running gateway');
      const created = await parley(['key', 'create', 'dora', '--name', 'cli', ...shared]);
      assert.equal(created.code, 0, created.stderr);
      const key = created.stdout.trim();
      assert.equal(await request(a, 'GET', '/v1/models', key), 200);
      assert.equal(await request(b, 'GET', '/v1/models', key), 200);
      const revoked = await parley(['key', 'revoke', key.slice('pk-parley-'.length, 'pk-parley-'.length + 8), ...shared]);
      assert.equal(revoked.code, 0, revoked.stderr);
      assert.equal(await request(b, 'GET', '/v1/models', key), 401);
      const listed = await parley(['user', 'list', ...shared]);
      assert.match(listed.stdout, /^dora\tuser\ta_/m);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  test("a gateway started after a revocation refuses the revoked epoch's tokens", async () => {
    const token = await a.token('Early');
    const kept = await a.token('Kept');
    assert.equal((await post(a, '/api/logout', { bearer: token })).status, 200);
    const late = await gateway();
    assert.equal(await bearerUpgradeStatus(late.wsUrl, token), 401);
    assert.equal(await bearerUpgradeStatus(late.wsUrl, kept), 101);
  });

  test("a revocation published while B's Redis connection was down is applied once B reconnects", async () => {
    const proxy = await TcpProxy.start(redis.port);
    proxies.push(proxy);
    const cut = await gateway({ redis: `redis://127.0.0.1:${proxy.port}` });
    const token = await a.token('Offline');
    const onCut = await cut.connect(token);
    proxy.blocked = true;
    proxy.cutAll();
    await waitUntil(() => cut.logs.contains('redis subscriber connection lost'), 10_000);
    assert.equal((await post(a, '/api/logout', { bearer: token })).status, 200);
    // A has applied and published it; the cut gateway cannot have heard.
    assert.equal(await bearerUpgradeStatus(a.wsUrl, token), 401);
    assert.equal(onCut.closeCode, undefined);
    proxy.blocked = false;
    assert.equal(await onCut.waitClose(10_000), 4403);
    assert.equal(await bearerUpgradeStatus(cut.wsUrl, token), 401);
  });

  test('after Redis restarts empty, the gateways share their revocations again and their subscriptions survive', async () => {
    const token = await a.token('Before');
    const next = await a.token('After');
    const nextOnB = await b.connect(next);
    assert.equal((await post(a, '/api/logout', { bearer: token })).status, 200);
    const readies = (server: TestServer, role: 'commands' | 'subscriber') => server.logs.records.filter((record) => record.msg === `redis ${role} connection ready`).length;
    const before = [readies(a, 'commands'), readies(a, 'subscriber'), readies(b, 'subscriber')] as const;
    await redis.stop();
    await redis.start();
    await waitUntil(() => readies(a, 'commands') > before[0] && readies(a, 'subscriber') > before[1] && readies(b, 'subscriber') > before[2], 10_000, 'both gateways connected and subscribed again');
    // Delivered by message (both are subscribed again), within the bound.
    assert.equal((await post(a, '/api/logout', { bearer: next })).status, 200);
    const loggedOut = Date.now();
    assert.equal(await closedWithin(nextOnB, loggedOut, REVOCATION_BOUND_MS), 4403);
    // The restarted Redis lost the epochs; the gateways gave them back on reconnecting, so a new gateway refuses both.
    const late = await gateway();
    assert.equal(await bearerUpgradeStatus(late.wsUrl, token), 401);
    assert.equal(await bearerUpgradeStatus(late.wsUrl, next), 401);
  });
});
