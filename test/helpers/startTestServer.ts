import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureModel } from '../../models/ensureModel.js';
import { loadConfig, type ConfigInput } from '../../server/config.js';
import type { Engine } from '../../server/engine/Engine.js';
import { LlamaEngine } from '../../server/engine/LlamaEngine.js';
import { ModelPool } from '../../server/models/ModelPool.js';
import type { LimiterSet } from '../../server/limits/Limiters.js';
import { createLogger } from '../../server/logging/createLogger.js';
import { GatedEngine } from './GatedEngine.js';
import { startServer, type StartedServer } from '../../server/startServer.js';
import { LogSink } from './LogSink.js';
import { rawRequest } from './rawRequest.js';
import { TestClient } from './TestClient.js';

/**
 * The transports the integration suites run over: both, unless PARLEY_TEST_TRANSPORTS names some
 * (comma-separated). `npm run test:platforms` sets it: ws only on Node 24 with a glibc where no uWS
 * binary loads, uws only in its Debian 13 root.
 */
export const TRANSPORTS = testTransports(process.env.PARLEY_TEST_TRANSPORTS);

function testTransports(named: string | undefined): readonly ('uws' | 'ws')[] {
  if (named === undefined || named.trim() === '') return ['uws', 'ws'];
  const names = named.split(',').map((name) => name.trim());
  const unknown = names.filter((name) => name !== 'uws' && name !== 'ws');
  if (unknown.length > 0) throw new Error(`PARLEY_TEST_TRANSPORTS names unknown transports: ${unknown.join(', ')}`);
  return names as ('uws' | 'ws')[];
}
export const TEST_INVITE = 'test-invite-code-1234';

/** Loads the tiny model once per test file; greedy decoding makes its replies deterministic. */
export async function loadTinyEngine(options: { slots?: number; contextSize?: number } = {}): Promise<LlamaEngine> {
  const tiny = await ensureModel('tiny');
  return LlamaEngine.load({
    modelPath: tiny.path,
    demo: false,
    threads: 1,
    slots: options.slots ?? 4,
    contextSize: options.contextSize ?? 1024,
    temperature: 0,
  });
}

/**
 * The tiny model behind a Gate: for tests that need a reply to be still running at some moment
 * (see Gate). The gate starts open; a test that holds or paces it opens it again when done.
 */
export async function loadGatedTinyEngine(options: { slots?: number; contextSize?: number } = {}): Promise<GatedEngine> {
  return new GatedEngine(await loadTinyEngine(options));
}

export interface TestServer {
  readonly started: StartedServer;
  readonly baseUrl: string;
  readonly wsUrl: string;
  readonly logs: LogSink;
  readonly dataDir: string;
  /** Under TLS (tlsCert/tlsKey overrides): the certificate, to trust it as a CA. */
  readonly ca: Buffer | undefined;
  /** A new invite user; `from.localAddress` joins from another address of this machine (127.0.0.2: a second device). */
  token(name?: string, from?: From): Promise<string>;
  client(name?: string, from?: From): Promise<TestClient>;
  /** Opens another socket with an existing token: the same user, e.g. reconnecting after a drop. */
  connect(token: string): Promise<TestClient>;
  stop(): Promise<void>;
}

/** Where a test device connects from: a local address other than 127.0.0.1, e.g. 127.0.0.2. */
export interface From {
  readonly localAddress: string;
}

/** A real Parley on 127.0.0.1, port 0, with the given transport and a fresh data dir. */
export async function startTestServer(
  transport: string,
  /** One engine, a pool of models, or none: the config's models, loaded by the server itself. */
  engine: Engine | ModelPool | undefined,
  overrides: ConfigInput = {},
  options: {
    limiterOverrides?: Partial<LimiterSet>;
    /** Use this data dir (signing key, invite, sessions) and leave it in place on stop, so a restarted server keeps them. */
    dataDir?: string;
  } = {},
): Promise<TestServer> {
  const ownsDataDir = options.dataDir === undefined;
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), 'parley-test-')));
  // Every test user joins from 127.0.0.1, so the per-address budgets and the cap on new invite
  // users per address are lifted: the users of one test server stand for different people.
  // Tests of those limits set them themselves.
  const perAddress = { generationsPerMinutePerIp: 1_000_000, tokensPerHourPerIp: 1_000_000_000, inviteUsersPerHour: 1_000_000 };
  const config = loadConfig({ host: '127.0.0.1', port: 0, transport, dataDir, invite: TEST_INVITE, maxTokens: 64, qr: false, shutdownTimeoutMs: 0, ...perAddress, ...overrides });
  const logs = new LogSink();
  const logger = createLogger({ level: 'debug', destination: logs });
  const served = engine instanceof ModelPool ? { models: engine } : engine === undefined ? {} : { engine };
  const started = await startServer(config, { logger, ...served, limiterOverrides: options.limiterOverrides });
  const ca = config.tlsCert === undefined ? undefined : await readFile(config.tlsCert);
  const baseUrl = `${ca ? 'https' : 'http'}://127.0.0.1:${started.port}`;
  const wsUrl = `${ca ? 'wss' : 'ws'}://127.0.0.1:${started.port}/ws`;
  const clients: TestClient[] = [];
  const token = async (name = 'tester', from?: From) => {
    if (ca || from) {
      // fetch cannot be given a CA or a local address on Node 20; node:http(s) can.
      const body = JSON.stringify({ invite: TEST_INVITE, name });
      const response = await rawRequest(`${baseUrl}/api/token`, { method: 'POST', headers: { 'content-type': 'application/json' }, body, ca, localAddress: from?.localAddress });
      if (response.status !== 200) throw new Error(`token request failed: ${response.status}`);
      return (JSON.parse(response.body) as { token: string }).token;
    }
    const response = await fetch(`${baseUrl}/api/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ invite: TEST_INVITE, name }),
    });
    if (response.status !== 200) throw new Error(`token request failed: ${response.status}`);
    return ((await response.json()) as { token: string }).token;
  };
  return {
    started,
    baseUrl,
    wsUrl,
    logs,
    dataDir,
    ca,
    token,
    async client(name, from) {
      const client = await TestClient.connect(wsUrl, await token(name, from), undefined, { ...(ca ? { ca } : {}), ...(from ? { localAddress: from.localAddress } : {}) });
      clients.push(client);
      await client.waitForType('ready');
      return client;
    },
    async connect(existing) {
      const client = await TestClient.connect(wsUrl, existing, undefined, ca ? { ca } : {});
      clients.push(client);
      await client.waitForType('ready');
      return client;
    },
    async stop() {
      for (const client of clients) client.drop();
      await started.stop();
      if (ownsDataDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
}
