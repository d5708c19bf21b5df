import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ApiKeyStore, KeyOwnerKind } from '../../server/auth/ApiKeyStore.js';
import { API_KEY_PRINCIPAL_TTL_MS, createApiKeyAuthenticator } from '../../server/auth/authenticateApiKey.js';
import type { Account } from '../../server/auth/UserStore.js';
import type { LimitDecision } from '../../server/limits/Limiters.js';
import { LimitRefusedError } from '../../server/limits/LimitRefusedError.js';
import { createLogger } from '../../server/logging/createLogger.js';
import { UnauthorizedError } from '../../server/ParleyError.js';
import type { HttpRequest } from '../../server/transport/Transport.js';
import { LogSink } from '../helpers/LogSink.js';

const dirs: string[] = [];
after(async () => {
  await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

/** The authenticator over a real store, with the accounts, epochs and lockout in plain maps. */
async function setup(options: { lockedOut?: LimitDecision } = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'parley-keyauth-'));
  dirs.push(dir);
  const keys = new ApiKeyStore(dir, { now: () => 1_000_000 });
  const accounts = new Map<string, Account>([['a_ann', { id: 'a_ann', name: 'Ann', role: 'admin' }]]);
  const epochs = new Map<string, number>();
  const failures: string[] = [];
  const allowedCalls: string[] = [];
  const logs = new LogSink();
  const authenticate = createApiKeyAuthenticator({
    keys,
    users: { findById: async (id) => accounts.get(id) },
    sessions: { epochOf: (userId) => epochs.get(userId) ?? 0 },
    limiters: {
      loginAllowed: async (ip) => {
        allowedCalls.push(ip);
        return options.lockedOut ?? { ok: true };
      },
      loginFailed: async (ip) => {
        failures.push(ip);
      },
    },
    logger: createLogger({ level: 'debug', destination: logs }),
    now: () => 5_000,
  });
  const request = (authorization?: string): HttpRequest => ({ method: 'POST', path: '/v1/chat/completions', query: '', headers: authorization === undefined ? {} : { authorization }, remoteAddress: '192.0.2.7', body: Buffer.alloc(0) });
  return { keys, accounts, epochs, failures, allowedCalls, logs, authenticate, request };
}

describe('createApiKeyAuthenticator', () => {
  test("a good key gives its user's principal; an account's name and role are read at each use", async () => {
    const { keys, accounts, authenticate, request } = await setup();
    const { key, apiKey } = await keys.create({ userId: 'a_ann', kind: KeyOwnerKind.account, userName: 'ann-then', epoch: 0 }, 'editor');
    assert.deepEqual(await authenticate(request(`Bearer ${key}`)), { userId: 'a_ann', name: 'Ann', role: 'admin', expiresAt: 5_000 + API_KEY_PRINCIPAL_TTL_MS, keyPrefix: apiKey.prefix });
    accounts.set('a_ann', { id: 'a_ann', name: 'Ann', role: 'user' });
    assert.equal((await authenticate(request(`Bearer ${key}`))).role, 'user', 'a demoted account is demoted for its keys too');
    const invite = await keys.create({ userId: 'u_ivy', kind: KeyOwnerKind.invite, userName: 'Ivy', epoch: 0 }, 'agent');
    assert.deepEqual(await authenticate(request(`Bearer ${invite.key}`)), { userId: 'u_ivy', name: 'Ivy', role: 'user', expiresAt: 5_000 + API_KEY_PRINCIPAL_TTL_MS, keyPrefix: invite.apiKey.prefix });
    assert.equal((await keys.find(key))?.lastUsedAt, 1_000_000, 'the use is recorded');
  });

  test('an epoch raised after the key was made (logout, admin revocation) refuses it, and marks it revoked for good', async () => {
    const { keys, epochs, failures, logs, authenticate, request } = await setup();
    epochs.set('u_ivy', 40);
    const before = await keys.create({ userId: 'u_ivy', kind: KeyOwnerKind.invite, userName: 'Ivy', epoch: 40 }, 'one');
    assert.equal((await authenticate(request(`Bearer ${before.key}`))).userId, 'u_ivy', 'an epoch the key was made at is fine');
    epochs.set('u_ivy', 41);
    await assert.rejects(authenticate(request(`Bearer ${before.key}`)), UnauthorizedError);
    assert.notEqual((await keys.find(before.key))?.revokedAt, undefined);
    epochs.delete('u_ivy'); // the epoch is forgotten a day later
    await assert.rejects(authenticate(request(`Bearer ${before.key}`)), UnauthorizedError, 'and the key stays refused');
    const after = await keys.create({ userId: 'u_ivy', kind: KeyOwnerKind.invite, userName: 'Ivy', epoch: 0 }, 'made after');
    assert.equal((await authenticate(request(`Bearer ${after.key}`))).userId, 'u_ivy');
    assert.deepEqual(failures, ['192.0.2.7', '192.0.2.7']);
    const reasons = logs.records.filter((record) => record.event === 'api_key_refused').map((record) => record.reason);
    assert.deepEqual(reasons, ['user_revoked', 'revoked']);
  });

  test("a removed account's key is refused and marked revoked", async () => {
    const { keys, accounts, authenticate, request } = await setup();
    const { key } = await keys.create({ userId: 'a_ann', kind: KeyOwnerKind.account, userName: 'Ann', epoch: 0 }, 'editor');
    accounts.delete('a_ann');
    await assert.rejects(authenticate(request(`Bearer ${key}`)), UnauthorizedError);
    assert.notEqual((await keys.find(key))?.revokedAt, undefined);
  });

  test('the lockout is checked before the key: a locked-out address gets 429, a broken limiter 503, and the key is not looked at', async () => {
    for (const [decision, status] of [
      [{ ok: false, retryAfterMs: 90_000, failed: false }, 429],
      [{ ok: false, retryAfterMs: 1000, failed: true }, 503],
    ] as const) {
      const { keys, failures, authenticate, request } = await setup({ lockedOut: decision });
      const { key } = await keys.create({ userId: 'u_ivy', kind: KeyOwnerKind.invite, userName: 'Ivy', epoch: 0 }, 'agent');
      await assert.rejects(authenticate(request(`Bearer ${key}`)), (error: unknown) => error instanceof LimitRefusedError && error.httpStatus === status && error.retryAfterMs === decision.retryAfterMs);
      assert.equal((await keys.find(key))?.lastUsedAt, undefined, 'the key was not used');
      assert.deepEqual(failures, []);
    }
  });

  test('every presented key that fails counts against the address; no credential does not; the log never holds a key', async () => {
    const { keys, failures, logs, authenticate, request } = await setup();
    const { key } = await keys.create({ userId: 'u_ivy', kind: KeyOwnerKind.invite, userName: 'Ivy', epoch: 0 }, 'agent');
    await assert.rejects(authenticate(request()), UnauthorizedError);
    await assert.rejects(authenticate(request('  ')), UnauthorizedError);
    assert.deepEqual(failures, [], 'missing credentials do not count');
    // One character changed (never to itself: a key may end in Q).
    const presented = [`Bearer ${key.slice(0, -1)}${key.endsWith('Q') ? 'R' : 'Q'}`, `Bearer ${key} extra`, `Basic ${key}`, `Bearer ${'x'.repeat(600)}`, 'Bearer'];
    for (const header of presented) await assert.rejects(authenticate(request(header)), UnauthorizedError, header.slice(0, 20));
    assert.equal(failures.length, presented.length);
    assert.ok(!logs.contains(key.slice(10)) && !logs.contains(key.slice(10, -1)));
  });
});
