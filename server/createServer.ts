import type { Logger } from 'pino';
import { CloseCode } from '../shared/errorCodes.js';
import type { ApiKeyStore } from './auth/ApiKeyStore.js';
import { createApiKeyAuthenticator, type ApiKeyAuthenticator } from './auth/authenticateApiKey.js';
import { createUpgradeAuthenticator } from './auth/authenticateUpgrade.js';
import type { TokenService } from './auth/createTokenService.js';
import type { Invite } from './auth/loadOrCreateInvite.js';
import type { SessionStore } from './auth/SessionStore.js';
import type { SignInBlocks } from './auth/SignInBlocks.js';
import type { UserStore } from './auth/UserStore.js';
import { ChatCore } from './chat/ChatCore.js';
import { ClientSession } from './chat/ClientSession.js';
import { Conversations } from './chat/Conversations.js';
import type { Config } from './config.js';
import type { ConversationRepository } from './history/ConversationRepository.js';
import type { DocumentRepository } from './documents/DocumentRepository.js';
import { Documents } from './documents/Documents.js';
import type { Embedder } from './documents/Embedder.js';
import type { ContentFilter } from './filter/ContentFilter.js';
import type { OpenedRedis } from './cluster/openRedis.js';
import { RedisReplyRelay } from './cluster/RedisReplyRelay.js';
import { createSharedLimits } from './cluster/createSharedLimits.js';
import { createLocalRevocationBus, createRedisRevocationBus, type Revocation } from './cluster/RevocationBus.js';
import { createHttpHandler } from './http/createHttpHandler.js';
import { createOriginPolicy, type OriginPolicy } from './http/createOriginPolicy.js';
import { localHostNames } from './http/localHostNames.js';
import { securityHeadersFor } from './http/securityHeaders.js';
import { toHttpResponse } from './http/toHttpResponse.js';
import { withOriginPolicy } from './http/withOriginPolicy.js';
import type { StaticFile } from './http/loadStaticFiles.js';
import { AbortReason } from './chat/AbortReason.js';
import { Limiters, type LimiterSet } from './limits/Limiters.js';
import { createLimiterFailureLog } from './limits/createLimiterFailureLog.js';
import { limitUpgrades } from './limits/limitUpgrades.js';
import { Metrics } from './metrics/Metrics.js';
import type { ModelPool } from './models/ModelPool.js';
import { NotFoundError, ShuttingDownError } from './ParleyError.js';
import { compileTrustProxy } from './transport/clientAddress.js';
import type { Connection } from './transport/Connection.js';
import type { TlsFiles, TransportFactory, UpgradeHandler } from './transport/Transport.js';

export interface ServerDeps {
  readonly logger: Logger;
  /** The models served (loaded on demand); closed by the caller. */
  readonly models: ModelPool;
  readonly tokens: TokenService;
  readonly invite: Invite;
  readonly transport: TransportFactory;
  readonly staticFiles: ReadonlyMap<string, StaticFile>;
  /** Refresh sessions and revocation epochs (also the token service's epoch source). */
  readonly sessions: SessionStore;
  readonly users: UserStore;
  /** Devices and addresses of revoked invite users (`blocks.json`). */
  readonly blocks: SignInBlocks;
  /** API keys for the /v1 API (`api-keys.json`). */
  readonly apiKeys: ApiKeyStore;
  /** Where conversations are kept (opened by the caller, closed by the caller). */
  readonly history: ConversationRepository;
  /** Replaces individual rate limiters (tests inject failing ones). */
  readonly limiterOverrides?: Partial<LimiterSet>;
  /** Prometheus metrics; a fresh registry (without process metrics) when absent. */
  readonly metrics?: Metrics;
  /** Where uploaded documents are kept (the history store's); no document routes or attachments when absent. */
  readonly documents?: DocumentRepository;
  /** `--embedding-model`, loaded by the caller (and disposed by it): hybrid document retrieval. */
  readonly embedder?: Embedder;
  /** The content filter (`--filter-rules`); none when absent. */
  readonly filter?: ContentFilter;
  /** `--redis`: state shared with the other gateways (opened and closed by the caller); all in this process when absent. */
  readonly redis?: OpenedRedis;
}

export interface ParleyServer {
  readonly transport: string;
  readonly chat: ChatCore;
  readonly limiters: Limiters;
  readonly metrics: Metrics;
  /** Checks an API key (the /v1 API's credential); the HTTP handler has the same one. */
  readonly authenticateApiKey: ApiKeyAuthenticator;
  listen(): Promise<{ port: number }>;
  /** Ends every request of this user (terminal `revoked`) and closes their sockets with 4403. */
  revokeUser(userId: string): void;
  /**
   * Stops new work (new sends get `shutting_down`, upgrades 503), lets replies in flight finish
   * for up to `shutdownTimeoutMs`, cancels the rest, so every accepted request has its terminal
   * frame, then closes every socket with 1001.
   */
  close(): Promise<void>;
  /** Cancels every reply now with `shutting_down` (a second signal during `close`). */
  abortAll(): void;
}

export const WS_PATH = '/ws';

/** Idle conversations kept in memory besides those in use; the rest are read from the store when needed. */
const MAX_CACHED_CONVERSATIONS = 500;

export function createServer(config: Config, deps: ServerDeps): ParleyServer {
  const { logger, models } = deps;
  const metrics = deps.metrics ?? new Metrics();
  // With --redis the budgets and socket counts hold across gateways; tests' overrides go on top.
  const shared = createSharedLimits(config, deps.redis, logger);
  const limiters = new Limiters(
    config,
    { ...shared.limiters, ...deps.limiterOverrides },
    createLimiterFailureLog(logger),
    (limiter) => metrics.limited(limiter),
    shared.state,
  );
  const conversations = new Conversations(deps.history, {
    maxTurns: config.maxTurnsPerConversation,
    maxPerUser: config.maxConversationsPerUser,
    maxCached: MAX_CACHED_CONVERSATIONS,
  });
  const documents = deps.documents === undefined ? undefined : new Documents(config, deps.documents, { logger, ...(deps.embedder === undefined ? {} : { embedder: deps.embedder }) });
  const chat = new ChatCore(config, { models, limiters, metrics, conversations, ...(deps.filter === undefined ? {} : { filter: deps.filter }), ...(documents === undefined ? {} : { documents }) });
  // With --redis a reply dropped here can be resumed on another gateway (and the other way round).
  const relay = deps.redis === undefined || config.resumeGraceMs === 0 ? undefined : new RedisReplyRelay(deps.redis, chat.replies, { graceMs: config.resumeGraceMs, logger });
  const sessions = new Map<Connection, ClientSession>();
  metrics.bind({
    connections: () => {
      const counts = new Map<string, number>();
      for (const connection of sessions.keys()) counts.set(connection.transport, (counts.get(connection.transport) ?? 0) + 1);
      return counts;
    },
    activeGenerations: () => chat.scheduler.activeCount,
    queuedGenerations: () => chat.scheduler.queuedCount,
    detachedReplies: () => chat.replies.detachedCount,
  });
  const revokeUser = (userId: string) => {
    for (const session of sessions.values()) {
      if (session.userId === userId) session.terminate(AbortReason.revoked, CloseCode.revoked, 'signed out');
    }
    // Their old tokens can no longer resume anything: stop what their dropped sockets left running.
    chat.replies.dropUser(userId);
    // Their API keys end too, for good: the epoch that the authenticator also checks is forgotten after a day.
    deps.apiKeys.revokeUser(userId, { belowEpoch: deps.sessions.epochOf(userId) }).catch((error: unknown) => logger.error({ err: error, user: userId }, 'could not revoke API keys'));
  };
  // A revocation made here is applied here at once, then shared; one from any gateway (this one's
  // own included) raises the epoch here and, if that was news, ends the user's sockets and keys.
  const revocations = deps.redis
    ? createRedisRevocationBus({ redis: deps.redis, logger, known: () => deps.sessions.knownEpochs() })
    : createLocalRevocationBus();
  const revokedHere = (userId: string) => {
    revokeUser(userId);
    revocations.publish({ userId, epoch: deps.sessions.epochOf(userId) });
  };
  const applyRevocation = ({ userId, epoch }: Revocation) => {
    if (epoch <= deps.sessions.epochOf(userId)) return;
    // raiseEpoch changes memory before its first await: tokens below `epoch` are refused from here on.
    deps.sessions.raiseEpoch(userId, epoch).catch((error: unknown) => logger.error({ err: error, user: userId }, 'could not store a revocation epoch'));
    revokeUser(userId);
  };
  const authenticateApiKey = createApiKeyAuthenticator({ keys: deps.apiKeys, users: deps.users, sessions: deps.sessions, limiters, logger });
  let accepting = true;

  const tls: TlsFiles | undefined = config.tlsCert && config.tlsKey ? { certFile: config.tlsCert, keyFile: config.tlsKey } : undefined;
  const buildPolicy = (port: number) =>
    createOriginPolicy({ port, tls: tls !== undefined, localNames: localHostNames(config.host), allowedHosts: config.allowedHosts, allowedOrigins: config.allowedOrigins });
  // Built now so a bad allowlist entry fails before anything listens; rebuilt for the real port.
  let policy: OriginPolicy = buildPolicy(config.port);
  // Host and Origin are checked in front of the handlers below: a refused request never reaches a
  // route, a limiter or a token check. The transport adds the security headers to every response.
  const secureTransport: TransportFactory = (options) =>
    deps.transport({ ...options, ...withOriginPolicy(() => policy, options, logger), tls, responseHeaders: securityHeadersFor({ tls: tls !== undefined }) });

  const transport = secureTransport({
    wsPath: WS_PATH,
    trustProxy: compileTrustProxy(config.trustProxy),
    http: createHttpHandler({
      tokens: deps.tokens,
      invite: deps.invite,
      sessions: deps.sessions,
      users: deps.users,
      blocks: deps.blocks,
      limiters,
      refreshTtlSeconds: config.refreshTtlSeconds,
      secureCookies: config.tlsCert !== undefined,
      onRevoked: revokedHere,
      staticFiles: deps.staticFiles,
      webPage: config.role !== 'engine',
      logger,
      isReady: () => accepting,
      ...(deps.redis === undefined ? {} : { sharedState: deps.redis.health }),
      metrics,
      metricsToken: config.metricsToken,
      chat,
      apiKeys: deps.apiKeys,
      authenticateApiKey,
    }),
    // An engine node (--role engine) has no chat socket: every upgrade is a 404, before any other check.
    upgrade: config.role === 'engine' ? refuseChatSocket : refuseWhenClosing(() => accepting, limitUpgrades(limiters, createUpgradeAuthenticator(deps.tokens, WS_PATH))),
    limits: {
      maxFrameBytes: config.maxFrameBytes,
      maxHttpBodyBytes: config.maxHttpBodyBytes,
      maxApiBodyBytes: config.maxApiBodyBytes,
      maxUploadBytes: config.maxDocumentBytes,
      idleTimeoutSeconds: config.idleTimeoutSeconds,
      highWaterBytes: config.highWaterBytes,
      maxHttpConnectionsPerIp: config.maxHttpConnectionsPerIp,
    },
    onError: (error, context) => logger.error({ err: error, context }, 'transport error'),
    socket: {
      open(connection) {
        const log = logger.child({ conn: connection.id, user: connection.principal.userId });
        limiters.connectionOpened(connection.remoteAddress, connection.principal.userId, connection.id);
        const session = new ClientSession(connection, { chat, limiters, tokens: deps.tokens, metrics, log, ...(relay === undefined ? {} : { relay }) }, {
          highWaterBytes: config.highWaterBytes,
          maxOutboxBytes: config.maxOutboxBytes,
          ready: {
            resumeGraceMs: config.resumeGraceMs,
            models: () => models.list(),
            limits: {
              maxTextChars: config.maxTextChars,
              framesPerSecond: config.framesPerSecond,
              generationsPerMinute: config.generationsPerMinute,
              maxTokens: config.maxTokens,
              maxFrameBytes: config.maxFrameBytes,
              slots: models.loadedEngine(models.defaultModel)?.slots ?? 0,
              maxQueue: config.maxQueue,
            },
          },
        });
        sessions.set(connection, session);
        log.info({ ip: connection.remoteAddress, transport: connection.transport }, 'connection opened');
        session.open();
      },
      message(connection, data) {
        sessions.get(connection)?.message(data);
      },
      drain(connection) {
        sessions.get(connection)?.drain();
      },
      close(connection, code) {
        const session = sessions.get(connection);
        sessions.delete(connection);
        limiters.connectionClosed(connection.remoteAddress, connection.principal.userId, connection.id);
        session?.close();
        logger.info({ conn: connection.id, code }, 'connection closed');
      },
    },
  });

  return {
    transport: transport.name,
    chat,
    limiters,
    metrics,
    authenticateApiKey,
    revokeUser,
    async listen() {
      // Revocations made before this gateway started are known before it accepts anyone.
      await revocations.start(applyRevocation);
      await relay?.start();
      const { port } = await transport.listen(config.host, config.port);
      policy = buildPolicy(port);
      logger.debug({ hosts: policy.hosts, origins: policy.origins }, 'allowed hosts and origins');
      return { port };
    },
    async close() {
      accepting = false;
      logger.info({ live: chat.liveCount, timeoutMs: config.shutdownTimeoutMs }, 'draining: no new work; replies in flight may finish');
      await chat.shutdown(config.shutdownTimeoutMs);
      await whenFlushed([...sessions.values()], FLUSH_TIMEOUT_MS);
      await transport.close(CloseCode.goingAway, 'server shutting down');
      await relay?.close();
      await limiters.close();
      await revocations.close();
      await deps.apiKeys.settled();
      // Epochs raised by the last revocations received are on disk before the caller moves on.
      await deps.sessions.settled();
      documents?.close();
      // Background embedding stops after the chunk in progress; the store closes after this.
      await documents?.embeddingSettled();
    },
    abortAll() {
      accepting = false;
      chat.abortAll();
    },
  };
}

/** How long shutdown waits for terminal frames to leave backed-up sockets before closing them. */
const FLUSH_TIMEOUT_MS = 2000;

/** Resolves once every session's writer is empty, or after `timeoutMs`. */
async function whenFlushed(sessions: readonly ClientSession[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && sessions.some((session) => !session.flushed)) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const refuseChatSocket: UpgradeHandler = () => Promise.resolve({ accept: false, response: toHttpResponse(new NotFoundError('This Parley is an engine node (--role engine): it has no chat socket; use /v1.')) });

/**
 * During shutdown new sockets are refused with 503 before any other check. Retry-After is a
 * header only: the body stays the same `shutting_down` error that chat frames carry.
 */
function refuseWhenClosing(accepting: () => boolean, inner: UpgradeHandler): UpgradeHandler {
  return async (request) => {
    if (!accepting()) return { accept: false, response: toHttpResponse(new ShuttingDownError(), { 'retry-after': '5' }) };
    return inner(request);
  };
}
