/**
 * `npm run cluster`: Parley's scale-out layout on this one machine, everything on 127.0.0.1, to
 * try it: redis-server, PostgreSQL, engine nodes (`--role engine`) and gateways in front of them
 * that share the signing key, the history key, Redis and PostgreSQL (docs/deploy.md spreads the
 * same layout over machines).
 *
 *   npm run cluster -- [--gateways 2] [--engines 2] [--model demo|tiny|<file.gguf>] [--port <n>]
 *                      [--allowed-host <name>] [--allowed-origin <origin>] [--smoke]
 *
 * State stays in .cluster/ between runs (git-ignored): each process's data dir, the PostgreSQL
 * cluster, Redis's append-only file, and the shared secrets in .cluster/shared/ (mode 0600).
 * Every line the processes write is shown behind their name. Ctrl-C stops the gateways, then the
 * engine nodes, then Redis and PostgreSQL, each with SIGTERM (SIGINT for PostgreSQL's fast
 * shutdown) and a wait; a second Ctrl-C kills them all at once.
 */
import { randomBytes } from 'node:crypto';
import { access, mkdir, readFile, writeFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError, Option } from 'commander';
import { ensureModel } from '../models/ensureModel.js';
import { GeneratedModelKind } from '../models/GeneratedModel.js';
import { loadOrCreateSigningKey, SIGNING_KEY_FILE } from '../server/auth/loadOrCreateSigningKey.js';
import { HISTORY_KEY_FILE, loadOrCreateHistoryKey } from '../server/history/loadOrCreateHistoryKey.js';
import { joinLink } from '../server/joinLink.js';
import { ClusterChild } from './cluster/ClusterChild.js';
import { prepareEngineKey } from './cluster/prepareEngineKey.js';
import { smokeCheck } from './cluster/smokeCheck.js';
import { postgresBinDir, startPostgresServer, type ClusterPostgres } from './cluster/startPostgresServer.js';
import { startRedisServer, type ClusterRedis } from './cluster/startRedisServer.js';
import { which } from './cluster/which.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
/** How long a Parley process may take to listen: an engine node loads its model first. */
const START_TIMEOUT_MS = 180_000;
/**
 * Every request from the gateways reaches a node as one user, the owner of its key: the node's
 * per-user budgets and queue must fit everyone's traffic (docs/deploy.md, "Engine nodes").
 */
const ENGINE_LIMITS = ['--generations-per-minute', '100000', '--tokens-per-hour', '1000000000', '--max-queued-per-user', '32'];
/**
 * Every client of this cluster comes from 127.0.0.1, as every client behind a balancer comes from
 * its address (docs/deploy.md): the gateways' per-IP limits, shared through Redis and kept in its
 * file between runs, are raised so that trying it (and --smoke, run after run) is not refused.
 * The per-user limits stay the defaults.
 */
const GATEWAY_LIMITS = ['--invite-users-per-hour', '1000', '--token-requests-per-minute', '600', '--generations-per-minute-per-ip', '600', '--tokens-per-hour-per-ip', '100000000'];
/** Past the processes' own drain (--shutdown-timeout-ms, 10 s by default). */
const STOP_TIMEOUT_MS = 30_000;

const count = (most: number) => (value: string) => {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 1 || parsed > most) throw new InvalidArgumentError(`a whole number from 1 to ${most}`);
  return parsed;
};
const port = (value: string) => {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 0 || parsed > 65535) throw new InvalidArgumentError('a port number (0: free ports)');
  return parsed;
};

const options = new Command('cluster')
  .description("Parley's scale-out layout on this machine, on loopback: Redis, PostgreSQL, engine nodes and gateways (docs/deploy.md)")
  .addOption(new Option('--gateways <n>', 'gateways').argParser(count(8)).default(2))
  .addOption(new Option('--engines <n>', 'engine nodes (--role engine)').argParser(count(8)).default(2))
  .addOption(new Option('--model <model>', "the engine nodes' model: demo or tiny (Parley's generated ones) or a GGUF file").default('demo'))
  .addOption(new Option('--port <n>', "the first gateway's port; the others take the next ones (0: free ports)").argParser(port).default(0))
  .addOption(new Option('--dir <path>', 'where the cluster keeps its state').default('.cluster'))
  .addOption(new Option('--allowed-host <host...>', "the gateways' --allowed-host: a name a proxy in front of them forwards as Host"))
  .addOption(new Option('--allowed-origin <origin...>', "the gateways' --allowed-origin: the page's origin behind such a proxy"))
  .option('--smoke', 'chat through every gateway (chat socket and /v1), then stop; exits 1 if a step failed', false)
  .parse()
  .opts<{ gateways: number; engines: number; model: string; port: number; dir: string; allowedHost?: string[]; allowedOrigin?: string[]; smoke: boolean }>();

const write = (line: string) => process.stdout.write(`${line}\n`);
const say = (line: string) => write(`[cluster] ${line}`);

const redisAvailable = which('redis-server') !== undefined;
const postgresBin = postgresBinDir();
if (!redisAvailable || postgresBin === undefined) {
  const missing = [...(redisAvailable ? [] : [{ what: 'redis-server', apt: 'redis-server', brew: 'redis' }]), ...(postgresBin === undefined ? [{ what: 'PostgreSQL (initdb, postgres)', apt: 'postgresql', brew: 'postgresql' }] : [])];
  process.stderr.write(`npm run cluster needs ${missing.map((entry) => entry.what).join(' and ')} on this machine.\n` +
    `On Debian or Ubuntu: sudo apt-get install ${missing.map((entry) => entry.apt).join(' ')}\n` +
    `On macOS: brew install ${missing.map((entry) => entry.brew).join(' ')}\n`);
  process.exit(2);
}

const dir = resolve(ROOT, options.dir);
const shared = join(dir, 'shared');
const engineDirs = Array.from({ length: options.engines }, (_, index) => join(dir, `engine-${index + 1}`));
const gatewayDirs = Array.from({ length: options.gateways }, (_, index) => join(dir, `gateway-${index + 1}`));

let redis: ClusterRedis | undefined;
let postgres: ClusterPostgres | undefined;
const engines: ClusterChild[] = [];
const gateways: ClusterChild[] = [];
let stopping: Promise<void> | undefined;

/** Gateways first (they drain their replies), then the engine nodes, then what they all share. */
function stopAll(): Promise<void> {
  stopping ??= (async () => {
    say('stopping: gateways, then engine nodes, then Redis and PostgreSQL');
    await Promise.all(gateways.map((child) => child.stop('SIGTERM', STOP_TIMEOUT_MS)));
    await Promise.all(engines.map((child) => child.stop('SIGTERM', STOP_TIMEOUT_MS)));
    await Promise.all([redis?.child.stop('SIGTERM', STOP_TIMEOUT_MS), postgres?.stop()]);
    say('stopped');
  })();
  return stopping;
}

function killAll(): void {
  for (const child of [...gateways, ...engines, redis?.child, postgres?.child]) child?.kill();
}

/**
 * A second signal this soon after the first is the same Ctrl-C delivered twice (the terminal
 * signals npm, tsx and this process, and the wrappers relay it too), not an insistence.
 */
const REPEATED_SIGNAL_MS = 500;
let firstSignalAt: number | undefined;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (firstSignalAt !== undefined && Date.now() - firstSignalAt < REPEATED_SIGNAL_MS) return;
    if (firstSignalAt !== undefined) {
      say('second signal: killing every process now');
      killAll();
      process.exit(130);
    }
    firstSignalAt = Date.now();
    void stopAll().then(() => process.exit(0));
  });
}

/** A secret of `bytes` random bytes (base64url) kept in `file`, mode 0600, made on first use. */
async function secret(file: string, bytes: number): Promise<string> {
  const kept = await readFile(file, 'utf8').then((text) => text.trim(), () => '');
  if (kept !== '') return kept;
  const made = randomBytes(bytes).toString('base64url');
  await writeFile(file, `${made}\n`, { mode: 0o600 });
  return made;
}

/** The model file and the name the gateways serve it as. */
async function resolveModel(model: string): Promise<{ path: string; name: string }> {
  if (model === GeneratedModelKind.demo || model === GeneratedModelKind.tiny) {
    const ensured = await ensureModel(model, { logger: say });
    return { path: ensured.path, name: model };
  }
  const path = resolve(model);
  await access(path).catch(() => {
    throw new Error(`--model ${model}: no such file (give demo, tiny or a GGUF file)`);
  });
  return { path, name: basename(path, '.gguf').replace(/[^\w.:-]/g, '-').replace(/^[^A-Za-z0-9]+/, '') || 'model' };
}

/** The port from Parley's `listening on` log record. */
function listeningPort(line: string): number | undefined {
  if (!line.includes('"listening on')) return undefined;
  const record = JSON.parse(line) as { port?: unknown };
  return typeof record.port === 'number' ? record.port : undefined;
}

/** This environment without PARLEY_* settings, plus `extra`: a cluster process reads only what this script gives it. */
function environment(extra: Record<string, string>): NodeJS.ProcessEnv {
  return { ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('PARLEY_'))), ...extra };
}

function startParley(name: string, args: readonly string[], env: Record<string, string>): ClusterChild {
  return new ClusterChild(name, process.execPath, ['--import', 'tsx', 'server/main.ts', '--host', '127.0.0.1', '--no-banner', ...args], { cwd: ROOT, env: environment(env), write });
}

/** Its port, once it has said it is ready (the line after `listening on`). */
async function ready(child: ClusterChild): Promise<number> {
  const [port] = await Promise.all([child.waitForLine(listeningPort, START_TIMEOUT_MS), child.waitForLine((line) => (line.includes('Parley is ready') ? true : undefined), START_TIMEOUT_MS)]);
  return port;
}

async function start(): Promise<{ urls: string[]; invite: string }> {
  // Traversable (PostgreSQL's own user needs its folder in here), not listable; each part's folder is 0700.
  await mkdir(dir, { recursive: true, mode: 0o711 });
  await mkdir(shared, { recursive: true, mode: 0o700 });
  // The secrets every gateway shares: made here as a first gateway would make them in its data dir.
  await loadOrCreateSigningKey(shared);
  await loadOrCreateHistoryKey({ dataDir: shared });
  const invite = await secret(join(shared, 'invite'), 18);
  const model = await resolveModel(options.model);

  say(`starting Redis and PostgreSQL in ${options.dir}`);
  const redisPassword = await secret(join(shared, 'redis.password'), 24);
  const postgresPassword = await secret(join(shared, 'postgres.password'), 24);
  // Both settle before a failure is thrown, so the one that did start is there to be stopped.
  const [redisStarted, postgresStarted] = await Promise.allSettled([
    startRedisServer(join(dir, 'redis'), redisPassword, write).then((started) => (redis = started)),
    startPostgresServer(postgresBin as string, join(dir, 'postgres'), postgresPassword, write).then((started) => (postgres = started)),
  ]);
  for (const result of [redisStarted, postgresStarted]) if (result.status === 'rejected') throw result.reason;
  if (redis === undefined || postgres === undefined) throw new Error('unreachable: both started');

  const engineKey = await prepareEngineKey(ROOT, engineDirs, join(shared, 'engine.key'));
  say(`starting ${options.engines} engine node${options.engines === 1 ? '' : 's'} with ${model.path}`);
  engines.push(...engineDirs.map((dataDir, index) => startParley(`engine-${index + 1}`, ['--role', 'engine', '--port', '0', '--model', model.path, '--data-dir', dataDir, ...ENGINE_LIMITS], {})));
  const enginePorts = await Promise.all(engines.map(ready));

  say(`starting ${options.gateways} gateway${options.gateways === 1 ? '' : 's'} in front of them`);
  const upstreams = enginePorts.flatMap((enginePort) => ['--upstream', `${model.name}=http://127.0.0.1:${enginePort}`]);
  const env = {
    // Secrets go in the environment, which other users cannot read, not on the command line, which they can.
    PARLEY_INVITE: invite,
    PARLEY_REDIS_URL: redis.url,
    PARLEY_DATABASE_URL: postgres.url,
    PARLEY_UPSTREAM_KEYS: `${model.name}=${engineKey}`,
  };
  gateways.push(...gatewayDirs.map((dataDir, index) => startParley(`gateway-${index + 1}`, [
    '--port', String(options.port === 0 ? 0 : options.port + index), '--data-dir', dataDir,
    '--signing-key', join(shared, SIGNING_KEY_FILE), '--history-key', join(shared, HISTORY_KEY_FILE), ...upstreams, ...GATEWAY_LIMITS,
    ...(options.allowedHost ?? []).flatMap((host) => ['--allowed-host', host]),
    ...(options.allowedOrigin ?? []).flatMap((origin) => ['--allowed-origin', origin]),
  ], env)));
  const gatewayPorts = await Promise.all(gateways.map(ready));
  return { urls: gatewayPorts.map((gatewayPort) => `http://127.0.0.1:${gatewayPort}`), invite };
}

let started;
try {
  started = await start();
} catch (error) {
  process.stderr.write(`npm run cluster: ${error instanceof Error ? error.message : String(error)}\n`);
  await stopAll();
  process.exit(1);
}

// Any part that exits on its own ends the run: a cluster missing a part is not what was asked for.
for (const child of [...gateways, ...engines, redis?.child, postgres?.child]) {
  void child?.exited.then((code) => {
    if (stopping !== undefined) return;
    say(`${child.name} exited (${code}); stopping the rest`);
    void stopAll().then(() => process.exit(1));
  });
}

const { urls, invite } = started;
const firstPort = Number(new URL(urls[0] as string).port);
write('');
write(`  Parley cluster ready: ${options.gateways} gateway${options.gateways === 1 ? '' : 's'}, ${options.engines} engine node${options.engines === 1 ? '' : 's'}, Redis and PostgreSQL on 127.0.0.1.`);
for (const [index, url] of urls.entries()) write(`    gateway ${index + 1}: ${url}`);
write(`  Join (any gateway takes the same invite): ${joinLink('127.0.0.1', firstPort, invite)}`);
write(`  Shared secrets: ${join(options.dir, 'shared')} (signing key, history key, invite, engine API key). Ctrl-C stops everything.`);
write('');

if (options.smoke) {
  const failed = await smokeCheck(urls, invite, (line) => say(`smoke: ${line}`));
  await stopAll();
  process.exit(failed === 0 ? 0 : 1);
}
