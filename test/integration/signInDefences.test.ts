import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join as joinPath } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { UserStore } from '../../server/auth/UserStore.js';
import type { LlamaEngine } from '../../server/engine/LlamaEngine.js';
import { rawRequest, type RawResponse } from '../helpers/rawRequest.js';
import { loadTinyEngine, startTestServer, TEST_INVITE, TRANSPORTS, type TestServer } from '../helpers/startTestServer.js';
import { TestClient } from '../helpers/TestClient.js';

/**
 * Sign-in defences that must not become a weapon (SECURITY.md): wrong passwords lock the
 * stranger's own (address, account) pair, never the owner; and a revocation keeps the person
 * out until an admin lifts it. Several machines are stood for by 127.0.0.x source addresses.
 */

const ADMIN_PASSWORD = 'admin-pass-PARLEY-7781';
const BOB_PASSWORD = 'bob-pass-PARLEY-5512';
const DEVICE = 'mallory-device-0123456789';
const OTHER_DEVICE = 'another-device-0123456789';

interface Answer {
  readonly status: number;
  readonly body: Record<string, unknown>;
  readonly retryAfter: number | undefined;
}

async function post(server: TestServer, path: string, json: unknown, options: { from?: string; bearer?: string } = {}): Promise<Answer> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (options.bearer !== undefined) headers.authorization = `Bearer ${options.bearer}`;
  const response: RawResponse = await rawRequest(`${server.baseUrl}${path}`, { method: 'POST', headers, body: JSON.stringify(json), localAddress: options.from });
  const retryAfter = response.headers['retry-after'];
  return { status: response.status, body: response.body ? (JSON.parse(response.body) as Record<string, unknown>) : {}, retryAfter: retryAfter === undefined ? undefined : Number(retryAfter) };
}

const signIn = (server: TestServer, name: string, password: string, from?: string) => post(server, '/api/login', { name, password }, { from });
const join = (server: TestServer, from: string, device?: string) => post(server, '/api/token', { invite: TEST_INVITE, name: 'guest', ...(device === undefined ? {} : { device }) }, { from });

async function adminToken(server: TestServer): Promise<string> {
  const answer = await signIn(server, 'root', ADMIN_PASSWORD, '127.0.0.1');
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer.body.token as string;
}

let engine: LlamaEngine;
before(async () => {
  engine = await loadTinyEngine({ slots: 1, contextSize: 512 });
});
after(async () => {
  await engine.dispose();
});

for (const transport of TRANSPORTS) {
  describe(`sign-in defences over ${transport}`, () => {
    let server: TestServer;
    /** `dataDir`: kept after stop, for a restart. */
    const start = async (dataDir?: string) => {
      server = await startTestServer(transport, engine, { loginFailuresBeforeLockout: 3, tokenRequestsPerMinute: 1000 }, dataDir === undefined ? {} : { dataDir });
      const users = new UserStore(server.dataDir);
      await users.add('root', ADMIN_PASSWORD, 'admin');
      await users.add('bob', BOB_PASSWORD);
    };

    test("a stranger's wrong passwords lock only the stranger's own (address, account) pair: the owner signs in from another address", async () => {
      await start();
      try {
        // The stranger (127.0.0.1) hammers the admin's account past the lockout.
        for (let i = 0; i < 3; i++) assert.equal((await signIn(server, 'root', `guess-${i}-guess`, '127.0.0.1')).status, 401);
        const stranger = await signIn(server, 'root', ADMIN_PASSWORD, '127.0.0.1');
        assert.equal(stranger.status, 429, "the stranger's pair is locked, even with the right password");
        assert.equal(stranger.body.code, 'rate_limited');
        assert.ok((stranger.retryAfter ?? 0) >= 800, `locked for the lockout time (Retry-After ${stranger.retryAfter})`);
        // The owner, at another address, is not locked out.
        assert.equal((await signIn(server, 'root', ADMIN_PASSWORD, '127.0.0.2')).status, 200, 'the owner signs in from another address');
        // The stranger keeps hammering; the owner, now recognised at .2, keeps signing in.
        for (let i = 0; i < 3; i++) assert.equal((await signIn(server, 'root', `more-${i}-guess`, '127.0.0.1')).status, 429);
        assert.equal((await signIn(server, 'root', ADMIN_PASSWORD, '127.0.0.2')).status, 200);
        assert.ok(server.logs.records.some((record) => record.event === 'lockout' && record.key === 'pair'));
      } finally {
        await server.stop();
      }
    });

    test('guesses spread over many addresses are slowed for the account (429 within the slowdown pace), and a recognised address still signs in', async () => {
      await start();
      try {
        assert.equal((await signIn(server, 'bob', BOB_PASSWORD, '127.0.0.2')).status, 200, 'bob signs in from his machine');
        // One wrong guess each from three addresses: no pair is locked, but the account is slowed.
        for (const from of ['127.0.0.10', '127.0.0.11', '127.0.0.12']) assert.equal((await signIn(server, 'bob', 'guess-guess', from)).status, 401);
        assert.equal((await signIn(server, 'bob', 'guess-guess', '127.0.0.13')).status, 401, "the slowed account's next attempt is checked");
        const slowed = await signIn(server, 'bob', 'guess-guess', '127.0.0.14');
        assert.equal(slowed.status, 429, 'the one after it, from yet another address, is not due yet');
        assert.equal(slowed.body.code, 'rate_limited');
        // 900 s / 3 failures: one attempt per 300 s for the whole account, never the 900 s lockout.
        assert.ok((slowed.retryAfter ?? 0) >= 1 && (slowed.retryAfter ?? 0) <= 300, `Retry-After ${slowed.retryAfter}`);
        assert.equal((await signIn(server, 'bob', BOB_PASSWORD, '127.0.0.15')).status, 429, 'the right password from an unrecognised address waits too');
        assert.equal((await signIn(server, 'bob', BOB_PASSWORD, '127.0.0.2')).status, 200, "bob's own address is not slowed");
        assert.ok(server.logs.records.some((record) => record.event === 'login_slowdown'));
      } finally {
        await server.stop();
      }
    });

    test('revoking an account blocks its sign-in, from every address, until an admin unblocks it', async () => {
      await start();
      try {
        const admin = await adminToken(server);
        const bob = await signIn(server, 'bob', BOB_PASSWORD, '127.0.0.2');
        assert.equal(bob.status, 200);
        const socket = await TestClient.connect(server.wsUrl, bob.body.token as string, undefined, { localAddress: '127.0.0.2' });
        await socket.waitForType('ready');
        assert.equal((await post(server, '/api/admin/revoke', { user: 'bob' }, { bearer: admin })).status, 200);
        assert.equal(await socket.waitClose(), 4403);
        for (const from of ['127.0.0.2', '127.0.0.3']) {
          const again = await signIn(server, 'bob', BOB_PASSWORD, from);
          assert.equal(again.status, 403, `blocked from ${from}`);
          assert.equal(again.body.code, 'forbidden');
        }
        assert.equal((await signIn(server, 'bob', 'wrong-password', '127.0.0.3')).status, 401, 'a wrong password is still just wrong');
        assert.ok(server.logs.records.some((record) => record.event === 'login_blocked'));

        const unblock = await post(server, '/api/admin/unblock', { user: 'BOB' }, { bearer: admin });
        assert.equal(unblock.status, 200);
        assert.equal((await signIn(server, 'bob', BOB_PASSWORD, '127.0.0.2')).status, 200, 'bob signs in again once unblocked');
        const bobId = (await new UserStore(server.dataDir).find('bob'))?.id;
        assert.deepEqual(unblock.body, { user: bobId });
        assert.ok(server.logs.records.some((record) => record.event === 'unblocked' && record.user === bobId));
      } finally {
        await server.stop();
      }
    });

    test('the CLI lifts an account block on a running server (parley user unblock writes users.json)', async () => {
      await start();
      try {
        const admin = await adminToken(server);
        assert.equal((await post(server, '/api/admin/revoke', { user: 'bob' }, { bearer: admin })).status, 200);
        assert.equal((await signIn(server, 'bob', BOB_PASSWORD)).status, 403);
        await new UserStore(server.dataDir).setBlocked('bob', false);
        assert.equal((await signIn(server, 'bob', BOB_PASSWORD)).status, 200);
      } finally {
        await server.stop();
      }
    });

    test("revoking an invite user blocks re-joins from their device and their address until unblocked; a new device at a new address still joins", async () => {
      await start();
      try {
        const admin = await adminToken(server);
        const mallory = await join(server, '127.0.0.2', DEVICE);
        assert.equal(mallory.status, 200);
        const malloryId = JSON.parse(Buffer.from((mallory.body.token as string).split('.')[1] as string, 'base64url').toString('utf8')).sub as string;
        assert.deepEqual((await post(server, '/api/admin/revoke', { user: malloryId }, { bearer: admin })).body, { user: malloryId });

        const sameDeviceElsewhere = await join(server, '127.0.0.3', DEVICE);
        assert.equal(sameDeviceElsewhere.status, 403, 'the device is blocked at any address');
        assert.equal(sameDeviceElsewhere.body.code, 'forbidden');
        assert.equal((await join(server, '127.0.0.2', OTHER_DEVICE)).status, 403, 'the address is blocked with any device');
        assert.equal((await join(server, '127.0.0.2')).status, 403, 'and without one');
        assert.ok(server.logs.records.some((record) => record.event === 'join_blocked'));
        // The documented limit: a new device at a new address is a stranger with the invite.
        assert.equal((await join(server, '127.0.0.4', OTHER_DEVICE)).status, 200);
        assert.equal((await signIn(server, 'bob', BOB_PASSWORD, '127.0.0.2')).status, 200, 'accounts are not blocked by the address');

        assert.equal((await post(server, '/api/admin/unblock', { user: malloryId }, { bearer: admin })).status, 200);
        assert.equal((await join(server, '127.0.0.2', DEVICE)).status, 200, 'joins again once unblocked');
        assert.equal((await post(server, '/api/admin/unblock', { user: malloryId }, { bearer: admin })).status, 404, 'nothing left to lift');
        const bob = await signIn(server, 'bob', BOB_PASSWORD, '127.0.0.2');
        const forbidden = await post(server, '/api/admin/unblock', { user: malloryId }, { bearer: bob.body.token as string });
        assert.equal(forbidden.status, 403, 'unblocking needs an admin');
        assert.equal((await post(server, '/api/admin/unblock', { user: malloryId })).status, 401);
      } finally {
        await server.stop();
      }
    });

    test('blocks survive a restart', async () => {
      const dataDir = await mkdtemp(joinPath(tmpdir(), 'parley-defences-'));
      await start(dataDir);
      let restarted: TestServer | undefined;
      try {
        const admin = await adminToken(server);
        const mallory = await join(server, '127.0.0.2', DEVICE);
        const malloryId = JSON.parse(Buffer.from((mallory.body.token as string).split('.')[1] as string, 'base64url').toString('utf8')).sub as string;
        await post(server, '/api/admin/revoke', { user: malloryId }, { bearer: admin });
        await post(server, '/api/admin/revoke', { user: 'bob' }, { bearer: admin });
        await server.stop();
        restarted = await startTestServer(transport, engine, { tokenRequestsPerMinute: 1000 }, { dataDir });
        assert.equal((await join(restarted, '127.0.0.3', DEVICE)).status, 403);
        assert.equal((await signIn(restarted, 'bob', BOB_PASSWORD)).status, 403);
      } finally {
        await restarted?.stop();
        await server.stop().catch(() => undefined);
        await rm(dataDir, { recursive: true, force: true });
      }
    });

    test('rotate-invite works with a pinned --invite, and the pinned code stays refused after a restart', async () => {
      const dataDir = await mkdtemp(joinPath(tmpdir(), 'parley-defences-'));
      await start(dataDir);
      let restarted: TestServer | undefined;
      try {
        const admin = await adminToken(server);
        const rotated = await post(server, '/api/admin/rotate-invite', {}, { bearer: admin });
        assert.equal(rotated.status, 200);
        const invite = rotated.body.invite as string;
        assert.match(invite, /^[A-Za-z0-9_-]{22}$/);
        assert.equal((await join(server, '127.0.0.2')).status, 401, 'the pinned code is refused at once');
        await server.stop();
        restarted = await startTestServer(transport, engine, { tokenRequestsPerMinute: 1000 }, { dataDir });
        assert.equal(restarted.started.invite.code, invite, 'the rotated code survives the restart');
        assert.equal((await join(restarted, '127.0.0.2')).status, 401, 'the same --invite does not bring the old code back');
        assert.equal((await post(restarted, '/api/token', { invite, name: 'new' })).status, 200);
        assert.ok(restarted.logs.records.some((record) => record.event === 'pinned_invite_rotated'));
      } finally {
        await restarted?.stop();
        await server.stop().catch(() => undefined);
        await rm(dataDir, { recursive: true, force: true });
      }
    });
  });
}
