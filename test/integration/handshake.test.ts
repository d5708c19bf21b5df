import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import type { IncomingHttpHeaders } from 'node:http';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { WebSocket, type ClientOptions } from 'ws';
import type { LlamaEngine } from '../../server/engine/LlamaEngine.js';
import { createOriginPolicy, OriginPolicyError, Refusal } from '../../server/http/createOriginPolicy.js';
import { joinLink } from '../../server/joinLink.js';
import { checkTlsFiles } from '../../server/transport/checkTlsFiles.js';
import { selectTransport } from '../../server/transport/selectTransport.js';
import type { Transport } from '../../server/transport/Transport.js';
import { rawRequest, type RawResponse } from '../helpers/rawRequest.js';
import { TestClient } from '../helpers/TestClient.js';
import { loadTinyEngine, startTestServer, TRANSPORTS, type TestServer } from '../helpers/startTestServer.js';

const EXTRA_ORIGIN = 'https://app.example';
const EXTRA_HOST = 'parley.lan';
const BROWSER_UA = 'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0';
/** Limits raised so this file's many handshakes from one address never meet a rate limit. */
const ROOMY_LIMITS = { tokenRequestsPerMinute: 10_000, upgradesPerMinute: 10_000, maxConnectionsPerUser: 1000, maxConnectionsPerIp: 1000 };

interface UpgradeResult {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

/** Opens a WebSocket; resolves with 101 and the handshake headers, or the refusal's status, headers and body. */
function upgrade(wsUrl: string, token: string, options: ClientOptions = {}): Promise<UpgradeResult> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(wsUrl, ['parley.v1', `bearer.${token}`], options);
    let headers: IncomingHttpHeaders = {};
    socket.once('upgrade', (response) => (headers = response.headers));
    socket.once('open', () => {
      socket.terminate();
      resolve({ status: 101, headers, body: '' });
    });
    socket.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => (body += chunk.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    socket.once('error', (error) => {
      if (!String(error.message).startsWith('Unexpected server response')) reject(error);
    });
  });
}

interface RawExchange {
  /** The status line, or undefined if the server closed without answering. */
  readonly statusLine: string | undefined;
  /** The response head, lower-cased. */
  readonly head: string;
}

/**
 * Writes raw bytes on a fresh TCP connection. Resolves when the server has answered (a whole
 * response head arrived) or closed the connection; rejects if it does neither within `limitMs`.
 */
function rawExchange(port: number, request: string, limitMs = 2000): Promise<RawExchange> {
  return new Promise((resolve, reject) => {
    const socket = netConnect(port, '127.0.0.1');
    let received = '';
    let settled = false;
    const finish = (error?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (error) reject(error);
      else {
        const end = received.indexOf('\r\n');
        resolve({ statusLine: end === -1 ? undefined : received.slice(0, end), head: received.split('\r\n\r\n')[0]?.toLowerCase() ?? '' });
      }
    };
    const timer = setTimeout(() => finish(new Error(`neither answered nor closed within ${limitMs} ms`)), limitMs);
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1');
      if (received.includes('\r\n\r\n')) finish();
    });
    socket.on('close', () => finish());
    // The server may close while the request is still being written: that counts as closing.
    socket.on('error', () => finish());
    socket.write(request);
  });
}

function assertForbidden(result: { status: number; body: string }, what: string): void {
  assert.equal(result.status, 403, `${what}: expected 403, got ${result.status} ${result.body}`);
  const body = JSON.parse(result.body) as Record<string, unknown>;
  assert.deepEqual(Object.keys(body).sort(), ['code', 'message'], what);
  assert.equal(body.code, 'forbidden', what);
}

function assertSecurityHeaders(headers: IncomingHttpHeaders, what: string, tls: boolean): void {
  const csp = String(headers['content-security-policy'] ?? '');
  for (const directive of ["default-src 'self'", "script-src 'self'", "object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'", "connect-src 'self'"]) {
    assert.ok(csp.includes(directive), `${what}: CSP lacks ${directive}: ${csp}`);
  }
  assert.equal(headers['x-content-type-options'], 'nosniff', what);
  assert.equal(headers['referrer-policy'], 'no-referrer', what);
  if (tls) assert.equal(headers['strict-transport-security'], 'max-age=31536000', `${what}: HSTS under TLS`);
  else assert.equal(headers['strict-transport-security'], undefined, `${what}: no HSTS over plain http`);
}

/** No header names the server software or its version; uWS's `uWebSockets: 20` mark included. */
function assertNoServerBanner(headers: IncomingHttpHeaders, what: string): void {
  for (const [name, value] of Object.entries(headers)) {
    assert.ok(!/^(server|x-powered-by|uwebsockets|via)$/i.test(name), `${what}: advertises the server with ${name}: ${String(value)}`);
    assert.ok(!/uwebsockets|node\.js|express/i.test(String(value)), `${what}: ${name}: ${String(value)}`);
  }
}

/** `{ code, message }` and nothing else: no stack, no internals. */
function assertErrorBody(body: string, what: string): void {
  const parsed = JSON.parse(body) as Record<string, unknown>;
  assert.deepEqual(Object.keys(parsed).sort(), ['code', 'message'], `${what}: ${body}`);
  assert.equal(typeof parsed.code, 'string', what);
  assert.ok(!/\bat .+:\d+:\d+|Error:|node:internal|\/server\//.test(body), `${what} leaks internals: ${body}`);
}

let engine: LlamaEngine;
before(async () => {
  engine = await loadTinyEngine({ slots: 2, contextSize: 512 });
});
after(async () => {
  await engine.dispose();
});

test('join link uses https when TLS is on', () => {
  assert.match(joinLink('192.168.1.5', 8443, 'abc', { tls: true }), /^https:\/\/192\.168\.1\.5:8443\/#invite=abc$/);
  assert.match(joinLink('192.168.1.5', 8080, 'abc'), /^http:\/\//);
});

describe('origin policy', () => {
  const policy = createOriginPolicy({ port: 8080, tls: false, localNames: ['localhost', '127.0.0.1', '::1', '192.168.1.5'], allowedHosts: ['proxy.lan:80', 'Parley.LAN'], allowedOrigins: [EXTRA_ORIGIN] });
  const upgradeVerdict = (host: string, origin?: string, extra: Record<string, string> = {}) =>
    policy.checkUpgrade({ host, ...(origin === undefined ? {} : { origin }), ...extra });

  test('Host must be an allowed name with the server port; no port only on the scheme default', () => {
    for (const host of ['localhost:8080', '127.0.0.1:8080', '[::1]:8080', '192.168.1.5:8080', 'LOCALHOST:8080', 'parley.lan:8080', 'proxy.lan', 'proxy.lan:80']) {
      assert.equal(upgradeVerdict(host), undefined, host);
    }
    for (const host of ['evil.test:8080', 'localhost:8081', 'localhost', 'localhost.evil.test:8080', '127.0.0.1.evil.test:8080', 'localhost:08080', '::1:8080', '', 'localhost:8080, evil.test:8080', 'parley.lan']) {
      assert.equal(upgradeVerdict(host), Refusal.host, host);
    }
  });

  test('Origin must match exactly after lower-casing scheme and host', () => {
    for (const origin of ['http://localhost:8080', 'HTTP://LOCALHOST:8080', 'http://[::1]:8080', 'http://parley.lan:8080', 'http://proxy.lan', EXTRA_ORIGIN, 'https://APP.example']) {
      assert.equal(upgradeVerdict('localhost:8080', origin), undefined, origin);
    }
    for (const origin of ['https://evil.test', 'https://app.example.evil.test', 'https://evilapp.example', 'https://app.example:444', 'http://app.example', 'https://localhost:8080', 'http://localhost:8080/', 'http://localhost:8080/path', 'http://user@localhost:8080', 'null', '', 'file://', 'http://localhost:8080.evil.test']) {
      assert.equal(upgradeVerdict('localhost:8080', origin), Refusal.origin, origin);
    }
  });

  test('a missing Origin is refused from a browser and allowed from other clients', () => {
    assert.equal(upgradeVerdict('localhost:8080'), undefined);
    assert.equal(upgradeVerdict('localhost:8080', undefined, { 'user-agent': 'curl/8.5.0' }), undefined);
    assert.equal(upgradeVerdict('localhost:8080', undefined, { 'user-agent': BROWSER_UA }), Refusal.origin);
    assert.equal(upgradeVerdict('localhost:8080', undefined, { 'sec-fetch-mode': 'websocket' }), Refusal.origin);
  });

  test('HTTP: Host always; Origin only on state-changing requests, and only when present', () => {
    assert.equal(policy.checkHttp('GET', { host: 'evil.test:8080' }), Refusal.host);
    assert.equal(policy.checkHttp('GET', { host: 'localhost:8080', origin: 'https://evil.test' }), undefined);
    assert.equal(policy.checkHttp('POST', { host: 'localhost:8080', origin: 'https://evil.test' }), Refusal.origin);
    assert.equal(policy.checkHttp('POST', { host: 'localhost:8080', origin: 'null' }), Refusal.origin);
    assert.equal(policy.checkHttp('POST', { host: 'localhost:8080' }), undefined);
    assert.equal(policy.checkHttp('POST', { host: 'localhost:8080', origin: 'http://localhost:8080' }), undefined);
  });

  test('under TLS the own origins are https, and 443 may be omitted', () => {
    const tls = createOriginPolicy({ port: 443, tls: true, localNames: ['localhost'], allowedHosts: [], allowedOrigins: [] });
    assert.equal(tls.checkUpgrade({ host: 'localhost', origin: 'https://localhost' }), undefined);
    assert.equal(tls.checkUpgrade({ host: 'localhost:443', origin: 'https://localhost:443' }), undefined);
    assert.equal(tls.checkUpgrade({ host: 'localhost', origin: 'http://localhost:443' }), Refusal.origin);
  });

  test('an allowlist entry that is not a bare origin or host is refused at startup', () => {
    const build = (allowedOrigins: string[], allowedHosts: string[]) => () =>
      createOriginPolicy({ port: 8080, tls: false, localNames: [], allowedHosts, allowedOrigins });
    assert.throws(build(['https://user@app.example'], []), OriginPolicyError);
    assert.throws(build(['ftp://app.example'], []), OriginPolicyError);
    assert.throws(build([], ['parley.lan/path']), OriginPolicyError);
    assert.throws(build([], ['parley.lan:99999']), OriginPolicyError);
  });
});

for (const transport of TRANSPORTS) {
  describe(`handshake and HTTP surface over ${transport}`, () => {
    let server: TestServer;
    let port: number;
    let own: string;
    let token: string;
    before(async () => {
      server = await startTestServer(transport, engine, { allowedOrigins: [EXTRA_ORIGIN], allowedHosts: [EXTRA_HOST], maxTokens: 16, ...ROOMY_LIMITS });
      port = server.started.port;
      own = `http://127.0.0.1:${port}`;
      token = await server.token();
    });
    after(async () => {
      await server.stop();
    });

    test('a foreign, look-alike or null Origin, or a browser without one, gets 403 forbidden and no upgrade', async () => {
      const cases: Array<[string, ClientOptions]> = [
        ['foreign', { origin: 'https://evil.test' }],
        ['look-alike of an allowed origin', { origin: 'https://app.example.evil.test' }],
        ['look-alike of the own origin', { origin: `http://127.0.0.1.evil.test:${port}` }],
        ['own host, wrong scheme', { origin: `https://127.0.0.1:${port}` }],
        ['null', { origin: 'null' }],
        ['browser UA, no Origin', { headers: { 'user-agent': BROWSER_UA } }],
        ['Sec-Fetch, no Origin', { headers: { 'sec-fetch-mode': 'websocket', 'sec-fetch-site': 'cross-site' } }],
      ];
      const opened = server.logs.records.filter((record) => record.msg === 'connection opened').length;
      for (const [what, options] of cases) assertForbidden(await upgrade(server.wsUrl, token, options), what);
      // The policy runs before the token check: a bad token from a foreign origin still gets 403, not 401.
      assertForbidden(await upgrade(server.wsUrl, 'not-a-jwt', { origin: 'https://evil.test' }), 'foreign Origin, bad token');
      assert.equal(server.logs.records.filter((record) => record.msg === 'connection opened').length, opened, 'no socket opened');
      assert.ok(server.logs.records.some((record) => record.event === 'request_refused' && record.reason === 'origin'));
    });

    test('the server’s own origins, a configured extra origin and a non-browser without Origin get 101', async () => {
      const cases: Array<[string, ClientOptions]> = [
        ['own origin', { origin: own }],
        ['own origin, upper case', { origin: `HTTP://127.0.0.1:${port}` }],
        ['localhost', { origin: `http://localhost:${port}`, headers: { host: `localhost:${port}` } }],
        ['--allowed-origin', { origin: EXTRA_ORIGIN }],
        ['--allowed-host as origin', { origin: `http://${EXTRA_HOST}:${port}`, headers: { host: `${EXTRA_HOST}:${port}` } }],
        ['no Origin, not a browser', {}],
      ];
      for (const [what, options] of cases) assert.equal((await upgrade(server.wsUrl, token, options)).status, 101, what);
    });

    test('a Host that is not allowed (DNS rebinding) gets 403 on HTTP and on the upgrade', async () => {
      for (const host of ['evil.test', `evil.test:${port}`, `127.0.0.1:${port + 1}`, '127.0.0.1', `localhost.evil.test:${port}`, `${EXTRA_HOST}.evil.test:${port}`]) {
        for (const path of ['/', '/api/health']) assertForbidden(await rawRequest(`${own}${path}`, { headers: { host } }), `GET ${path} Host ${host}`);
        assertForbidden(await upgrade(server.wsUrl, token, { origin: own, headers: { host } }), `upgrade Host ${host}`);
      }
      assert.ok(server.logs.records.some((record) => record.event === 'request_refused' && record.reason === 'host'));
    });

    test('a flood of refused Hosts is answered in full but logged at most 10 lines a minute (SECURITY.md: logs)', async () => {
      const fresh = await startTestServer(transport, engine, { maxTokens: 16, ...ROOMY_LIMITS });
      try {
        const url = `http://127.0.0.1:${fresh.started.port}/api/health`;
        for (let index = 0; index < 40; index++) assertForbidden(await rawRequest(url, { headers: { host: 'evil.example' } }), `request ${index}`);
        const lines = fresh.logs.records.filter((record) => record.event === 'request_refused');
        assert.equal(lines.length, 10);
        assert.ok(lines.every((record) => record.reason === 'host' && record.host === 'evil.example'));
      } finally {
        await fresh.stop();
      }
    });

    test('the machine’s own names and a configured --allowed-host are served', async () => {
      for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`, `${EXTRA_HOST}:${port}`, `PARLEY.LAN:${port}`]) {
        assert.equal((await rawRequest(`${own}/api/health`, { headers: { host } })).status, 200, host);
      }
    });

    test('POST /api/token with a foreign Origin gets 403 (CSRF); with its own Origin it issues a token', async () => {
      const body = JSON.stringify({ invite: 'test-invite-code-1234', name: 'csrf' });
      for (const origin of ['https://evil.test', 'null', 'https://app.example.evil.test']) {
        const response = await rawRequest(`${own}/api/token`, { method: 'POST', headers: { 'content-type': 'application/json', origin }, body });
        assertForbidden(response, `POST Origin ${origin}`);
      }
      const ok = await rawRequest(`${own}/api/token`, { method: 'POST', headers: { 'content-type': 'application/json', origin: own }, body });
      assert.equal(ok.status, 200, ok.body);
      // A GET with a foreign Origin changes nothing and is left to the browser's same-origin policy.
      assert.equal((await rawRequest(`${own}/api/health`, { headers: { origin: 'https://evil.test' } })).status, 200);
    });

    test('every response type carries the security headers, none advertises the server, and errors are {code, message}', async () => {
      const responses: Array<[string, RawResponse | UpgradeResult, number]> = [
        ['static page', await rawRequest(`${own}/`), 200],
        ['API JSON', await rawRequest(`${own}/api/health`), 200],
        ['API 404', await rawRequest(`${own}/api/nothing`), 404],
        ['403 bad Host', await rawRequest(`${own}/`, { headers: { host: 'evil.test' } }), 403],
        ['413 body too large', await rawRequest(`${own}/api/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: Buffer.alloc(64 * 1024, 'a') }), 413],
        ['400 bad JSON', await rawRequest(`${own}/api/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{' }), 400],
        ['upgrade refused: no token', await upgrade(server.wsUrl, 'not-a-jwt'), 401],
        ['upgrade refused: Origin', await upgrade(server.wsUrl, token, { origin: 'https://evil.test' }), 403],
      ];
      for (const [what, response, status] of responses) {
        assert.equal(response.status, status, what);
        assertSecurityHeaders(response.headers, what, false);
        assertNoServerBanner(response.headers, what);
        if (status >= 400) assertErrorBody(response.body, what);
      }
      const accepted = await upgrade(server.wsUrl, token);
      assert.equal(accepted.status, 101);
      assertNoServerBanner(accepted.headers, '101 Switching Protocols');
    });

    test('ws CVE-2024-37890: an upgrade with 2,100 headers is answered or closed, and the server keeps serving', async () => {
      const junk = 'a: 1\r\n'.repeat(2100);
      // A valid token first, the key after the junk: Node drops headers past 2,000, which is
      // what crashed ws < 8.17.1. uWS refuses more than 48 headers outright.
      const request =
        `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n` +
        `Sec-WebSocket-Protocol: parley.v1, bearer.${token}\r\n${junk}Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`;
      const result = await rawExchange(port, request);
      assert.ok(result.statusLine === undefined || /^HTTP\/1\.1 4\d\d /.test(result.statusLine), String(result.statusLine));
      // Parley's own answers carry the security headers. uWS v20.57 answers this one itself, in
      // native code before any JavaScript runs (431 and Connection: close, no body to sniff).
      const nativeUws431 = transport === 'uws' && result.statusLine?.startsWith('HTTP/1.1 431 ') === true;
      if (result.statusLine && !nativeUws431) assert.match(result.head, /\r\nx-content-type-options: nosniff/, 'answered with the security headers');
      await assertStillServes(server);
    });

    test('CVE-2021-32640: a pathological Sec-WebSocket-Protocol is handled in bounded time, and the server keeps serving', async () => {
      const upgradeWith = (protocol: string) =>
        `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n` +
        `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: ${protocol}\r\n\r\n`;
      const cases: Array<[string, string]> = [
        ['100 KB of ", "', ', '.repeat(50_000)],
        ['100 KB of "a,"', 'a,'.repeat(50_000)],
        ['100 KB of spaces then a comma', `${' '.repeat(100_000)},parley.v1`],
        // Under the 4 KiB cap, so the authenticator really splits it.
        ['4 KB of ", " around a valid offer', `${', '.repeat(1000)}parley.v1, bearer.${token}${', '.repeat(800)}`],
      ];
      for (const [what, protocol] of cases) {
        const result = await rawExchange(port, upgradeWith(protocol));
        assert.ok(result.statusLine === undefined || /^HTTP\/1\.1 (101|4\d\d) /.test(result.statusLine), `${what}: ${String(result.statusLine)}`);
      }
      await assertStillServes(server);
    });

    test('a single huge header is refused (431/400) or the connection closed, and the server keeps serving', async () => {
      const result = await rawExchange(port, `GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nX-Big: ${'b'.repeat(1 << 20)}\r\n\r\n`);
      assert.ok(result.statusLine === undefined || /^HTTP\/1\.1 4(31|00) /.test(result.statusLine), String(result.statusLine));
      const upgradeResult = await rawExchange(port, `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Big: ${'b'.repeat(1 << 20)}\r\n\r\n`);
      assert.ok(upgradeResult.statusLine === undefined || /^HTTP\/1\.1 4(31|00) /.test(upgradeResult.statusLine), String(upgradeResult.statusLine));
      await assertStillServes(server);
    });
  });

  describe(`TLS over ${transport}`, () => {
    let certDir: string;
    let server: TestServer;
    let own: string;
    before(async () => {
      certDir = await mkdtemp(join(tmpdir(), 'parley-tls-'));
      const { certFile, keyFile } = await makeCertificate(certDir, 'server');
      server = await startTestServer(transport, engine, { tlsCert: certFile, tlsKey: keyFile, maxTokens: 16, ...ROOMY_LIMITS });
      own = `https://127.0.0.1:${server.started.port}`;
    });
    after(async () => {
      await server?.stop();
      await rm(certDir, { recursive: true, force: true });
    });

    test('serves https with HSTS on every response type', async () => {
      const { ca } = server;
      assert.ok(ca);
      const token = await server.token();
      const responses: Array<[string, RawResponse | UpgradeResult, number]> = [
        ['static page', await rawRequest(`${own}/`, { ca }), 200],
        ['API JSON', await rawRequest(`${own}/api/health`, { ca }), 200],
        ['API 404', await rawRequest(`${own}/api/nothing`, { ca }), 404],
        ['403 bad Host', await rawRequest(`${own}/`, { ca, servername: 'localhost', headers: { host: 'evil.test' } }), 403],
        ['413', await rawRequest(`${own}/api/token`, { ca, method: 'POST', headers: { 'content-type': 'application/json' }, body: Buffer.alloc(64 * 1024, 'a') }), 413],
        ['upgrade refused: plain-http Origin', await upgrade(server.wsUrl, token, { ca, origin: `http://127.0.0.1:${server.started.port}` }), 403],
        ['upgrade refused: no token', await upgrade(server.wsUrl, 'not-a-jwt', { ca }), 401],
      ];
      for (const [what, response, status] of responses) {
        assert.equal(response.status, status, what);
        assertSecurityHeaders(response.headers, what, true);
        assertNoServerBanner(response.headers, what);
      }
      const accepted = await upgrade(server.wsUrl, token, { ca, origin: own });
      assert.equal(accepted.status, 101);
      assertNoServerBanner(accepted.headers, '101 over TLS');
    });

    test('wss streams a reply, and plain http on the TLS port gets no answer', async () => {
      // assertStillServes connects with the server's CA over wss and streams one reply.
      assert.match(server.wsUrl, /^wss:/);
      assert.ok((await assertStillServes(server, 'tls')).length > 0);
      await assert.rejects(rawRequest(`http://127.0.0.1:${server.started.port}/api/health`));
    });
  });
}

describe('errors never carry a stack', () => {
  for (const name of TRANSPORTS) {
    test(`a handler that throws gets 500 {code: internal} over ${name}, with the security headers`, async () => {
      const errors: unknown[] = [];
      const transport: Transport = selectTransport(name).factory({
        wsPath: '/ws',
        responseHeaders: { 'x-content-type-options': 'nosniff' },
        http: async () => {
          throw new Error('secret internal detail /srv/parley/server/x.ts');
        },
        upgrade: async () => {
          throw new Error('secret internal detail in upgrade');
        },
        socket: { open: () => undefined, message: () => undefined, drain: () => undefined, close: () => undefined },
        limits: { maxFrameBytes: 16 * 1024, maxHttpBodyBytes: 1024, maxApiBodyBytes: 4096, maxUploadBytes: 4096, idleTimeoutSeconds: 60, highWaterBytes: 64 * 1024, maxHttpConnectionsPerIp: 64 },
        onError: (error) => errors.push(error),
      });
      const { port } = await transport.listen('127.0.0.1', 0);
      try {
        const http = await rawRequest(`http://127.0.0.1:${port}/anything`);
        assert.equal(http.status, 500);
        assert.equal(http.headers['x-content-type-options'], 'nosniff');
        assert.deepEqual(JSON.parse(http.body), { code: 'internal', message: 'Internal error.' });
        const refused = await upgrade(`ws://127.0.0.1:${port}/ws`, 'x');
        assert.equal(refused.status, 500);
        assert.deepEqual(JSON.parse(refused.body), { code: 'internal', message: 'Internal error.' });
        assert.equal(errors.length, 2, 'the error reaches the server log, not the client');
      } finally {
        await transport.close(1001, 'bye');
      }
    });
  }
});

test('TLS files are checked before serving: a missing file or a foreign key is refused by name', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'parley-tls-'));
  try {
    const [one, two] = [await makeCertificate(dir, 'one'), await makeCertificate(dir, 'two')];
    assert.match((await checkTlsFiles(one)).subjectAltName, /IP Address:127\.0\.0\.1/);
    await assert.rejects(checkTlsFiles({ certFile: one.certFile, keyFile: two.keyFile }), { name: 'TlsFilesError', message: /does not belong to the certificate/ });
    await assert.rejects(checkTlsFiles({ certFile: join(dir, 'missing.pem'), keyFile: one.keyFile }), { name: 'TlsFilesError', message: /missing\.pem: ENOENT/ });
    await assert.rejects(checkTlsFiles({ certFile: one.keyFile, keyFile: one.keyFile }), { name: 'TlsFilesError', message: /is not a PEM certificate/ });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/** A self-signed P-256 certificate for localhost and 127.0.0.1, valid for a day. */
async function makeCertificate(dir: string, name: string): Promise<{ certFile: string; keyFile: string }> {
  const certFile = join(dir, `${name}.cert.pem`);
  const keyFile = join(dir, `${name}.key.pem`);
  await promisify(execFile)('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-keyout', keyFile, '-out', certFile,
  ]);
  return { certFile, keyFile };
}

/**
 * Another client can connect and get a whole reply. uWebSockets.js v20.30 sometimes closes a
 * WebSocket it has just upgraded asynchronously (1006 right after `ready`, before anything else;
 * upstream uWebSockets#1928, fixed by PR #1929, not in this binary; docs/DEVELOPERS.md). That close
 * is retried once on uws: it is not what these tests are about, and every other failure still fails.
 */
async function assertStillServes(server: TestServer, name = 'after-attack'): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    const client = await TestClient.connect(server.wsUrl, await server.token(name), undefined, server.ca ? { ca: server.ca } : {});
    const ready = await client.waitFor((frame) => frame.type === 'ready', 5000).then(
      () => true,
      () => false,
    );
    const id = ready ? client.send('still there?') : '';
    const closed = client.waitClose(30_000).then((code) => `closed ${code}`, () => 'open');
    const outcome = ready
      ? await Promise.race([client.terminal(id, 15_000).then((frame) => frame.type, () => 'no terminal frame'), closed])
      : 'no ready frame';
    // uWS v20.30 sometimes kills a socket it has just upgraded asynchronously (uWebSockets#1928,
    // fixed upstream by PR #1929, not in this binary): right after `ready` (1006) or before it.
    // The server itself keeps serving, which is what this asserts; one retry tells the two apart.
    const spurious = server.started.transport === 'uws' && (outcome === 'closed 1006' || outcome === 'no ready frame');
    if (spurious && attempt <= 2) {
      client.drop();
      continue;
    }
    assert.equal(outcome, 'done', `frames: ${JSON.stringify(client.frames.slice(-3))}`);
    const reply = client.replyText(id);
    client.close();
    return reply;
  }
}
