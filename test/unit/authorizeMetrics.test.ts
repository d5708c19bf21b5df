import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createTokenService, type TokenService } from '../../server/auth/createTokenService.js';
import { loadOrCreateSigningKey, type SigningKey } from '../../server/auth/loadOrCreateSigningKey.js';
import { Role } from '../../server/auth/Principal.js';
import { authorizeMetrics, isLoopback, MetricsAccess, type MetricsDecision } from '../../server/http/authorizeMetrics.js';
import { ErrorCode } from '../../shared/errorCodes.js';

const METRICS_TOKEN = 'scrape-secret-0123456789abcdef';
/** A peer on the LAN: never loopback, so only a credential can let it in. */
const LAN = '192.168.1.20';

const dirs: string[] = [];
async function freshKey(): Promise<SigningKey> {
  const dir = await mkdtemp(join(tmpdir(), 'parley-metrics-auth-'));
  dirs.push(dir);
  return loadOrCreateSigningKey(dir);
}
after(async () => {
  await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

function assertAllowed(decision: MetricsDecision, via: MetricsAccess): void {
  assert.deepEqual(decision, { ok: true, via });
}

/** A refusal is a 401 or 403 `{code, message}` that never repeats the credential it was given. */
function assertRefused(decision: MetricsDecision, status: 401 | 403, credential?: string): void {
  assert.equal(decision.ok, false, 'expected a refusal');
  if (decision.ok) return;
  assert.equal(decision.error.httpStatus, status);
  assert.equal(decision.error.code, status === 401 ? ErrorCode.unauthorized : ErrorCode.forbidden);
  assert.deepEqual(Object.keys(decision.error.toWire()).sort(), ['code', 'message']);
  if (credential) assert.ok(!decision.error.message.includes(credential), 'the message must not contain the credential');
}

describe('authorizeMetrics', () => {
  let key: SigningKey;
  let tokens: TokenService;
  let adminToken: string;
  let userToken: string;
  const epochs = new Map<string, number>();
  const withToken = () => ({ tokens, metricsToken: METRICS_TOKEN });
  const withoutToken = () => ({ tokens, metricsToken: undefined });

  before(async () => {
    key = await freshKey();
    tokens = createTokenService({ key, ttlSeconds: 300, epochs: { epochOf: (id) => epochs.get(id) ?? 0 } });
    adminToken = (await tokens.issueAccessToken({ userId: 'a_root', name: 'root', role: Role.admin })).token;
    userToken = (await tokens.issueAccessToken({ userId: 'u_guest', name: 'guest', role: Role.user })).token;
  });

  test('loopback peers are let in without a credential, in every form the transports report', async () => {
    const loopbacks = [
      '127.0.0.1',
      '127.45.6.7',
      '::1',
      '::ffff:127.0.0.1',
      // uWS writes IPv6 peers, IPv4-mapped ones included, fully expanded.
      '0000:0000:0000:0000:0000:0000:0000:0001',
      '0000:0000:0000:0000:0000:ffff:7f00:0001',
    ];
    for (const address of loopbacks) {
      assert.equal(isLoopback(address), true, address);
      assertAllowed(await authorizeMetrics({ remoteAddress: address, authorization: undefined }, withoutToken()), MetricsAccess.loopback);
    }
  });

  test('a LAN peer without a credential gets 401, whatever its address looks like', async () => {
    const others = [LAN, '10.0.0.5', '::ffff:192.168.1.20', 'fe80::1', '0.0.0.0', '::', '::127.0.0.1', '128.0.0.1', '', 'localhost', '127.0.0.1.evil.test'];
    for (const address of others) {
      assert.equal(isLoopback(address), false, address);
      assertRefused(await authorizeMetrics({ remoteAddress: address, authorization: undefined }, withToken()), 401);
    }
    for (const authorization of ['', 'Bearer', 'Bearer    ', `Basic ${Buffer.from(`x:${METRICS_TOKEN}`).toString('base64')}`, METRICS_TOKEN]) {
      assertRefused(await authorizeMetrics({ remoteAddress: LAN, authorization }, withToken()), 401, METRICS_TOKEN);
    }
  });

  test('the configured metrics token lets a LAN scraper in; near misses get 401', async () => {
    assertAllowed(await authorizeMetrics({ remoteAddress: LAN, authorization: `Bearer ${METRICS_TOKEN}` }, withToken()), MetricsAccess.metricsToken);
    assertAllowed(await authorizeMetrics({ remoteAddress: LAN, authorization: `bearer  ${METRICS_TOKEN} ` }, withToken()), MetricsAccess.metricsToken);
    const nearMisses = [METRICS_TOKEN.slice(0, -1), `${METRICS_TOKEN}x`, METRICS_TOKEN.toUpperCase(), `${METRICS_TOKEN.slice(0, -1)}E`, 'not-the-metrics-token'];
    for (const wrong of nearMisses) {
      assertRefused(await authorizeMetrics({ remoteAddress: LAN, authorization: `Bearer ${wrong}` }, withToken()), 401, wrong);
    }
  });

  test('with no metrics token configured, no bearer value passes as one', async () => {
    assertRefused(await authorizeMetrics({ remoteAddress: LAN, authorization: `Bearer ${METRICS_TOKEN}` }, withoutToken()), 401, METRICS_TOKEN);
    assertRefused(await authorizeMetrics({ remoteAddress: LAN, authorization: 'Bearer undefined' }, withoutToken()), 401);
  });

  test("an admin's access token lets a LAN peer in, with or without a metrics token configured", async () => {
    assertAllowed(await authorizeMetrics({ remoteAddress: LAN, authorization: `Bearer ${adminToken}` }, withToken()), MetricsAccess.admin);
    assertAllowed(await authorizeMetrics({ remoteAddress: LAN, authorization: `Bearer ${adminToken}` }, withoutToken()), MetricsAccess.admin);
  });

  test("a valid access token of a non-admin gets 403 forbidden", async () => {
    assertRefused(await authorizeMetrics({ remoteAddress: LAN, authorization: `Bearer ${userToken}` }, withToken()), 403, userToken);
  });

  test('expired, foreign-key, tampered, revoked and refresh tokens get 401', async () => {
    const hourAgo = createTokenService({ key, ttlSeconds: 300, now: () => Date.now() - 3_600_000 });
    const expired = (await hourAgo.issueAccessToken({ userId: 'a_root', name: 'root', role: Role.admin })).token;
    const foreign = (await createTokenService({ key: await freshKey(), ttlSeconds: 300 }).issueAccessToken({ name: 'root', role: Role.admin })).token;
    // One character in the middle of the signature changed: every one of its bits is significant.
    const at = adminToken.lastIndexOf('.') + 10;
    const tampered = `${adminToken.slice(0, at)}${adminToken[at] === 'A' ? 'B' : 'A'}${adminToken.slice(at + 1)}`;
    const refresh = await tokens.issueRefreshToken({ userId: 'a_root', name: 'root', role: Role.admin, family: 'f_1', jti: 'j_1', expiresAt: Date.now() + 60_000 });
    const revokedUser = (await tokens.issueAccessToken({ userId: 'a_gone', name: 'gone', role: Role.admin })).token;
    epochs.set('a_gone', 1);
    for (const credential of [expired, foreign, tampered, refresh, revokedUser]) {
      assertRefused(await authorizeMetrics({ remoteAddress: LAN, authorization: `Bearer ${credential}` }, withToken()), 401, credential);
    }
  });

  test('a token service that fails in an unexpected way is not taken as a yes', async () => {
    const broken: Pick<TokenService, 'verifyAccessToken'> = {
      verifyAccessToken: () => Promise.reject(new Error('key store unavailable')),
    };
    await assert.rejects(authorizeMetrics({ remoteAddress: LAN, authorization: `Bearer ${adminToken}` }, { tokens: broken, metricsToken: METRICS_TOKEN }), /key store unavailable/);
    // The metrics token and loopback do not depend on the token service.
    assertAllowed(await authorizeMetrics({ remoteAddress: LAN, authorization: `Bearer ${METRICS_TOKEN}` }, { tokens: broken, metricsToken: METRICS_TOKEN }), MetricsAccess.metricsToken);
    assertAllowed(await authorizeMetrics({ remoteAddress: '127.0.0.1', authorization: `Bearer ${adminToken}` }, { tokens: broken, metricsToken: undefined }), MetricsAccess.loopback);
  });
});
