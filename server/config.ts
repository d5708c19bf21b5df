import { availableParallelism, totalmem } from 'node:os';
import { resolve } from 'node:path';
import * as z from 'zod/mini';
import { ProtocolLimits } from '../shared/limits.js';
import { GpuChoice } from './engine/GpuChoice.js';
import { LlamaBuildChoice } from './engine/LlamaBuild.js';
import { isTrustProxyEntry } from './transport/clientAddress.js';

z.config(z.locales.en());

export const TransportChoice = { auto: 'auto', uws: 'uws', ws: 'ws' } as const;
export type TransportChoice = (typeof TransportChoice)[keyof typeof TransportChoice];

const cores = Math.min(256, Math.max(1, availableParallelism()));

/**
 * Defaults, chosen for a small LAN box. Threads are `auto`: chosen when the model loads, from the
 * llama.cpp binary that runs, the math cores and the model's size (engine/chooseThreads.ts), never
 * node-llama-cpp's own default, which oversubscribes small machines badly. Slots default to twice
 * the cores, between 2 and 8: replies on several sequences are decoded together in one batch.
 */
export const defaults = {
  host: '0.0.0.0',
  port: 8080,
  transport: TransportChoice.auto,
  // The native llama.cpp build when `npm run build:llama` made one, else the prebuilt binary.
  llamaBuild: LlamaBuildChoice.auto,
  // The best GPU backend this machine has drivers for and node-llama-cpp a binary for, else the CPU;
  // layers: node-llama-cpp's fit to the free VRAM (engine/selectLlamaDevice.ts).
  gpu: GpuChoice.auto,
  gpuLayers: 'auto',
  dataDir: 'data',
  threads: 'auto',
  // The most per model: fewer when their contexts would not fit beside the model in modelMemoryMib.
  slots: Math.min(8, Math.max(2, cores * 2)),
  // Models (every --model, every GGUF in --models-dir and in the pulled folder) load on first use,
  // at most maxLoadedModels at once (the least recently used idle one makes room), within
  // modelMemoryMib for weights and contexts together (75% of this machine's memory). A model other
  // than the default unloads after modelIdleSeconds without a request (0: never).
  models: [] as readonly string[],
  pulledModelsDir: 'models/pulled',
  maxLoadedModels: 2,
  modelIdleSeconds: 900,
  modelMemoryMib: Math.floor((totalmem() / (1024 * 1024)) * 0.75),
  contextSize: 4096,
  maxTokens: 512,
  temperature: 0.8,
  maxTextChars: 8000,
  maxFrameBytes: 64 * 1024,
  maxHttpBodyBytes: 16 * 1024,
  // Request bodies under /v1/ (the OpenAI-compatible API sends whole conversations); others keep maxHttpBodyBytes.
  maxApiBodyBytes: 1024 * 1024,
  // Documents in the chat (POST /api/documents): one file's bytes, files per message and per
  // conversation, one user's stored bytes, and the characters of text one file may yield.
  maxDocumentBytes: 10 * 1024 * 1024,
  maxDocumentsPerMessage: 5,
  maxDocumentsPerConversation: 20,
  maxDocumentStorageBytes: 100 * 1024 * 1024,
  maxDocumentChars: 12_000_000,
  maxQueue: 32,
  maxQueuedPerUser: 4,
  // Stored conversations per user; at the cap the least recently updated one is deleted.
  maxConversationsPerUser: 1000,
  // Turns of a conversation kept in memory for its prompt; all of them stay in the store.
  maxTurnsPerConversation: 200,
  // Conversations are kept in an encrypted SQLite file in the data dir (`off`: in memory only,
  // gone at restart). historyDays > 0 deletes conversations idle for longer; 0 keeps them.
  history: 'sqlite',
  historyDays: 0,
  generationTimeoutMs: 120_000,
  tokenTtlSeconds: 300,
  idleTimeoutSeconds: 120,
  highWaterBytes: 64 * 1024,
  maxOutboxBytes: 4 * 1024 * 1024,
  logLevel: 'info',
  logContent: false,
  qr: true,
  // The join link (which carries the invite) and its QR code go to stderr at each start; off for
  // service managers that keep stderr in a journal.
  banner: true,
  // Origins and hosts allowed in addition to the server's own (every local address, localhost,
  // the machine's hostname, on the listening port).
  allowedOrigins: [] as readonly string[],
  allowedHosts: [] as readonly string[],
  // Proxies (IPs, CIDR ranges, `loopback`) whose X-Forwarded-For names the client; none by default.
  trustProxy: [] as readonly string[],
  // Per connection: frames per second with a burst allowance; this many refused frames within
  // floodWindowSeconds closes the socket (4429).
  framesPerSecond: 10,
  frameBurst: 30,
  floodStrikes: 20,
  floodWindowSeconds: 10,
  // Per user (JWT sub), shared by all of that user's sockets and not reset by reconnecting.
  generationsPerMinute: 20,
  tokensPerHour: 200_000,
  // The same budgets per IP, charged by invite users besides their own, so re-joining does not
  // reset them (limits/budgetKeysOf.ts). Raise them where several people share one address.
  generationsPerMinutePerIp: 20,
  tokensPerHourPerIp: 200_000,
  maxConnectionsPerUser: 8,
  // Per IP.
  upgradesPerMinute: 60,
  tokenRequestsPerMinute: 30,
  logoutsPerMinute: 10,
  // New invite users (each with fresh per-user budgets) one address may create per hour.
  inviteUsersPerHour: 10,
  loginFailuresBeforeLockout: 10,
  lockoutSeconds: 900,
  maxConnectionsPerIp: 32,
  // HTTP connections with a request in progress (streams included); WebSockets are capped above.
  maxHttpConnectionsPerIp: 64,
  refreshTtlSeconds: 30 * 24 * 3600,
  // A reply outlives a dropped connection this long, buffered up to maxReplyBytes, so its
  // owner can reconnect and resume it; then it is cancelled. 0 cancels at once.
  resumeGraceMs: 30_000,
  maxReplyBytes: 1024 * 1024,
  // On SIGTERM or SIGINT, replies in flight get this long to finish before they are cancelled.
  shutdownTimeoutMs: 10_000,
  // `--upstream NAME=URL` (repeatable): OpenAI-compatible servers behind a model name; several URLs
  // under one name form a pool (README, "Upstream engines"). Keys: `--upstream-key NAME=KEY`.
  upstreams: [] as readonly string[],
  upstreamKeys: [] as readonly string[],
  // Requests in flight per upstream, and how often each upstream is health-checked.
  upstreamMaxInFlight: 8,
  upstreamHealthIntervalMs: 5000,
  // all: the web page, the chat socket and /v1; engine: /v1 for gateways, no web page or chat socket.
  role: 'all',
} as const;

const positiveInt = z.int().check(z.gte(1));

const ConfigSchema = z.strictObject({
  host: z.string().check(z.minLength(1)),
  port: z.int().check(z.gte(0), z.lte(65535)),
  transport: z.enum(['auto', 'uws', 'ws']),
  llamaBuild: z.enum(['auto', 'prebuilt', 'native']),
  gpu: z.enum(['auto', 'metal', 'cuda', 'vulkan', 'off']),
  /** `auto` (fit to the free VRAM), `max` (every layer, or the load fails) or a count; ignored on the CPU. */
  gpuLayers: z.union([z.literal('auto'), z.literal('max'), z.int().check(z.gte(0), z.lte(100_000))], {
    error: 'must be auto, max or a whole number of layers (0 or more)',
  }),
  /** GGUF files to serve (`--model`, repeatable). With these, --models-dir and the pulled folder all empty: Parley's generated demo model. */
  models: z.readonly(z.array(z.string().check(z.minLength(1)))),
  /** Every `*.gguf` in this folder is served too. */
  modelsDir: z.optional(z.string().check(z.minLength(1))),
  /** Where `parley pull` saves models; every `*.gguf` in it is served too (a missing folder is fine). */
  pulledModelsDir: z.string().check(z.minLength(1)),
  /** The id of the model new conversations get; the first --model, else the first by id. */
  defaultModel: z.optional(z.string().check(z.minLength(1))),
  maxLoadedModels: z.int().check(z.gte(1), z.lte(64)),
  modelIdleSeconds: z.int().check(z.gte(0), z.lte(7 * 24 * 3600)),
  modelMemoryMib: z.int().check(z.gte(1)),
  /** Pinned invite code; absent means generated once and kept in the data dir. */
  invite: z.optional(z.string().check(z.minLength(8, 'invite must be at least 8 characters'), z.maxLength(256))),
  dataDir: z.string().check(z.minLength(1)),
  history: z.enum(['sqlite', 'off']),
  historyDays: z.int().check(z.gte(0), z.lte(36_500)),
  /** The history key file; absent means `history.key` in the data dir, created on first start. */
  historyKeyFile: z.optional(z.string().check(z.minLength(1))),
  /** A GGUF embedding model: document retrieval fuses semantic nearness with the lexical ranking. Absent: lexical only. */
  embeddingModel: z.optional(z.string().check(z.minLength(1))),
  /** A count, or `auto`: chosen at model load from the binary, the math cores and the model's size (chooseThreads). */
  threads: z.union([z.literal('auto'), z.int().check(z.gte(1), z.lte(256))]),
  slots: z.int().check(z.gte(1), z.lte(64)),
  contextSize: z.int().check(z.gte(64), z.lte(1 << 20)),
  maxTokens: positiveInt,
  temperature: z.number().check(z.gte(0), z.lte(2)),
  systemPrompt: z.optional(z.string().check(z.maxLength(8000))),
  maxTextChars: z.int().check(z.gte(1), z.lte(ProtocolLimits.maxTextCharsCeiling)),
  maxFrameBytes: z.int().check(z.gte(1024), z.lte(16 * 1024 * 1024)),
  maxHttpBodyBytes: z.int().check(z.gte(1024), z.lte(1024 * 1024)),
  maxApiBodyBytes: z.int().check(z.gte(1024), z.lte(64 * 1024 * 1024)),
  maxDocumentBytes: z.int().check(z.gte(1024), z.lte(1024 * 1024 * 1024)),
  maxDocumentsPerMessage: z.int().check(z.gte(1), z.lte(100)),
  maxDocumentsPerConversation: z.int().check(z.gte(1), z.lte(1000)),
  maxDocumentStorageBytes: z.int().check(z.gte(1024)),
  maxDocumentChars: z.int().check(z.gte(1000), z.lte(1_000_000_000)),
  maxQueue: z.int().check(z.gte(0)),
  maxQueuedPerUser: z.int().check(z.gte(0)),
  maxConversationsPerUser: positiveInt,
  maxTurnsPerConversation: z.int().check(z.gte(2)),
  generationTimeoutMs: positiveInt,
  tokenTtlSeconds: z.int().check(z.gte(10), z.lte(24 * 3600)),
  idleTimeoutSeconds: z.int().check(z.gte(8), z.lte(3600)),
  highWaterBytes: z.int().check(z.gte(1024)),
  maxOutboxBytes: z.int().check(z.gte(64 * 1024)),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
  /** Log message text. Off by default: prompts and replies are private. */
  logContent: z.boolean(),
  qr: z.boolean(),
  /** Print the join link, which carries the invite, to stderr at start. */
  banner: z.boolean(),
  /** Exact origins (scheme://host[:port]) allowed besides the server's own. */
  allowedOrigins: z.readonly(z.array(z.string().check(z.regex(/^https?:\/\/[^/\s]+$/, 'an origin is scheme://host[:port], with no path')))),
  /** Extra Host header names (without port) accepted, e.g. a DNS name for this machine. */
  allowedHosts: z.readonly(z.array(z.string().check(z.minLength(1), z.maxLength(253)))),
  /** TCP peers whose X-Forwarded-For and X-Forwarded-Proto are believed (transport/clientAddress.ts). */
  trustProxy: z.readonly(z.array(z.string().check(z.refine(isTrustProxyEntry, { error: (issue) => `'${String(issue.input)}' is not an IP address, a CIDR range (10.0.1.0/24) or loopback, linklocal, uniquelocal` })))),
  /** PEM files; both or neither. With them Parley serves https and wss. */
  tlsCert: z.optional(z.string().check(z.minLength(1))),
  tlsKey: z.optional(z.string().check(z.minLength(1))),
  framesPerSecond: positiveInt,
  frameBurst: z.int().check(z.gte(0)),
  floodStrikes: positiveInt,
  floodWindowSeconds: positiveInt,
  generationsPerMinute: positiveInt,
  tokensPerHour: positiveInt,
  generationsPerMinutePerIp: positiveInt,
  tokensPerHourPerIp: positiveInt,
  maxConnectionsPerUser: positiveInt,
  upgradesPerMinute: positiveInt,
  tokenRequestsPerMinute: positiveInt,
  logoutsPerMinute: positiveInt,
  inviteUsersPerHour: positiveInt,
  loginFailuresBeforeLockout: positiveInt,
  lockoutSeconds: positiveInt,
  maxConnectionsPerIp: positiveInt,
  maxHttpConnectionsPerIp: positiveInt,
  refreshTtlSeconds: z.int().check(z.gte(60)),
  resumeGraceMs: z.int().check(z.gte(0), z.lte(3_600_000)),
  maxReplyBytes: z.int().check(z.gte(1024)),
  shutdownTimeoutMs: z.int().check(z.gte(0), z.lte(600_000)),
  /**
   * Bearer secret that lets a scraper read /metrics from another machine. Absent: /metrics
   * answers loopback peers and admin access tokens only.
   */
  metricsToken: z.optional(z.string().check(z.minLength(16, 'metricsToken must be at least 16 characters'), z.maxLength(256))),
  /** The content filter's rules (JSON Lines, server/filter/loadFilterRules.ts), read and checked at start; absent: no filter. */
  filterRules: z.optional(z.string().check(z.minLength(1))),
  /** `NAME=URL` entries; one name given several URLs is a pool (server/engine/UpstreamPool.ts). */
  upstreams: z.readonly(z.array(z.string().check(z.regex(/^[A-Za-z0-9][\w.:-]*=https?:\/\/\S+$/, 'an upstream is NAME=URL, with an http or https URL')))),
  /** `NAME=KEY` entries: the bearer key sent to every upstream of NAME. Never logged. */
  upstreamKeys: z.readonly(z.array(z.string().check(z.regex(/^[A-Za-z0-9][\w.:-]*=\S+$/, 'an upstream key is NAME=KEY')))),
  upstreamMaxInFlight: z.int().check(z.gte(1), z.lte(1024)),
  upstreamHealthIntervalMs: z.int().check(z.gte(0), z.lte(3_600_000)),
  /** Used when no upstream's /v1/models tells its context length; absent: 4096. */
  upstreamContextSize: z.optional(z.int().check(z.gte(64), z.lte(1 << 24))),
  role: z.enum(['all', 'engine']),
  /**
   * `redis://` or `rediss://` URL (`--redis`): budgets, connection counts, revocations and live
   * replies shared by every gateway (docs/deploy.md). Absent: all of it in this process. The
   * password in it is never logged.
   */
  redis: z.optional(z.string().check(z.regex(/^rediss?:\/\/\S+$/, 'a redis URL is redis://[user:password@]host[:port][/db] (or rediss://)'))),
  /** `postgres://` URL (`--database`): history on PostgreSQL instead of SQLite. The password in it is never logged. */
  database: z.optional(z.string().check(z.regex(/^postgres(ql)?:\/\/\S+$/, 'a database URL is postgres://user[:password]@host[:port]/database'))),
  /** The Ed25519 signing key (JWK) every gateway of a cluster shares; absent: the data dir's own, created on first start. */
  signingKeyFile: z.optional(z.string().check(z.minLength(1))),
});

/** The upstreams of one model name, from `--upstream` and `--upstream-key`. */
export interface UpstreamSpec {
  readonly name: string;
  readonly urls: readonly string[];
  readonly key?: string;
}

/** Groups `upstreams` by name (in the order first given), each with its key. */
export function upstreamSpecs(config: Pick<Config, 'upstreams' | 'upstreamKeys'>): UpstreamSpec[] {
  const urls = new Map<string, string[]>();
  for (const entry of config.upstreams) {
    const at = entry.indexOf('=');
    const name = entry.slice(0, at);
    urls.set(name, [...(urls.get(name) ?? []), entry.slice(at + 1)]);
  }
  const keys = new Map(config.upstreamKeys.map((entry) => [entry.slice(0, entry.indexOf('=')), entry.slice(entry.indexOf('=') + 1)]));
  return [...urls].map(([name, list]) => {
    const key = keys.get(name);
    return { name, urls: list, ...(key === undefined ? {} : { key }) };
  });
}

export type Config = Readonly<z.infer<typeof ConfigSchema>>;
export type ConfigInput = Partial<Record<keyof Config, unknown>>;

export class ConfigError extends Error {
  override name = 'ConfigError';
  readonly code = 'invalid_config';
}

/**
 * Merges input over defaults, validates once and freezes. Numbers given as strings (from
 * flags or env) are accepted. Throws ConfigError naming every bad field.
 */
export function loadConfig(input: ConfigInput = {}): Config {
  const merged: Record<string, unknown> = { ...defaults };
  for (const [key, value] of Object.entries(input)) {
    if (value !== undefined) merged[key] = coerce(key, value);
  }
  const result = ConfigSchema.safeParse(merged);
  if (!result.success) {
    const problems = result.error.issues.map((issue) => `${issue.path.join('.') || 'config'}: ${issue.message}`);
    throw new ConfigError(`Invalid configuration:\n  ${problems.join('\n  ')}`);
  }
  const config = { ...result.data, dataDir: resolve(result.data.dataDir) };
  config.models = config.models.map((path) => resolve(path));
  if (config.modelsDir !== undefined) config.modelsDir = resolve(config.modelsDir);
  config.pulledModelsDir = resolve(config.pulledModelsDir);
  if ((config.tlsCert === undefined) !== (config.tlsKey === undefined)) {
    throw new ConfigError('Invalid configuration:\n  tlsCert and tlsKey go together: give both or neither');
  }
  if (config.llamaBuild === LlamaBuildChoice.native && config.gpu !== GpuChoice.auto && config.gpu !== GpuChoice.off) {
    throw new ConfigError(`Invalid configuration:\n  llamaBuild native is a CPU build: it cannot run with gpu ${config.gpu} (use llamaBuild auto or prebuilt)`);
  }
  if (config.gpu === GpuChoice.off && (config.gpuLayers === 'max' || (typeof config.gpuLayers === 'number' && config.gpuLayers > 0))) {
    throw new ConfigError(`Invalid configuration:\n  gpuLayers ${config.gpuLayers} needs a GPU, and gpu is off`);
  }
  if (config.tlsCert !== undefined) config.tlsCert = resolve(config.tlsCert);
  if (config.tlsKey !== undefined) config.tlsKey = resolve(config.tlsKey);
  if (config.historyKeyFile !== undefined) config.historyKeyFile = resolve(config.historyKeyFile);
  if (config.signingKeyFile !== undefined) config.signingKeyFile = resolve(config.signingKeyFile);
  if (config.database !== undefined && config.history === 'off') throw new ConfigError('Invalid configuration:\n  database: --history off keeps no history, so a --database has nothing to hold');
  if (config.embeddingModel !== undefined) config.embeddingModel = resolve(config.embeddingModel);
  if (config.filterRules !== undefined) config.filterRules = resolve(config.filterRules);
  const upstreamNames = new Set(config.upstreams.map((entry) => entry.slice(0, entry.indexOf('='))));
  for (const entry of config.upstreamKeys) {
    // The name only: the key itself never goes into a message.
    const name = entry.slice(0, entry.indexOf('='));
    if (!upstreamNames.has(name)) throw new ConfigError(`Invalid configuration:\n  upstreamKeys: '${name}' names no --upstream`);
  }
  return Object.freeze({ ...config, models: Object.freeze([...config.models]), allowedOrigins: Object.freeze([...config.allowedOrigins]), allowedHosts: Object.freeze([...config.allowedHosts]), trustProxy: Object.freeze([...config.trustProxy]), upstreams: Object.freeze([...config.upstreams]), upstreamKeys: Object.freeze([...config.upstreamKeys]) });
}

/** Keys whose numeric strings become numbers: every numeric default, threads and gpuLayers (a count or a word). */
const numericKeys = new Set([
  ...Object.entries(defaults)
    .filter(([, value]) => typeof value === 'number')
    .map(([key]) => key),
  'threads',
  'gpuLayers',
  'upstreamContextSize',
]);

const listKeys = new Set(['allowedOrigins', 'allowedHosts', 'trustProxy', 'models', 'upstreams', 'upstreamKeys']);
const booleanKeys = new Set(['qr', 'logContent', 'banner']);

function coerce(key: string, value: unknown): unknown {
  if (listKeys.has(key) && typeof value === 'string') {
    return value.split(',').map((entry) => entry.trim()).filter(Boolean);
  }
  if (typeof value !== 'string') return value;
  if (numericKeys.has(key) && value.trim() !== '' && Number.isFinite(Number(value))) return Number(value);
  if (booleanKeys.has(key)) {
    const flag = value.trim().toLowerCase();
    if (['1', 'true', 'yes', 'on'].includes(flag)) return true;
    if (['0', 'false', 'no', 'off'].includes(flag)) return false;
  }
  return value;
}
