import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import { createUpgradeAuthenticator } from '../../server/auth/authenticateUpgrade.js';
import { createTokenService } from '../../server/auth/createTokenService.js';
import { loadOrCreateSigningKey } from '../../server/auth/loadOrCreateSigningKey.js';
import { Role } from '../../server/auth/Principal.js';
import { loadConfig, type ConfigInput } from '../../server/config.js';
import { toHttpResponse } from '../../server/http/toHttpResponse.js';
import { withOriginPolicy } from '../../server/http/withOriginPolicy.js';
import { LimitRefusedError } from '../../server/limits/LimitRefusedError.js';
import { Limiters, type LimiterSet } from '../../server/limits/Limiters.js';
import { limitUpgrades } from '../../server/limits/limitUpgrades.js';
import { createLogger } from '../../server/logging/createLogger.js';
import {
  BadRequestError,
  ForbiddenError,
  InternalError,
  NotFoundError,
  ParleyError,
  PayloadTooLargeError,
  ShuttingDownError,
  UnauthorizedError,
} from '../../server/ParleyError.js';
import { internalError } from '../../server/transport/internalError.js';
import { payloadTooLarge } from '../../server/transport/payloadTooLarge.js';
import { isStreamResponse, type HttpResponse, type HttpStreamResponse, type UpgradeDecision, type UpgradeHandler, type UpgradeRequest } from '../../server/transport/Transport.js';
import { ErrorCode } from '../../shared/errorCodes.js';
import { LogSink } from '../helpers/LogSink.js';

const IP = '192.168.1.20';
const upgradeRequest = (overrides: Partial<UpgradeRequest> = {}): UpgradeRequest => ({
  path: '/ws',
  headers: { 'sec-websocket-protocol': 'parley.v1, bearer.not-a-jwt' },
  remoteAddress: IP,
  ...overrides,
});
const accepting: UpgradeHandler = async () => ({ accept: true, protocol: 'parley.v1', principal: { userId: 'u_someone', name: 'someone', role: Role.user, expiresAt: Date.now() + 60_000 } });
const limiters = (config: ConfigInput, overrides: Partial<LimiterSet> = {}) => new Limiters(loadConfig(config), overrides);

function wholeResponse(response: HttpResponse | HttpStreamResponse): HttpResponse {
  assert.ok(!isStreamResponse(response), 'a refusal is a whole response, not a stream');
  return response;
}

function refusedResponse(decision: UpgradeDecision): HttpResponse {
  assert.equal(decision.accept, false, 'the upgrade is refused');
  return (decision as Extract<UpgradeDecision, { accept: false }>).response;
}

/**
 * The shape every error response has, whoever built it: the error's status, JSON with no-store,
 * a body of exactly `{code, message}` (plus `retryAfterMs` and a matching Retry-After when the
 * error says when to come back).
 */
function assertErrorShape(response: HttpResponse, what: string): Record<string, unknown> {
  assert.equal(response.headers['content-type'], 'application/json', what);
  assert.equal(response.headers['cache-control'], 'no-store', what);
  const body = JSON.parse(String(response.body)) as Record<string, unknown>;
  const keys = Object.keys(body).sort();
  if (typeof body.retryAfterMs === 'number') {
    assert.deepEqual(keys, ['code', 'message', 'retryAfterMs'], what);
    assert.equal(response.headers['retry-after'], String(Math.max(1, Math.ceil(body.retryAfterMs / 1000))), what);
  } else {
    assert.deepEqual(keys, ['code', 'message'], what);
  }
  assert.equal(typeof body.code, 'string', what);
  assert.equal(typeof body.message, 'string', what);
  return body;
}

describe('toHttpResponse', () => {
  const dirs: string[] = [];
  after(async () => {
    await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
  });

  test('every surface that refuses a request answers with exactly what toHttpResponse makes of its error', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'parley-http-errors-'));
    dirs.push(dir);
    const tokens = createTokenService({ key: await loadOrCreateSigningKey(dir), ttlSeconds: 60 });
    const authenticate = createUpgradeAuthenticator(tokens, '/ws');
    const failing = { consume: () => Promise.reject(new Error('limiter store is down')) };
    const capped = limiters({ maxConnectionsPerUser: 1 });
    capped.connectionOpened('10.0.0.9', 'u_someone', 'c1');
    const logger = createLogger({ level: 'silent', destination: new LogSink() });
    const refusedOrigin = withOriginPolicy(() => undefined, { http: async () => internalError(), upgrade: accepting }, logger);
    const rateLimited = limiters({ upgradesPerMinute: 1 });
    await rateLimited.upgrade(IP);

    // The rate refusal's wait depends on the clock, so that one expected error is built from it.
    const cases: Array<[string, HttpResponse, ParleyError | ((retryAfterMs: number) => ParleyError)]> = [
      ['upgrade: wrong path', refusedResponse(await authenticate(upgradeRequest({ path: '/nope' }))), new NotFoundError()],
      ['upgrade: no parley.v1', refusedResponse(await authenticate(upgradeRequest({ headers: { 'sec-websocket-protocol': 'bearer.x' } }))), new BadRequestError('Offer the parley.v1 subprotocol.')],
      ['upgrade: bad token', refusedResponse(await authenticate(upgradeRequest())), new UnauthorizedError()],
      [
        'upgrade: rate per IP',
        refusedResponse(await limitUpgrades(rateLimited, accepting)(upgradeRequest())),
        (retryAfterMs) => new LimitRefusedError({ ok: false, failed: false, retryAfterMs }, 'Too many connection attempts from this address.'),
      ],
      [
        'upgrade: open connections',
        refusedResponse(await limitUpgrades(capped, accepting)(upgradeRequest())),
        new LimitRefusedError({ ok: false, failed: false, retryAfterMs: 5000 }, 'Too many open connections for this address or user.'),
      ],
      [
        'upgrade: the limiter failed',
        refusedResponse(await limitUpgrades(limiters({}, { upgrades: failing }), accepting)(upgradeRequest())),
        new LimitRefusedError({ ok: false, failed: true, retryAfterMs: 1000 }, 'unused: a failed limiter has its own message'),
      ],
      ['origin policy: http', wholeResponse(await refusedOrigin.http({ method: 'GET', path: '/', query: '', headers: {}, remoteAddress: IP, body: Buffer.alloc(0) })), new ForbiddenError('Host not allowed.')],
      ['origin policy: upgrade', refusedResponse(await refusedOrigin.upgrade(upgradeRequest())), new ForbiddenError('Host not allowed.')],
      ['transport: a handler threw', internalError(), new InternalError()],
      ['transport: body too large', payloadTooLarge(), new PayloadTooLargeError()],
    ];
    for (const [what, response, error] of cases) {
      const body = assertErrorShape(response, what);
      const expected = typeof error === 'function' ? error(body.retryAfterMs as number) : error;
      assert.deepEqual(response, toHttpResponse(expected), what);
    }
  });

  test('each refusal kind keeps its status and code', () => {
    const cases: Array<[ParleyError, number, string]> = [
      [new BadRequestError('Use GET.', 405), 405, ErrorCode.badRequest],
      [new BadRequestError('Send application/json.', 415), 415, ErrorCode.badRequest],
      [new UnauthorizedError(), 401, ErrorCode.unauthorized],
      [new ForbiddenError('Origin not allowed.'), 403, ErrorCode.forbidden],
      [new NotFoundError(), 404, ErrorCode.notFound],
      [new PayloadTooLargeError(), 413, ErrorCode.payloadTooLarge],
      [new LimitRefusedError({ ok: false, failed: false, retryAfterMs: 1500 }, 'Too many.'), 429, ErrorCode.rateLimited],
      [new LimitRefusedError({ ok: false, failed: true, retryAfterMs: 1000 }, 'Too many.'), 503, ErrorCode.limiterUnavailable],
      [new ShuttingDownError(), 503, ErrorCode.shuttingDown],
      [new InternalError(), 500, ErrorCode.internal],
    ];
    for (const [error, status, code] of cases) {
      const response = toHttpResponse(error);
      assert.equal(response.status, status, error.name);
      assert.equal(assertErrorShape(response, error.name).code, code, error.name);
    }
    assert.equal(toHttpResponse(new LimitRefusedError({ ok: false, failed: false, retryAfterMs: 1500 }, 'Too many.')).headers['retry-after'], '2');
    assert.equal(toHttpResponse(new LimitRefusedError({ ok: false, failed: false, retryAfterMs: 1 }, 'Too many.')).headers['retry-after'], '1');
  });

  test('no stack, cause or other property of the error reaches the body', () => {
    const secret = new Error('secret detail at /srv/parley/server/db.ts:12:3');
    const errors = [
      new InternalError(secret),
      new ParleyError(ErrorCode.engineError, 'The model failed.', { httpStatus: 500, cause: secret }),
      Object.assign(new UnauthorizedError('Wrong invite code.', secret), { token: 'eyJ-secret-token', invite: 'secret-invite' }),
    ];
    for (const error of errors) {
      const response = toHttpResponse(error);
      const body = String(response.body);
      assert.deepEqual(JSON.parse(body), { code: error.code, message: error.message }, error.name);
      assert.ok(!/secret|\/srv\/|\bat .+:\d+:\d+|Error:/.test(body), `${error.name} leaks: ${body}`);
      assert.ok(!/secret/.test(JSON.stringify(response.headers)), `${error.name} leaks into headers`);
    }
  });

  test('route headers are added, and may set their own Retry-After', () => {
    const unauthorized = toHttpResponse(new UnauthorizedError(), { 'www-authenticate': 'Bearer' });
    assert.equal(unauthorized.headers['www-authenticate'], 'Bearer');
    assertErrorShape(unauthorized, '401 with a challenge');
    const closing = toHttpResponse(new ShuttingDownError(), { 'retry-after': '5' });
    assert.equal(closing.headers['retry-after'], '5');
    assert.deepEqual(JSON.parse(String(closing.body)), { code: 'shutting_down', message: 'The server is shutting down.' });
  });

  test('no other server file builds an error body by hand', async () => {
    const root = fileURLToPath(new URL('../../server', import.meta.url));
    const handmade: string[] = [];
    for (const entry of await readdir(root, { recursive: true, withFileTypes: true })) {
      if (!entry.isFile() || !entry.name.endsWith('.ts')) continue;
      const path = join(entry.parentPath, entry.name);
      if (/JSON\.stringify\(\s*\{\s*code\b/.test(await readFile(path, 'utf8'))) handmade.push(relative(root, path));
    }
    assert.deepEqual(handmade, []);
  });
});
