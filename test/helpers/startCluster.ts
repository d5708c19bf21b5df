import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureModel } from '../../models/ensureModel.js';
import { ApiKeyStore, KeyOwnerKind } from '../../server/auth/ApiKeyStore.js';
import { SIGNING_KEY_FILE } from '../../server/auth/loadOrCreateSigningKey.js';
import { UserStore } from '../../server/auth/UserStore.js';
import type { ConfigInput } from '../../server/config.js';
import type { GateCommand } from './childGate.js';
import { isListening, ParleyProcess, START_MS } from './ParleyProcess.js';
import { hasPostgres, startPostgres, type TestPostgres } from './startPostgres.js';
import { hasRedis, startRedis, type TestRedis } from './startRedis.js';
import { startTestServer, TEST_INVITE, type TestServer } from './startTestServer.js';

/** One engine node: the real `server/main.ts --role engine` with the tiny model, its replies behind a gate. */
export interface EngineNode {
  readonly url: string;
  readonly process: ParleyProcess;
  gate(command: GateCommand): Promise<void>;
  /** SIGKILL, as a crash: no drain, no goodbye. */
  kill(): Promise<void>;
}

export interface TestCluster {
  readonly redis: TestRedis;
  readonly postgres: TestPostgres;
  readonly databaseUrl: string;
  readonly engines: readonly EngineNode[];
  readonly gateways: readonly TestServer[];
  /** The model name the gateways serve the engine nodes under. */
  readonly model: string;
  /** Another gateway of this cluster (same Redis, database, keys and engine nodes). */
  startGateway(overrides?: ConfigInput): Promise<TestServer>;
  close(): Promise<void>;
}

/** Why the cluster suite cannot run here, or undefined when it can. In CI a missing server is a failure, not a skip. */
export function clusterUnavailable(): string | undefined {
  const missing = [...(hasRedis() ? [] : ['redis-server']), ...(hasPostgres() ? [] : ['postgresql'])];
  if (missing.length === 0) return undefined;
  const why = `needs ${missing.join(' and ')} (apt-get install ${missing.join(' ')})`;
  if (process.env.CI) throw new Error(`the cluster suite ${why}; .ci/run installs them`);
  return why;
}

export const CLUSTER_MODEL = 'tiny';

/**
 * The topology on one machine, for real: 1 redis-server, 1 PostgreSQL, `engines` engine
 * nodes (child processes, `--role engine`, the tiny model behind a gate each) and `gateways`
 * gateways (in-process Parleys on port 0, so tests can look inside) with `--redis`, `--database`,
 * one shared signing key and history key, and every engine node as one upstream pool.
 *
 * The engine nodes accept one API key: it is made in the first node's data dir before any node
 * starts, and the other nodes start from a copy of that dir (how an operator provisions nodes).
 */
export async function startCluster(options: { transport?: string; gateways?: number; engines?: number; overrides?: ConfigInput } = {}): Promise<TestCluster> {
  const transport = options.transport ?? 'ws';
  const root = await mkdtemp(join(tmpdir(), 'parley-cluster-'));
  const redis = await startRedis();
  const postgres = await startPostgres();
  const databaseUrl = await postgres.createDatabase();
  const tiny = await ensureModel('tiny');

  const engines: EngineNode[] = [];
  const gateways: TestServer[] = [];
  const closeAll = async () => {
    await Promise.allSettled(gateways.map((gateway) => gateway.stop()));
    await Promise.allSettled(engines.map((engine) => engine.kill()));
    await redis.close();
    await postgres.close();
    await rm(root, { recursive: true, force: true });
  };
  try {
    // The engine nodes' key: an account on the first node, its key copied to every node.
    const firstNodeDir = join(root, 'engine-0');
    await mkdir(firstNodeDir, { recursive: true, mode: 0o700 });
    const account = await new UserStore(firstNodeDir).add('gateways', 'cluster-test-password-123');
    const { key } = await new ApiKeyStore(firstNodeDir).create({ userId: account.id, kind: KeyOwnerKind.account, userName: account.name, epoch: 0 }, 'gateways');
    const engineCount = options.engines ?? 2;
    for (let index = 0; index < engineCount; index++) {
      const dataDir = join(root, `engine-${index}`);
      if (index > 0) {
        await mkdir(dataDir, { recursive: true, mode: 0o700 });
        for (const file of ['users.json', 'api-keys.json']) await copyFile(join(firstNodeDir, file), join(dataDir, file));
      }
      engines.push(await startEngineNode(transport, tiny.path, dataDir));
    }

    // The gateways' shared secrets: one signing key (made by the first gateway) and one history key.
    const sharedDir = join(root, 'shared');
    await mkdir(sharedDir, { recursive: true, mode: 0o700 });
    const historyKeyFile = join(sharedDir, 'history.key');
    await writeFile(historyKeyFile, randomBytes(32), { mode: 0o600 });
    const signingKeyFile = join(sharedDir, SIGNING_KEY_FILE);
    const base: ConfigInput = {
      redis: redis.url,
      database: databaseUrl,
      historyKeyFile,
      upstreams: engines.map((engine) => `${CLUSTER_MODEL}=${engine.url}`),
      upstreamKeys: [`${CLUSTER_MODEL}=${key}`],
      upstreamHealthIntervalMs: 100,
      temperature: 0,
      pulledModelsDir: join(root, 'no-models'),
      ...options.overrides,
    };
    let gatewayIndex = 0;
    const startGateway = async (overrides: ConfigInput = {}) => {
      const dataDir = join(root, `gateway-${gatewayIndex++}`);
      await mkdir(dataDir, { recursive: true, mode: 0o700 });
      const first = gateways.length === 0 && gatewayIndex === 1;
      // The first gateway makes the signing key in its data dir; it becomes the shared file.
      const gateway = await startTestServer(transport, undefined, { ...base, ...(first ? {} : { signingKeyFile }), ...overrides }, { dataDir });
      if (first) await copyFile(join(dataDir, SIGNING_KEY_FILE), signingKeyFile);
      gateways.push(gateway);
      return gateway;
    };
    for (let index = 0; index < (options.gateways ?? 2); index++) await startGateway();
    return { redis, postgres, databaseUrl, engines, gateways, model: CLUSTER_MODEL, startGateway, close: closeAll };
  } catch (error) {
    await closeAll();
    throw error;
  }
}

async function startEngineNode(transport: string, modelPath: string, dataDir: string): Promise<EngineNode> {
  const parley = ParleyProcess.spawn(
    ['--role', 'engine', '--host', '127.0.0.1', '--port', '0', '--model', modelPath, '--threads', '1', '--slots', '4', '--temperature', '0', '--max-tokens', '200', '--data-dir', dataDir, '--invite', TEST_INVITE, '--no-qr', '--transport', transport],
    { gated: true },
  );
  const listening = await parley.waitForLog(isListening, START_MS);
  return {
    url: `http://127.0.0.1:${listening.port as number}`,
    process: parley,
    gate: (command) => parley.gate(command),
    async kill() {
      if (parley.child.exitCode === null && parley.child.signalCode === null) parley.signal('SIGKILL');
      await parley.exited;
    },
  };
}
