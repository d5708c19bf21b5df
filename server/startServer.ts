import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { ensureModel } from '../models/ensureModel.js';
import { ApiKeyStore } from './auth/ApiKeyStore.js';
import { checkDataDir } from './auth/checkDataDir.js';
import { createTokenService } from './auth/createTokenService.js';
import { loadOrCreateInvite, type Invite } from './auth/loadOrCreateInvite.js';
import { loadOrCreateSigningKey } from './auth/loadOrCreateSigningKey.js';
import { SessionStore } from './auth/SessionStore.js';
import { SignInBlocks } from './auth/SignInBlocks.js';
import { UserStore } from './auth/UserStore.js';
import { upstreamSpecs, type Config } from './config.js';
import { createServer, type ParleyServer } from './createServer.js';
import type { Engine } from './engine/Engine.js';
import { describeDevice } from './engine/describeDevice.js';
import { LlamaEngine } from './engine/LlamaEngine.js';
import { UpstreamEngine } from './engine/UpstreamEngine.js';
import { discoverModels } from './models/discoverModels.js';
import { readModelFile, type ModelFile } from './models/ModelFile.js';
import { ModelPool } from './models/ModelPool.js';
import { openHistory } from './history/openHistory.js';
import { LlamaEmbedder } from './documents/Embedder.js';
import { loadStaticFiles } from './http/loadStaticFiles.js';
import { ContentFilter } from './filter/ContentFilter.js';
import { loadFilterRules } from './filter/loadFilterRules.js';
import { Metrics } from './metrics/Metrics.js';
import { checkTlsFiles } from './transport/checkTlsFiles.js';
import { selectTransport } from './transport/selectTransport.js';
import { openAuthDocuments } from './cluster/openAuthDocuments.js';
import { RedisFamilies } from './cluster/RedisFamilies.js';
import { openRedis, type OpenedRedis } from './cluster/openRedis.js';
import type { LimiterSet } from './limits/Limiters.js';

export const CLIENT_DIST = fileURLToPath(new URL('../client/dist', import.meta.url));

export interface StartedServer {
  readonly server: ParleyServer;
  /** The default model's engine, loaded at start. */
  readonly engine: Engine;
  readonly models: ModelPool;
  readonly port: number;
  readonly invite: Invite;
  readonly transport: string;
  /** Stops the server, then unloads the models it loaded. */
  stop(): Promise<void>;
}

/**
 * Wires a real Parley from a validated config: models (the demo model when none is given; the
 * default one loads before anything listens, so a bad default fails the start),
 * keys, invite, transport and HTTP assets. Used by main and by the integration tests alike.
 */
export async function startServer(
  config: Config,
  options: {
    logger: Logger;
    /** Serve this engine alone (the caller owns it), instead of the config's models. */
    engine?: Engine;
    /** Serve these models (the caller owns and closes the pool), instead of the config's. */
    models?: ModelPool;
    clientDist?: string;
    limiterOverrides?: Partial<LimiterSet>;
  },
): Promise<StartedServer> {
  const { logger } = options;
  // Before anything reads a secret: refuse a data dir other users can change, warn if they can read it.
  const dataDir = await checkDataDir(config.dataDir, [config.historyKeyFile, config.signingKeyFile].filter((file) => file !== undefined));
  for (const warning of dataDir.warnings) logger.warn({ event: 'data_dir_readable' }, warning);
  const selected = selectTransport(config.transport);
  logger.info({ transport: selected.name, reason: selected.reason }, `transport: ${selected.name}`);
  // Checked before the model loads, so a wrong path fails in milliseconds and names the file.
  if (config.tlsCert && config.tlsKey) {
    const certificate = await checkTlsFiles({ certFile: config.tlsCert, keyFile: config.tlsKey });
    logger.info({ subjectAltName: certificate.subjectAltName, validTo: certificate.validTo }, 'TLS on: serving https and wss');
  }
  // Also before the model loads: a bad rule fails the start in milliseconds, naming its line.
  const filterRules = config.filterRules === undefined ? undefined : await loadFilterRules(config.filterRules);

  const ownsModels = options.engine === undefined && options.models === undefined;
  // `--upstream` engines: served beside the config's models, disposed at stop.
  const upstreams = ownsModels ? await openUpstreams(config, logger) : [];
  const models = options.models ?? (options.engine !== undefined ? ModelPool.single(options.engine) : await openModels(config, logger, upstreams));
  let engine: Engine;
  try {
    engine = await models.loadDefault();
  } catch (error) {
    if (ownsModels) await models.close();
    await Promise.all(upstreams.map(({ engine: upstream }) => upstream.dispose()));
    throw error;
  }

  const key = await loadOrCreateSigningKey(config.dataDir, config.signingKeyFile);
  // `--redis`: shared budgets, counts, revocations and live replies. Unreachable at start fails the start.
  let redis: OpenedRedis | undefined;
  try {
    redis = config.redis === undefined ? undefined : await openRedis(config.redis, { logger });
  } catch (error) {
    if (ownsModels) await models.close();
    await Promise.all(upstreams.map(({ engine: upstream }) => upstream.dispose()));
    throw error;
  }
  const history = await openHistory(config, logger);
  // Documents' embedding model (--embedding-model): the same llama.cpp build and backend as the chat models.
  const embedder =
    config.embeddingModel === undefined
      ? undefined
      : await LlamaEmbedder.load({ modelPath: config.embeddingModel, threads: config.threads, build: config.llamaBuild, gpu: config.gpu, logger: (level, message) => logger.debug({ llama: level }, message) });
  if (embedder) logger.info({ embeddingModel: embedder.id }, `documents: hybrid retrieval with ${embedder.id}`);
  const invite = await loadOrCreateInvite(config.dataDir, config.invite);
  if (invite.pinRotated) logger.warn({ event: 'pinned_invite_rotated' }, 'an admin rotated the --invite code: the code in invite-rotated.json is used until --invite names another one');
  // `--redis`: refresh sessions are shared too, so a session begun on one gateway refreshes on any.
  const sessions = await SessionStore.load(config.dataDir, redis === undefined ? {} : { shared: new RedisFamilies(redis.client) });
  // `--redis`: accounts and API keys are shared by every gateway (seeded once from this data dir).
  const shared = redis === undefined ? undefined : await openAuthDocuments(redis.client, config.dataDir, logger);
  const users = new UserStore(config.dataDir, shared === undefined ? {} : { document: shared.users });
  const blocks = await SignInBlocks.load(config.dataDir, { keepSeenMs: config.refreshTtlSeconds * 1000, ...(shared === undefined ? {} : { document: shared.blocks }) });
  const apiKeys = new ApiKeyStore(config.dataDir, shared === undefined ? {} : { document: shared.apiKeys });
  const tokens = createTokenService({ key, ttlSeconds: config.tokenTtlSeconds, epochs: sessions });
  // An engine node (--role engine) serves /v1 and no web page.
  const staticFiles = config.role === 'engine' ? new Map() : await loadStaticFiles(options.clientDist ?? CLIENT_DIST);
  if (staticFiles.size === 0 && config.role !== 'engine') logger.warn('web client not built: run `npm run build:client`');
  if (config.role === 'engine') logger.info({ role: config.role }, 'role engine: serving /v1 (and /api, probes, metrics); no web page, no chat socket');

  // Process metrics (CPU, memory, event loop, GC) go into this server's own registry, so
  // several servers in one process (the tests) each collect them without clashing.
  const metrics = new Metrics({ processMetrics: true });
  const filter = filterRules === undefined ? undefined : new ContentFilter(filterRules, { logContent: config.logContent, metrics });
  if (filter) logger.info({ rules: filter.rules.length, holdBack: filter.holdBack, file: config.filterRules }, `content filter: ${filter.rules.length} rule${filter.rules.length === 1 ? '' : 's'}, replies held back by at most ${filter.holdBack} characters`);
  const server = createServer(config, { logger, models, tokens, invite, transport: selected.factory, staticFiles, sessions, users, blocks, apiKeys, history: history.repository, documents: history.documents, ...(embedder === undefined ? {} : { embedder }), limiterOverrides: options.limiterOverrides, metrics, filter, ...(redis === undefined ? {} : { redis }) });
  const { port } = await server.listen();
  logger.info({ host: config.host, port, transport: server.transport, tls: config.tlsCert !== undefined }, `listening on ${config.host}:${port}`);
  return {
    server,
    engine,
    models,
    port,
    invite,
    transport: server.transport,
    async stop() {
      await server.close();
      await redis?.close();
      await history.close();
      await embedder?.dispose();
      if (ownsModels) await models.close();
      await Promise.all(upstreams.map(({ engine: upstream }) => upstream.dispose()));
    },
  };
}

/**
 * One UpstreamEngine per `--upstream` name, each probed once (an unreachable upstream does not fail
 * the start: it stays out of rotation until a health check passes). URLs are logged, keys never.
 */
async function openUpstreams(config: Config, logger: Logger): Promise<Array<{ id: string; engine: UpstreamEngine }>> {
  return Promise.all(
    upstreamSpecs(config).map(async (spec) => {
      const engine = await UpstreamEngine.open({
        name: spec.name,
        urls: spec.urls,
        ...(spec.key === undefined ? {} : { key: spec.key }),
        maxInFlight: config.upstreamMaxInFlight,
        healthIntervalMs: config.upstreamHealthIntervalMs,
        ...(config.upstreamContextSize === undefined ? {} : { contextSize: config.upstreamContextSize }),
        ...(config.systemPrompt === undefined ? {} : { systemPrompt: config.systemPrompt }),
        temperature: config.temperature,
        onHealth: (url, healthy, why) =>
          healthy ? logger.info({ model: spec.name, upstream: url }, `upstream ${url} of ${spec.name} is back in rotation`) : logger.warn({ model: spec.name, upstream: url, why }, `upstream ${url} of ${spec.name} taken out of rotation: ${why}`),
      });
      const healthy = engine.upstreams().filter((upstream) => upstream.healthy).length;
      logger.info({ model: spec.name, upstreams: spec.urls, healthy, contextSize: engine.info.contextSize, slots: engine.slots, key: spec.key !== undefined }, `model ${spec.name}: ${spec.urls.length} upstream${spec.urls.length === 1 ? '' : 's'}, ${healthy} healthy`);
      return { id: spec.name, engine };
    }),
  );
}

/**
 * The config's models (every --model, every GGUF in --models-dir and the pulled folder, else the
 * demo model) in a pool that loads them with llama.cpp on demand and logs where each one runs.
 */
async function openModels(config: Config, logger: Logger, upstreams: ReadonlyArray<{ id: string; engine: Engine }> = []): Promise<ModelPool> {
  const dirs = [...(config.modelsDir === undefined ? [] : [config.modelsDir]), config.pulledModelsDir];
  // A default naming an upstream is not a file to find.
  const upstreamDefault = config.defaultModel !== undefined && upstreams.some(({ id }) => id === config.defaultModel) ? config.defaultModel : undefined;
  const found = await discoverModels({ models: config.models, dirs, ...(config.defaultModel === undefined || upstreamDefault !== undefined ? {} : { defaultModel: config.defaultModel }) });
  for (const { path, reason } of found.skipped) logger.warn({ path, reason }, 'model skipped');
  let files = found.files;
  // With upstreams and no local model, the first upstream is the default: no demo model is built.
  let defaultModel = upstreamDefault ?? found.defaultModel ?? upstreams[0]?.id;
  if (defaultModel === undefined) {
    const built = await ensureModel('demo', { logger: (message: string) => logger.info(message) });
    const demo = await readModelFile(built.path, { demo: true });
    files = [demo];
    defaultModel = demo.id;
  }
  return new ModelPool({
    files,
    defaultModel,
    maxLoaded: config.maxLoadedModels,
    idleMs: config.modelIdleSeconds * 1000,
    memoryLimitBytes: config.modelMemoryMib * 1024 * 1024,
    slots: config.slots,
    contextSize: config.contextSize,
    load: (file, slots) => loadEngine(config, logger, file, slots),
    preloaded: upstreams,
    log: (event) => {
      const mib = (bytes: number) => Math.ceil(bytes / (1024 * 1024));
      switch (event.kind) {
        case 'loading':
          if (event.slots < event.slotsAsked) logger.warn({ model: event.id, slots: event.slots, slotsAsked: event.slotsAsked, modelMemoryMib: config.modelMemoryMib }, `model ${event.id}: ${event.slots} slots instead of ${event.slotsAsked}, so its contexts fit in --model-memory-mib`);
          logger.info({ model: event.id, slots: event.slots, estimateMib: mib(event.estimateBytes) }, `loading model ${event.id}`);
          return;
        case 'loaded':
          logger.info({ model: event.id, ms: event.ms, contextSize: event.engine.info.contextSize }, `model ${event.id} loaded`);
          return;
        case 'load_failed':
          logger.error({ model: event.id, err: event.error }, `model ${event.id} failed to load`);
          return;
        case 'unloaded':
          logger.info({ model: event.id, why: event.why }, `model ${event.id} unloaded`);
          return;
      }
    },
  });
}

async function loadEngine(config: Config, logger: Logger, file: ModelFile, slots: number): Promise<Engine> {
  const loaded = await LlamaEngine.load({
    modelPath: file.path,
    displayName: file.displayName,
    demo: file.demo,
    threads: config.threads,
    slots,
    contextSize: config.contextSize,
    temperature: config.temperature,
    systemPrompt: config.systemPrompt,
    build: config.llamaBuild,
    gpu: config.gpu,
    gpuLayers: config.gpuLayers,
    log: (level, message) => logger.debug({ llama: level }, message),
  });
  logger.info(
    {
      model: file.id,
      llamaBuild: loaded.build,
      reason: loaded.buildReason,
      gpu: loaded.device,
      gpuReason: loaded.deviceReason,
      gpuLayers: loaded.gpuLayers,
      totalLayers: loaded.totalLayers,
      threads: loaded.threads,
      threadsReason: loaded.threadsReason,
    },
    `llama.cpp: ${loaded.build}, ${describeDevice(loaded)}, ${loaded.threads} thread${loaded.threads === 1 ? '' : 's'}`,
  );
  logger.info(
    { model: file.id, name: loaded.info.name, demo: file.demo, path: file.path, slots, contextSize: loaded.info.contextSize, chatWrapper: loaded.chatWrapperName },
    file.demo ? "model ready: Parley's demo model (a bigram toy that strings words together; it is not an assistant)" : `model ready: ${file.id}`,
  );
  return loaded;
}
