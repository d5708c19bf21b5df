import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { ensureModel } from '../models/ensureModel.js';
import { ApiKeyStore } from './auth/ApiKeyStore.js';
import { createTokenService } from './auth/createTokenService.js';
import { loadOrCreateInvite, type Invite } from './auth/loadOrCreateInvite.js';
import { loadOrCreateSigningKey } from './auth/loadOrCreateSigningKey.js';
import { SessionStore } from './auth/SessionStore.js';
import { UserStore } from './auth/UserStore.js';
import type { Config } from './config.js';
import { createServer, type ParleyServer } from './createServer.js';
import type { Engine } from './engine/Engine.js';
import { describeDevice } from './engine/describeDevice.js';
import { LlamaEngine } from './engine/LlamaEngine.js';
import { openHistory } from './history/openHistory.js';
import { loadStaticFiles } from './http/loadStaticFiles.js';
import { Metrics } from './metrics/Metrics.js';
import { checkTlsFiles } from './transport/checkTlsFiles.js';
import { selectTransport } from './transport/selectTransport.js';
import type { LimiterSet } from './limits/Limiters.js';

export const CLIENT_DIST = fileURLToPath(new URL('../client/dist', import.meta.url));

export interface StartedServer {
  readonly server: ParleyServer;
  readonly engine: Engine;
  readonly port: number;
  readonly invite: Invite;
  readonly transport: string;
  /** Stops the server, then disposes the model. */
  stop(): Promise<void>;
}

/**
 * Wires a real Parley from a validated config: model (the demo model when none is given),
 * keys, invite, transport and HTTP assets. Used by main and by the integration tests alike.
 */
export async function startServer(
  config: Config,
  options: { logger: Logger; engine?: Engine; clientDist?: string; limiterOverrides?: Partial<LimiterSet> },
): Promise<StartedServer> {
  const { logger } = options;
  const selected = selectTransport(config.transport);
  logger.info({ transport: selected.name, reason: selected.reason }, `transport: ${selected.name}`);
  // Checked before the model loads, so a wrong path fails in milliseconds and names the file.
  if (config.tlsCert && config.tlsKey) {
    const certificate = await checkTlsFiles({ certFile: config.tlsCert, keyFile: config.tlsKey });
    logger.info({ subjectAltName: certificate.subjectAltName, validTo: certificate.validTo }, 'TLS on: serving https and wss');
  }

  let engine: Engine | undefined = options.engine;
  const ownsEngine = engine === undefined;
  if (!engine) {
    let modelPath = config.model;
    let demo = false;
    if (modelPath === undefined) {
      const built = await ensureModel("demo", { logger: (message: string) => logger.info(message) });
      modelPath = built.path;
      demo = true;
    }
    const started = Date.now();
    const loaded = await LlamaEngine.load({
      modelPath,
      demo,
      threads: config.threads,
      slots: config.slots,
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
      { model: loaded.info.name, demo, path: modelPath, llamaBuild: loaded.build, gpu: loaded.device, gpuLayers: loaded.gpuLayers, threads: loaded.threads, slots: config.slots, contextSize: loaded.info.contextSize, chatWrapper: loaded.chatWrapperName, ms: Date.now() - started },
      demo ? "model loaded: Parley's demo model (a bigram toy that strings words together; it is not an assistant)" : 'model loaded',
    );
    engine = loaded;
  }

  const key = await loadOrCreateSigningKey(config.dataDir);
  const history = await openHistory(config, logger);
  const invite = await loadOrCreateInvite(config.dataDir, config.invite);
  const sessions = await SessionStore.load(config.dataDir);
  const users = new UserStore(config.dataDir);
  const apiKeys = new ApiKeyStore(config.dataDir);
  const tokens = createTokenService({ key, ttlSeconds: config.tokenTtlSeconds, epochs: sessions });
  const staticFiles = await loadStaticFiles(options.clientDist ?? CLIENT_DIST);
  if (staticFiles.size === 0) logger.warn('web client not built: run `npm run build:client`');

  // Process metrics (CPU, memory, event loop, GC) go into this server's own registry, so
  // several servers in one process (the tests) each collect them without clashing.
  const metrics = new Metrics({ processMetrics: true });
  const server = createServer(config, { logger, engine, tokens, invite, transport: selected.factory, staticFiles, sessions, users, apiKeys, history: history.repository, limiterOverrides: options.limiterOverrides, metrics });
  const { port } = await server.listen();
  logger.info({ host: config.host, port, transport: server.transport, tls: config.tlsCert !== undefined }, `listening on ${config.host}:${port}`);
  const owned = engine;
  return {
    server,
    engine: owned,
    port,
    invite,
    transport: server.transport,
    async stop() {
      await server.close();
      await history.close();
      if (ownsEngine) await owned.dispose();
    },
  };
}
