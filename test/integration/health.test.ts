import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Role } from '../../server/auth/Principal.js';
import { UserStore } from '../../server/auth/UserStore.js';
import type { GatedEngine } from '../helpers/GatedEngine.js';
import { rawRequest } from '../helpers/rawRequest.js';
import { loadGatedTinyEngine, startTestServer, TEST_INVITE, TRANSPORTS, type TestServer } from '../helpers/startTestServer.js';

/** Every metric Parley defines (server/metrics/Metrics.ts); each must be exposed, even at zero. */
const PARLEY_METRICS = [
  'parley_connections',
  'parley_generations_active',
  'parley_generations_queued',
  'parley_replies_detached',
  'parley_tokens_generated_total',
  'parley_generations_total',
  'parley_cancels_total',
  'parley_rate_limited_total',
  'parley_errors_total',
  'parley_resumes_total',
  'parley_time_to_first_token_seconds',
  'parley_tokens_per_second',
] as const;

/** A few of prom-client's process metrics, which startServer turns on. */
const PROCESS_METRICS = ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_seconds', 'nodejs_heap_size_used_bytes'] as const;

const METRICS_TOKEN = 'scrape-secret-for-tests-0123456789';
const WRONG_TOKEN = 'scrape-secret-for-tests-0123456788';
const ADMIN_PASSWORD = 'admin-pass-PARLEY-4417';

/** A non-loopback IPv4 address of this machine: a request from here to it has a non-loopback peer. */
const LAN_ADDRESS = Object.values(networkInterfaces())
  .flat()
  .find((address) => address !== undefined && address.family === 'IPv4' && !address.internal)?.address;

/**
 * The value of the sample `name` whose labels are exactly `labels`, from Prometheus text
 * exposition; 0 when absent (a labelled counter has no sample until first incremented).
 */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  const want = JSON.stringify(Object.entries(labels).sort());
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const got = [...(match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((pair) => [pair[1], pair[2]]);
    if (JSON.stringify(got.sort()) === want) return Number(match[3]);
  }
  return 0;
}

/** The names declared by `# TYPE` lines. */
function declaredMetrics(text: string): Set<string> {
  return new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((match) => match[1] ?? ''));
}

async function scrape(server: TestServer): Promise<string> {
  const response = await fetch(`${server.baseUrl}/metrics`);
  assert.equal(response.status, 200);
  return response.text();
}

interface RawAnswer {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
}

/**
 * A raw keep-alive connection that has had one complete `GET path` answered and holds a second
 * `GET path` whose header section lacks only its final blank line. Both were sent in one small
 * write, which loopback delivers whole: once the first answer is back, the server has read the
 * second request's start, so a graceful close (Node's closeIdleConnections) counts the
 * connection as busy, and uWS never drops open connections when it stops listening.
 * `finish()` sends the blank line, so the server routes the second request only then.
 */
async function heldRequest(port: number, path: string): Promise<{ first: RawAnswer; finish(): Promise<RawAnswer> }> {
  const socket = connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const answers = answerReader(socket);
  const head = `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n`;
  socket.write(`${head}\r\n${head}Connection: close\r\n`);
  const first = await answers.next();
  return {
    first,
    async finish() {
      socket.write('\r\n');
      try {
        return await answers.next();
      } finally {
        socket.destroy();
      }
    },
  };
}

/** Splits the HTTP/1.1 answers arriving on `socket` (Content-Length bodies only, as Parley sends). */
function answerReader(socket: Socket): { next(): Promise<RawAnswer> } {
  let buffered = Buffer.alloc(0);
  let closed = false;
  let wake: (() => void) | undefined;
  socket.on('data', (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    wake?.();
  });
  socket.on('close', () => {
    closed = true;
    wake?.();
  });
  socket.on('error', () => undefined);
  const take = (): RawAnswer | undefined => {
    const end = buffered.indexOf('\r\n\r\n');
    if (end < 0) return undefined;
    const [statusLine = '', ...lines] = buffered.subarray(0, end).toString('latin1').split('\r\n');
    const headers: Record<string, string> = {};
    for (const line of lines) {
      const colon = line.indexOf(':');
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    const length = Number(headers['content-length'] ?? 0);
    if (buffered.length < end + 4 + length) return undefined;
    const body = buffered.subarray(end + 4, end + 4 + length).toString('utf8');
    buffered = buffered.subarray(end + 4 + length);
    return { status: Number(statusLine.split(' ')[1]), headers, body };
  };
  return {
    async next() {
      for (;;) {
        const answer = take();
        if (answer) return answer;
        if (closed) throw new Error('connection closed before a whole answer arrived');
        await new Promise<void>((resolve) => (wake = resolve));
      }
    },
  };
}

for (const transport of TRANSPORTS) {
  describe(`health and metrics over ${transport}`, () => {
    let engine: GatedEngine;
    let server: TestServer;
    before(async () => {
      engine = await loadGatedTinyEngine({ slots: 2, contextSize: 4096 });
      server = await startTestServer(transport, engine, { maxTokens: 24 });
    });
    after(async () => {
      await server.stop();
      await engine.dispose();
    });

    test('/healthz and /readyz answer 200 JSON, never cached, while the server runs; /api/health still works', async () => {
      for (const [path, body] of [['/healthz', { status: 'ok' }], ['/readyz', { status: 'ready' }], ['/api/health', { status: 'ok' }]] as const) {
        const response = await fetch(`${server.baseUrl}${path}`);
        assert.equal(response.status, 200, path);
        assert.match(response.headers.get('content-type') ?? '', /^application\/json/, path);
        assert.equal(response.headers.get('cache-control'), 'no-store', path);
        assert.equal(response.headers.get('x-content-type-options'), 'nosniff', path);
        const got = (await response.json()) as Record<string, unknown>;
        if (path === '/api/health') {
          // It also says where each model runs: the tiny model, loaded, on the CPU (a machine with a
          // GPU and node-llama-cpp's binary for it runs it there, with its layers offloaded).
          const [model] = got.models as Array<{ id: string; loaded: boolean; runtime?: { device: string; gpuLayers: number; totalLayers: number; summary: string } }>;
          assert.equal(model?.loaded, true);
          const runtime = model?.runtime;
          assert.ok(runtime !== undefined && ['cpu', 'cuda', 'metal', 'vulkan'].includes(runtime.device), JSON.stringify(runtime));
          if (runtime.device === 'cpu') {
            assert.equal(runtime.gpuLayers, 0);
            assert.match(runtime.summary, /runs on the CPU \((no GPU found|--gpu off)/);
          } else {
            assert.ok(runtime.gpuLayers > 0 && runtime.gpuLayers <= runtime.totalLayers);
            assert.match(runtime.summary, new RegExp(`gpu: ${runtime.device}, \\d+ of \\d+ layers offloaded`));
          }
          delete got.models;
        }
        assert.deepEqual(got, body, path);
      }
    });

    test('HEAD gets the status and headers with no body; other methods get 405 with Allow: GET, HEAD', async () => {
      for (const path of ['/healthz', '/readyz', '/metrics']) {
        const head = await rawRequest(`${server.baseUrl}${path}`, { method: 'HEAD' });
        assert.equal(head.status, 200, path);
        assert.equal(head.body, '', path);
        assert.equal(head.headers['cache-control'], 'no-store', path);
        for (const method of ['POST', 'PUT', 'DELETE']) {
          // An explicit length: node:http sends a DELETE body without one, which reads as a second request.
          const refused = await rawRequest(`${server.baseUrl}${path}`, { method, headers: { 'content-type': 'application/json', 'content-length': '2' }, body: '{}' });
          assert.equal(refused.status, 405, `${method} ${path}`);
          assert.equal(refused.headers.allow, 'GET, HEAD', `${method} ${path}`);
          assert.deepEqual(Object.keys(JSON.parse(refused.body) as object).sort(), ['code', 'message']);
        }
      }
      const head = await rawRequest(`${server.baseUrl}/metrics`, { method: 'HEAD' });
      assert.match(head.headers['content-type'] ?? '', /^text\/plain; version=0\.0\.4/);
    });

    test('/metrics from 127.0.0.1 needs no credential and exposes every Parley metric and the process metrics', async () => {
      const response = await rawRequest(`${server.baseUrl}/metrics`);
      assert.equal(response.status, 200);
      assert.equal(response.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
      assert.equal(response.headers['cache-control'], 'no-store');
      const declared = declaredMetrics(response.body);
      for (const name of [...PARLEY_METRICS, ...PROCESS_METRICS]) assert.ok(declared.has(name), `missing ${name}`);
      assert.equal(sample(response.body, 'parley_generations_active'), 0);
      assert.equal(sample(response.body, 'parley_generations_queued'), 0);
    });

    test('a finished reply adds its tokens, one done generation and one observation to each latency histogram', async () => {
      const before = await scrape(server);
      const client = await server.client('metered');
      client.sendFrame({ type: 'send', id: 'a', text: 'hi' });
      const done = await client.terminal('a');
      assert.equal(done.type, 'done');
      if (done.type !== 'done') return;
      assert.ok(done.usage.completionTokens > 0);
      const afterReply = await scrape(server);
      const delta = (name: string, labels: Record<string, string> = {}) => sample(afterReply, name, labels) - sample(before, name, labels);
      assert.equal(delta('parley_tokens_generated_total'), done.usage.completionTokens);
      assert.equal(delta('parley_generations_total', { outcome: 'done' }), 1);
      assert.equal(delta('parley_time_to_first_token_seconds_count'), 1);
      assert.ok(delta('parley_time_to_first_token_seconds_sum') > 0);
      assert.equal(delta('parley_tokens_per_second_count'), 1);
      // The reply's socket is still open, so the connection gauge counts it under its transport.
      assert.ok(sample(afterReply, 'parley_connections', { transport }) >= 1, 'the open socket is counted');
      assert.equal(sample(afterReply, 'parley_generations_active'), 0, 'the finished reply no longer holds a slot');
    });

    test('an error frame is counted by its code', async () => {
      const before = await scrape(server);
      const client = await server.client('wordy');
      client.sendFrame({ type: 'send', id: 'long', text: 'x'.repeat(8001) });
      const terminal = await client.terminal('long');
      assert.equal(terminal.type, 'error');
      if (terminal.type !== 'error') return;
      assert.equal(terminal.code, 'message_too_long');
      const afterError = await scrape(server);
      assert.equal(sample(afterError, 'parley_errors_total', { code: 'message_too_long' }) - sample(before, 'parley_errors_total', { code: 'message_too_long' }), 1);
    });

    test('a cancelled reply counts as a cancel with reason "cancel" and a cancelled generation', async () => {
      const own = await startTestServer(transport, engine);
      try {
        const before = await scrape(own);
        const client = await own.client();
        // The reply streams a little and is still running when it is cancelled.
        engine.gate.hold(2);
        const id = client.send('tell me everything');
        await client.waitForType('delta', id);
        client.cancel(id);
        assert.equal((await client.terminal(id)).type, 'cancelled');
        const afterCancel = await scrape(own);
        assert.equal(sample(afterCancel, 'parley_cancels_total', { reason: 'cancel' }) - sample(before, 'parley_cancels_total', { reason: 'cancel' }), 1);
        assert.equal(sample(afterCancel, 'parley_generations_total', { outcome: 'cancelled' }) - sample(before, 'parley_generations_total', { outcome: 'cancelled' }), 1);
        assert.ok(sample(afterCancel, 'parley_tokens_generated_total') > 0, 'tokens streamed before the cancel are counted');
      } finally {
        engine.gate.open();
        await own.stop();
      }
    });

    test('once close() begins, /readyz answers 503 shutting_down while /healthz still answers 200', { timeout: 30_000 }, async () => {
      const own = await startTestServer(transport, engine);
      const readiness = await heldRequest(own.started.port, '/readyz');
      const liveness = await heldRequest(own.started.port, '/healthz');
      assert.equal(readiness.first.status, 200);
      assert.deepEqual(JSON.parse(readiness.first.body), { status: 'ready' });
      assert.equal(liveness.first.status, 200);

      // close() stops accepting work synchronously; both held requests are routed after that.
      const closing = own.started.server.close();
      const [notReady, alive] = await Promise.all([readiness.finish(), liveness.finish()]);
      await closing;
      await own.stop();

      assert.equal(notReady.status, 503);
      assert.deepEqual(JSON.parse(notReady.body), { status: 'shutting_down' });
      assert.equal(notReady.headers['cache-control'], 'no-store');
      assert.equal(alive.status, 200);
      assert.deepEqual(JSON.parse(alive.body), { status: 'ok' });
    });

    describe(`/metrics from a LAN address over ${transport}`, { skip: LAN_ADDRESS === undefined ? 'this machine has no non-loopback IPv4 address' : false }, () => {
      const lanAddress = LAN_ADDRESS ?? '';
      let lan: TestServer;
      let dataDir: string;
      let lanUrl: string;
      before(async () => {
        dataDir = await mkdtemp(join(tmpdir(), 'parley-metrics-lan-'));
        await new UserStore(dataDir).add('root', ADMIN_PASSWORD, Role.admin);
        // Bound to the LAN address alone: a request from this machine to it has that address as
        // its peer, not loopback, so only a credential can open /metrics.
        lan = await startTestServer(transport, engine, { host: lanAddress, metricsToken: METRICS_TOKEN }, { dataDir });
        lanUrl = `http://${lanAddress}:${lan.started.port}`;
      });
      after(async () => {
        await lan.stop();
        await rm(dataDir, { recursive: true, force: true });
      });

      const metricsWith = (authorization?: string, method = 'GET') =>
        rawRequest(`${lanUrl}/metrics`, { method, headers: authorization === undefined ? {} : { authorization } });

      test('without a credential, or with a wrong one, /metrics is 401 with WWW-Authenticate: Bearer; the probes stay open', async () => {
        for (const authorization of [undefined, `Bearer ${WRONG_TOKEN}`, `Basic ${Buffer.from(`x:${METRICS_TOKEN}`).toString('base64')}`]) {
          const refused = await metricsWith(authorization);
          assert.equal(refused.status, 401, String(authorization));
          assert.equal(refused.headers['www-authenticate'], 'Bearer');
          const body = JSON.parse(refused.body) as { code: string; message: string };
          assert.deepEqual(Object.keys(body).sort(), ['code', 'message']);
          assert.equal(body.code, 'unauthorized');
          assert.ok(!refused.body.includes('parley_'), 'no metric leaks into a refusal');
        }
        assert.equal((await metricsWith(undefined, 'HEAD')).status, 401);
        for (const path of ['/healthz', '/readyz']) assert.equal((await rawRequest(`${lanUrl}${path}`)).status, 200, path);
      });

      test('the metrics token and an admin access token open /metrics; a non-admin access token gets 403', async () => {
        const scraped = await metricsWith(`Bearer ${METRICS_TOKEN}`);
        assert.equal(scraped.status, 200);
        assert.ok(declaredMetrics(scraped.body).has('parley_tokens_generated_total'));

        const login = await rawRequest(`${lanUrl}/api/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'root', password: ADMIN_PASSWORD }) });
        assert.equal(login.status, 200);
        const adminToken = (JSON.parse(login.body) as { token: string }).token;
        const asAdmin = await metricsWith(`Bearer ${adminToken}`);
        assert.equal(asAdmin.status, 200);
        assert.ok(declaredMetrics(asAdmin.body).has('parley_connections'));

        const invited = await rawRequest(`${lanUrl}/api/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ invite: TEST_INVITE, name: 'guest' }) });
        assert.equal(invited.status, 200);
        const userToken = (JSON.parse(invited.body) as { token: string }).token;
        const asUser = await metricsWith(`Bearer ${userToken}`);
        assert.equal(asUser.status, 403);
        assert.equal(asUser.headers['www-authenticate'], undefined);
        assert.equal((JSON.parse(asUser.body) as { code: string }).code, 'forbidden');

        // Refusals are logged with the peer and the status, never with what was presented.
        const refusals = lan.logs.records.filter((record) => record.event === 'metrics_refused');
        assert.ok(refusals.some((record) => record.status === 403 && record.ip === lanAddress));
        for (const secret of [METRICS_TOKEN, WRONG_TOKEN, adminToken, userToken, ADMIN_PASSWORD]) assert.ok(!lan.logs.contains(secret), 'a credential reached the log');
      });

      test('wrong /metrics credentials lock the address out like wrong passwords; then even the right token gets 429, and no credential never counts', async () => {
        const guarded = await startTestServer(transport, engine, { host: lanAddress, metricsToken: METRICS_TOKEN, loginFailuresBeforeLockout: 3 });
        try {
          const url = `http://${lanAddress}:${guarded.started.port}/metrics`;
          const scrape = (authorization?: string) => rawRequest(url, { headers: authorization === undefined ? {} : { authorization } });
          for (let attempt = 0; attempt < 5; attempt++) assert.equal((await scrape()).status, 401, 'a scraper without a credential is refused, not locked out');
          assert.equal((await scrape(`Bearer ${METRICS_TOKEN}`)).status, 200);
          for (let attempt = 0; attempt < 3; attempt++) assert.equal((await scrape(`Bearer ${WRONG_TOKEN}`)).status, 401);
          const locked = await scrape(`Bearer ${METRICS_TOKEN}`);
          assert.equal(locked.status, 429, 'the right token is refused while the address is locked out');
          assert.ok(Number(locked.headers['retry-after']) > 0);
          assert.equal((JSON.parse(locked.body) as { code: string }).code, 'rate_limited');
          const login = await rawRequest(`http://${lanAddress}:${guarded.started.port}/api/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ invite: TEST_INVITE, name: 'late' }) });
          assert.equal(login.status, 429, 'the same lockout covers sign-ins');
          assert.equal((await rawRequest(`http://${lanAddress}:${guarded.started.port}/healthz`)).status, 200, 'the probes stay open');
        } finally {
          await guarded.stop();
        }
      });
    });
  });
}
