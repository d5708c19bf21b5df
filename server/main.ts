#!/usr/bin/env node
/**
 * Parley's entry point: the only module that reads process.argv and process.env.
 * Flags win over PARLEY_* environment variables, which win over defaults (server/config.ts).
 */
import { constants as osConstants } from 'node:os';
import { join, resolve } from 'node:path';
import { Command, Option } from 'commander';
import qrcode from 'qrcode-terminal';
import { pullModel } from '../models/pullModel.js';
import { DataDirPermissionError } from './auth/checkDataDir.js';
import { ApiKeyStoreError, ApiKeyStoreFailure, API_KEY_PREFIX, isKeyPrefix, KeyOwnerKind, type ApiKey, type KeyOwner } from './auth/ApiKeyStore.js';
import { Role } from './auth/Principal.js';
import { PasswordInputError, readNewPassword } from './auth/readPassword.js';
import { UserStoreError } from './auth/UserStore.js';
import { openAuthStores, type AuthStores } from './cluster/openAuthStores.js';
import { ConfigError, defaults, loadConfig } from './config.js';
import { buildNativeLlama } from './engine/buildNativeLlama.js';
import { GpuUnavailableError } from './engine/GpuUnavailableError.js';
import { LlamaBuildUnavailableError } from './engine/LlamaBuildUnavailableError.js';
import { ModelLoadError } from './engine/loadLlamaModel.js';
import { INVITE_FILE } from './auth/loadOrCreateInvite.js';
import { joinLink } from './joinLink.js';
import { createLogger } from './logging/createLogger.js';
import { startServer } from './startServer.js';
import { TlsFilesError } from './transport/checkTlsFiles.js';
import { TransportUnavailableError } from './transport/selectTransport.js';

const program = new Command('parley')
  .description('Self-hosted LAN chat server for local GGUF models. With no command, serves the chat.')
  .showHelpAfterError()
  .enablePositionalOptions();

program
  .addOption(new Option('--host <address>', 'address to listen on').env('PARLEY_HOST').default(defaults.host))
  .addOption(new Option('--port <number>', 'port to listen on; 0 picks a free one').env('PARLEY_PORT').default(String(defaults.port)))
  .addOption(new Option('--model <path>', "a GGUF model file to serve; repeat for several (the first is the default). Without any model: Parley's generated demo model").env('PARLEY_MODEL').argParser((value: string, previous: string[] | undefined) => [...(previous ?? []), value]))
  .addOption(new Option('--models-dir <path>', 'serve every .gguf file in this folder too, each by its file name without .gguf').env('PARLEY_MODELS_DIR'))
  .addOption(new Option('--default-model <id>', 'the model new conversations get (default: the first --model, else the first by name)').env('PARLEY_DEFAULT_MODEL'))
  .addOption(new Option('--invite <code>', 'pin the invite code (default: generated once, kept in the data dir)').env('PARLEY_INVITE'))
  .addOption(new Option('--transport <name>', 'auto: native uWebSockets.js when it loads, else ws').choices(['auto', 'uws', 'ws']).env('PARLEY_TRANSPORT').default(defaults.transport))
  .addOption(new Option('--llama-build <build>', 'auto: the native llama.cpp build when `npm run build:llama` made one, else the prebuilt binary').choices(['auto', 'prebuilt', 'native']).env('PARLEY_LLAMA_BUILD').default(defaults.llamaBuild))
  // Validated by loadConfig (no commander choices), so a bad value exits 2 like every invalid setting.
  .addOption(new Option('--gpu <backend>', 'auto, metal, cuda, vulkan or off. auto: the best GPU this machine has drivers for, else the CPU; a named backend must load or Parley exits').env('PARLEY_GPU').default(defaults.gpu))
  .addOption(new Option('--gpu-layers <n>', "auto (fit to free VRAM), max (every layer, or fail) or a count; ignored on the CPU").env('PARLEY_GPU_LAYERS').default(defaults.gpuLayers))
  .addOption(new Option('--slots <n>', 'parallel generations (sequences in one batch)').env('PARLEY_SLOTS').default(String(defaults.slots)))
  .addOption(new Option('--threads <n>', 'CPU threads for the model, or auto: every math core, but 1 for a small model on the prebuilt binary').env('PARLEY_THREADS').default(String(defaults.threads)))
  .addOption(new Option('--data-dir <path>', 'where the signing key and invite live').env('PARLEY_DATA_DIR').default(defaults.dataDir))
  .addOption(new Option('--context-size <n>', 'context tokens per conversation slot').env('PARLEY_CONTEXT_SIZE').default(String(defaults.contextSize)))
  .addOption(new Option('--max-tokens <n>', 'reply token cap').env('PARLEY_MAX_TOKENS').default(String(defaults.maxTokens)))
  .addOption(new Option('--temperature <t>', 'sampling temperature (0 = greedy)').env('PARLEY_TEMPERATURE').default(String(defaults.temperature)))
  .addOption(new Option('--system-prompt <text>', 'system prompt for every conversation').env('PARLEY_SYSTEM_PROMPT'))
  .addOption(new Option('--max-queue <n>', 'requests that may wait for a slot').env('PARLEY_MAX_QUEUE').default(String(defaults.maxQueue)))
  .addOption(new Option('--max-text-chars <n>', 'longest message accepted, in characters').env('PARLEY_MAX_TEXT_CHARS').default(String(defaults.maxTextChars)))
  .addOption(new Option('--generation-timeout <ms>', 'wall-clock cap per reply').env('PARLEY_GENERATION_TIMEOUT_MS').default(String(defaults.generationTimeoutMs)))
  .addOption(new Option('--token-ttl <seconds>', 'access token lifetime').env('PARLEY_TOKEN_TTL').default(String(defaults.tokenTtlSeconds)))
  .addOption(new Option('--allowed-origin <origin...>', 'extra exact origins (scheme://host[:port]) allowed besides the server\'s own; repeat or comma-separate').env('PARLEY_ALLOWED_ORIGINS'))
  .addOption(new Option('--allowed-host <host...>', 'extra Host names (optionally name:port) accepted besides this machine\'s own names and addresses').env('PARLEY_ALLOWED_HOSTS'))
  .addOption(new Option('--trust-proxy <address...>', 'load balancers (IPs, CIDR ranges or loopback) whose X-Forwarded-For names the client, for per-IP limits and logs; repeat or comma-separate').env('PARLEY_TRUST_PROXY'))
  .addOption(new Option('--tls-cert <file>', 'PEM certificate: serve https and wss (needs --tls-key)').env('PARLEY_TLS_CERT'))
  .addOption(new Option('--tls-key <file>', 'PEM private key for --tls-cert').env('PARLEY_TLS_KEY'))
  .addOption(new Option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent').env('PARLEY_LOG_LEVEL').default(defaults.logLevel))
  .addOption(new Option('--log-content', 'log message text and replies (off by default: they are private)').env('PARLEY_LOG_CONTENT'))
  .addOption(new Option('--filter-rules <file>', 'content filter rules, one JSON object a line (README, "Content filter"); a bad rule stops the start naming its line').env('PARLEY_FILTER_RULES'))
  .addOption(new Option('--metrics-token <secret>', 'bearer secret for /metrics from other machines (default: loopback and admin tokens only)').env('PARLEY_METRICS_TOKEN'))
  .addOption(new Option('--history <where>', 'sqlite: conversations survive restarts, encrypted in the data dir; off: memory only').choices(['sqlite', 'off']).env('PARLEY_HISTORY').default(defaults.history))
  .addOption(new Option('--history-days <n>', 'delete conversations idle for longer than this many days (0: keep)').env('PARLEY_HISTORY_DAYS').default(String(defaults.historyDays)))
  .addOption(new Option('--embedding-model <gguf>', 'an embedding model for documents: retrieval fuses semantic nearness with the word match (reciprocal rank fusion); without it, word match only').env('PARLEY_EMBEDDING_MODEL'))
  .addOption(new Option('--history-key <file>', 'the 32-byte key that encrypts history (default: history.key in the data dir, created on first start)').env('PARLEY_HISTORY_KEY'))
  .addOption(new Option('--upstream <name=url>', 'serve an OpenAI-compatible server (llama-server, vLLM, Ollama, another Parley) as the model NAME; repeat a NAME with several URLs for a pool (README, "Upstream engines")').env('PARLEY_UPSTREAMS').argParser((value: string, previous: string[] | undefined) => [...(previous ?? []), value]))
  .addOption(new Option('--upstream-key <name=key>', 'bearer key sent to every upstream of NAME (never logged); repeatable').env('PARLEY_UPSTREAM_KEYS').argParser((value: string, previous: string[] | undefined) => [...(previous ?? []), value]))
  .addOption(new Option('--upstream-context-size <n>', "an upstream's context tokens when its /v1/models does not tell (default 4096)").env('PARLEY_UPSTREAM_CONTEXT_SIZE'))
  .addOption(new Option('--redis <url>', 'redis://host:port: share budgets, connection counts, revocations and live replies with the other gateways (docs/deploy.md)').env('PARLEY_REDIS_URL'))
  .addOption(new Option('--database <url>', 'postgres://user@host/db: keep history in PostgreSQL instead of SQLite (docs/deploy.md)').env('PARLEY_DATABASE_URL'))
  .addOption(new Option('--signing-key <file>', "the Ed25519 key (JWK) that signs tokens; give every gateway of a cluster the same file (default: the data dir's own, created on first start)").env('PARLEY_SIGNING_KEY'))
  .addOption(new Option('--role <role>', 'all: web page, chat socket and /v1; engine: an engine node for gateways, /v1 without the web page or chat socket').choices(['all', 'engine']).env('PARLEY_ROLE').default(defaults.role))
  .addOption(new Option('--no-qr', 'do not print the join QR code'))
  .addOption(new Option('--no-banner', 'do not print the join link (it carries the invite) or its QR code to stderr: for service managers that keep stderr in a journal'));

/** Numeric limits: one flag and one PARLEY_* variable each, named after the config key. */
const limitFlags = [
  ['maxFrameBytes', 'largest WebSocket frame in bytes; larger closes the socket (1009; on uws the connection drops: 1006)'],
  ['maxApiBodyBytes', 'largest request body in bytes under /v1/ (the OpenAI-compatible API); larger gets 413'],
  ['maxDocumentBytes', 'largest document upload in bytes (POST /api/documents); larger is cut off with 413'],
  ['maxDocumentsPerMessage', 'documents one message may attach'],
  ['maxDocumentsPerConversation', 'documents one conversation may hold'],
  ['maxDocumentStorageBytes', 'bytes of uploaded documents one user may keep'],
  ['maxDocumentChars', 'characters of text one document may yield'],
  ['maxQueuedPerUser', 'requests one user may have waiting'],
  ['idleTimeoutSeconds', 'close sockets silent this long (pings keep live ones open)'],
  ['framesPerSecond', 'frames per second per connection'],
  ['frameBurst', 'extra frames per 10 s a connection may burst'],
  ['floodStrikes', 'refused frames within the flood window that close the socket (4429)'],
  ['floodWindowSeconds', 'the flood window'],
  ['generationsPerMinute', 'replies per minute per user, across all their sockets'],
  ['tokensPerHour', 'prompt + reply tokens per hour per user'],
  ['generationsPerMinutePerIp', 'replies per minute per IP address, across all invite users there'],
  ['tokensPerHourPerIp', 'prompt + reply tokens per hour per IP address, across all invite users there'],
  ['maxConnectionsPerUser', 'open sockets per user'],
  ['maxConnectionsPerIp', 'open sockets per IP address'],
  ['maxHttpConnectionsPerIp', 'HTTP connections with a request in progress per IP address; the next gets 429'],
  ['upgradesPerMinute', 'WebSocket upgrades per minute per IP address'],
  ['tokenRequestsPerMinute', 'token and login requests per minute per IP address'],
  ['logoutsPerMinute', 'logout requests per minute per IP address'],
  ['inviteUsersPerHour', 'new invite users (joins with the invite) per hour per IP address'],
  ['loginFailuresBeforeLockout', 'wrong invites or passwords before an IP is locked out'],
  ['lockoutSeconds', 'how long a lockout lasts'],
  ['refreshTtlSeconds', 'how long a sign-in (the refresh cookie) lasts'],
  ['resumeGraceMs', 'how long a reply outlives a dropped connection, resumable by its owner (0: cancel at once)'],
  ['maxReplyBytes', 'reply bytes kept for resuming; a dropped reply past this is cancelled'],
  ['shutdownTimeoutMs', 'on SIGTERM/SIGINT, how long replies in flight may run before they are cancelled'],
  ['maxLoadedModels', 'models loaded at once; the least recently used idle one is unloaded to make room'],
  ['modelIdleSeconds', 'unload a model (other than the default) after this long without a request (0: never)'],
  ['modelMemoryMib', 'memory all loaded models may take together, weights and contexts (default: 75% of this machine\'s); a model that cannot fit is refused before it loads'],
  ['upstreamMaxInFlight', 'requests in flight per upstream (--upstream), at most; more wait for room'],
  ['upstreamHealthIntervalMs', 'how often each upstream is health-checked (GET /health, else /v1/models), in ms (0: only at start)'],
] as const satisfies ReadonlyArray<readonly [keyof typeof defaults, string]>;
for (const [key, description] of limitFlags) {
  const kebab = key.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`);
  const env = `PARLEY_${key.replace(/[A-Z]/g, (letter) => `_${letter}`).toUpperCase()}`;
  program.addOption(new Option(`--${kebab} <n>`, description).env(env).default(String(defaults[key])));
}

program.action(async (options: Record<string, string | string[] | boolean | undefined>) => {
    let config;
    try {
      config = loadConfig({
        host: options.host,
        port: options.port,
        models: options.model,
        modelsDir: options.modelsDir,
        defaultModel: options.defaultModel,
        invite: options.invite,
        transport: options.transport,
        llamaBuild: options.llamaBuild,
        gpu: options.gpu,
        gpuLayers: options.gpuLayers,
        slots: options.slots,
        threads: options.threads,
        dataDir: options.dataDir,
        history: options.history,
        historyDays: options.historyDays,
        historyKeyFile: options.historyKey,
        embeddingModel: options.embeddingModel,
        contextSize: options.contextSize,
        maxTokens: options.maxTokens,
        temperature: options.temperature,
        systemPrompt: options.systemPrompt,
        maxQueue: options.maxQueue,
        maxTextChars: options.maxTextChars,
        generationTimeoutMs: options.generationTimeout,
        tokenTtlSeconds: options.tokenTtl,
        allowedOrigins: list(options.allowedOrigin),
        allowedHosts: list(options.allowedHost),
        trustProxy: list(options.trustProxy),
        tlsCert: options.tlsCert,
        tlsKey: options.tlsKey,
        logLevel: options.logLevel,
        logContent: options.logContent,
        qr: options.qr,
        banner: options.banner,
        metricsToken: options.metricsToken,
        filterRules: options.filterRules,
        upstreams: options.upstream,
        upstreamKeys: options.upstreamKey,
        upstreamContextSize: options.upstreamContextSize,
        role: options.role,
        redis: options.redis,
        database: options.database,
        signingKeyFile: options.signingKey,
        ...Object.fromEntries(limitFlags.map(([key]) => [key, options[key]])),
      });
    } catch (error) {
      if (error instanceof ConfigError) {
        process.stderr.write(`${error.message}\n`);
        process.exit(ExitCode.badConfig);
      }
      throw error;
    }
    const logger = createLogger({ level: config.logLevel });
    let started;
    try {
      started = await startServer(config, { logger });
    } catch (error) {
      const exitCode = startupExitCode(error);
      logger.fatal({ err: error, exitCode }, 'startup failed');
      // One line on stderr, whatever the error: supervisors and people read the last line.
      process.stderr.write(`parley: ${oneLine(error instanceof Error ? error.message : String(error))}\n`);
      process.exit(exitCode);
    }
    const link = joinLink(config.host, started.port, started.invite.code, { tls: config.tlsCert !== undefined });
    // The join link carries the invite: print it to the terminal only (unless --no-banner), never to the log.
    if (config.banner) {
      process.stderr.write(`\n  Parley is ready${started.engine.info.demo ? " (demo model: a toy that strings words together, not an assistant)" : ''}.\n  Join from any device on this network:\n\n    ${link}\n\n`);
      if (config.qr) qrcode.generate(link, { small: true }, (code) => process.stderr.write(`${code}\n`));
    } else {
      process.stderr.write(`\n  Parley is ready. The join link is not printed (--no-banner): ${started.invite.pinned ? 'the invite is the one --invite pins' : `the invite is in ${join(config.dataDir, INVITE_FILE)}`}.\n\n`);
    }

    const running = started;
    // Until here a signal takes Node's default action and ends the process at once: nothing to drain.
    // First signal: drain (stop() lets replies in flight run up to shutdownTimeoutMs), exit 0.
    // Second: cancel every reply now, so each still gets its terminal frame and its socket 1001,
    // and exit 128 + the signal number within FORCED_EXIT_MS. Third: exit at once.
    let firstSignalAt: number | undefined;
    let forcedExitCode: number | undefined;
    const onSignal = (signal: NodeJS.Signals) => {
      const signalExitCode = 128 + osConstants.signals[signal];
      if (firstSignalAt === undefined) {
        firstSignalAt = Date.now();
        // Logged before stop() so that, by the time anyone reads this line, the server already
        // refuses new work (stop() sets that synchronously).
        logger.info({ signal, shutdownTimeoutMs: config.shutdownTimeoutMs }, 'shutting down: replies in flight may finish; signal again to force');
        // stop() is bounded by the drain timeout; this bounds it even if something in it hangs.
        setTimeout(() => {
          logger.error({ signal }, 'shutdown did not finish in time; exiting anyway');
          process.exit(ExitCode.failure);
        }, config.shutdownTimeoutMs + SHUTDOWN_OVERRUN_MS).unref();
        running.stop().then(
          () => {
            logger.info({ signal, ms: Date.now() - (firstSignalAt ?? 0) }, 'stopped');
            process.exit(forcedExitCode ?? ExitCode.ok);
          },
          (error: unknown) => {
            logger.error({ err: error }, 'shutdown failed');
            process.exit(forcedExitCode ?? ExitCode.failure);
          },
        );
        return;
      }
      if (forcedExitCode === undefined && Date.now() - firstSignalAt < REPEATED_SIGNAL_MS) {
        logger.debug({ signal }, 'signal repeated at once (relayed by a wrapper such as npm or tsx); still stopping gracefully');
        return;
      }
      if (forcedExitCode !== undefined) {
        logger.warn({ signal }, 'third signal: exiting now');
        process.exit(forcedExitCode);
      }
      forcedExitCode = signalExitCode;
      logger.warn({ signal }, 'second signal: cancelling replies in flight and exiting');
      setTimeout(() => process.exit(signalExitCode), FORCED_EXIT_MS).unref();
      running.server.abortAll();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });

/**
 * Process exit codes, documented in README.md ("Shutdown"). A forced stop (a second signal while
 * draining) exits with the shell's code for death by that signal, 128 + its number: 130 for
 * SIGINT, 143 for SIGTERM, so a supervisor can tell it from a clean stop.
 */
const ExitCode = {
  /** Stopped gracefully after SIGTERM or SIGINT. */
  ok: 0,
  /** Anything else: an unexpected startup error (such as a port in use), or a failed or overrunning shutdown. */
  failure: 1,
  /** The configuration cannot be served: an invalid flag or variable, unusable TLS files, `--transport uws` without its binary, `--llama-build native` without a native build, or `--gpu metal|cuda|vulkan` without that backend, or `--default-model` naming no model found, or a data dir (or a secret in it) that other users can change, or a `--filter-rules` file that cannot be read or holds a bad rule (the message names its line). */
  badConfig: 2,
  /** The model file could not be loaded: missing, not a GGUF, truncated or malformed, or refused by llama.cpp. */
  modelLoadFailed: 3,
} as const;
type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** How long past the drain timeout stop() may take (closing sockets, freeing the model) before the process exits regardless. */
const SHUTDOWN_OVERRUN_MS = 10_000;
/** After a second signal, how long the cancelled replies' terminal frames and the 1001 closes may take before the process exits regardless. */
const FORCED_EXIT_MS = 3_000;
/**
 * A second signal this soon after the first is the same request delivered twice, not an
 * insistence: Ctrl+C signals the whole foreground process group, and wrappers (npm, tsx) relay
 * the signal they receive to their child as well, so Parley may see one keypress twice within
 * tens of milliseconds.
 */
const REPEATED_SIGNAL_MS = 500;

function startupExitCode(error: unknown): ExitCode {
  if (error instanceof ModelLoadError) return ExitCode.modelLoadFailed;
  if (error instanceof ConfigError || error instanceof DataDirPermissionError || error instanceof TlsFilesError || error instanceof TransportUnavailableError || error instanceof LlamaBuildUnavailableError || error instanceof GpuUnavailableError) return ExitCode.badConfig;
  return ExitCode.failure;
}

function oneLine(message: string): string {
  return message.replace(/\s*\n\s*/g, ' ').trim();
}

/** A variadic flag gives an array and its env var one string; both may hold comma-separated entries. */
function list(value: string | string[] | boolean | undefined): string[] | undefined {
  if (value === undefined || typeof value === 'boolean') return undefined;
  return (Array.isArray(value) ? value : [value]).flatMap((entry) => entry.split(',')).map((entry) => entry.trim()).filter(Boolean);
}

program
  .command('pull')
  .description('download a GGUF model (https URL or hf:<user>/<repo>[:quant]) into models/pulled')
  .argument('<uri>', 'model URL or hf: URI')
  .option('--dir <path>', 'destination folder', 'models/pulled')
  .action(async (uri: string, options: { dir: string }) => {
    try {
      const { path } = await pullModel(uri, { dir: resolve(options.dir), showProgress: true });
      process.stdout.write(`\nSaved ${path}\nServe it with: npm start -- --model ${path}\n`);
    } catch (error) {
      process.stderr.write(`parley pull: ${(error as Error).message}\n`);
      process.exit(1);
    }
  });

program
  .command('build-llama')
  .description('compile llama.cpp for this CPU (minutes; needs cmake and a C++ compiler, no network); `--llama-build auto` then runs it')
  .action(async () => {
    try {
      const { seconds, systemInfo } = await buildNativeLlama();
      process.stdout.write(`\nBuilt llama.cpp for this machine in ${Math.round(seconds)} s.\n${systemInfo}\nParley runs it from now on (--llama-build auto, the default).\n`);
    } catch (error) {
      process.stderr.write(`parley build-llama: ${oneLine(error instanceof Error ? error.message : String(error))}\n`);
      process.exit(1);
    }
  });

const userCommand = program
  .command('user')
  .description('manage named accounts (optional: invites keep working); the running server sees changes at the next login or refresh');
const userDataDir = () => new Option('--data-dir <path>', 'where users.json lives').env('PARLEY_DATA_DIR').default(defaults.dataDir);
/** With it, `user` and `key` commands change the accounts and keys the gateways share, instead of the data dir's files. */
const authRedis = () => new Option('--redis <url>', "the gateways' Redis: change the accounts and keys they share (docs/deploy.md)").env('PARLEY_REDIS_URL');
/** Runs `work` on the data dir's stores, or with `--redis` on the shared ones, and closes them. */
async function withAuthStores(options: { dataDir: string; redis?: string }, work: (stores: AuthStores) => Promise<void>): Promise<void> {
  const stores = await openAuthStores(resolve(options.dataDir), options.redis);
  try {
    await work(stores);
  } finally {
    await stores.close();
  }
}
const runUserCommand = async (work: () => Promise<void>) => {
  try {
    await work();
  } catch (error) {
    if (error instanceof UserStoreError || error instanceof PasswordInputError) {
      process.stderr.write(`parley user: ${error.message}\n`);
      process.exit(1);
    }
    throw error;
  }
};

userCommand
  .command('add')
  .description("add an account; the password comes from standard input (typed twice on a terminal, else the first line)")
  .argument('<name>', 'account name: a letter, then letters, digits, ".", "_" or "-" (32 at most)')
  .option('--admin', 'may revoke users and rotate the invite')
  .addOption(userDataDir())
  .addOption(authRedis())
  .action((name: string, options: { admin?: boolean; dataDir: string; redis?: string }) =>
    runUserCommand(async () => {
      const password = await readNewPassword(process.stdin, process.stderr);
      await withAuthStores(options, async ({ users }) => {
        const account = await users.add(name, password, options.admin ? Role.admin : Role.user);
        process.stdout.write(`Added ${account.role} "${account.name}" (id ${account.id}).\n`);
      });
    }),
  );

userCommand
  .command('remove')
  .description('remove an account; its sessions end at their next refresh (use the admin revoke route to end them at once)')
  .argument('<name>', 'account name')
  .addOption(userDataDir())
  .addOption(authRedis())
  .action((name: string, options: { dataDir: string; redis?: string }) =>
    runUserCommand(() =>
      withAuthStores(options, async ({ users, apiKeys }) => {
        const removed = await users.remove(name);
        if (!removed) throw new UserStoreError(`No user "${name}".`);
        // The server refuses a removed account's keys anyway; this also shows it in `key list`.
        const keys = await apiKeys.revokeUser(removed.id);
        process.stdout.write(`Removed "${removed.name}" (id ${removed.id})${keys > 0 ? `; revoked ${keys} API key${keys === 1 ? '' : 's'}` : ''}.\n`);
      }),
    ),
  );

userCommand
  .command('unblock')
  .description("lift the block an admin's revocation put on an account, so it can sign in again (a running server sees it at once)")
  .argument('<name>', 'account name or id')
  .addOption(userDataDir())
  .addOption(authRedis())
  .action((name: string, options: { dataDir: string; redis?: string }) =>
    runUserCommand(() =>
      withAuthStores(options, async ({ users }) => {
        const account = await users.setBlocked(name, false);
        if (!account) throw new UserStoreError(`No user "${name}".`);
        process.stdout.write(`"${account.name}" (id ${account.id}) can sign in.\n`);
      }),
    ),
  );

userCommand
  .command('list')
  .description('list accounts (names, ids and roles; never passwords)')
  .addOption(userDataDir())
  .addOption(authRedis())
  .action((options: { dataDir: string; redis?: string }) =>
    runUserCommand(() =>
      withAuthStores(options, async ({ users }) => {
        for (const account of await users.list()) {
          process.stdout.write(`${account.name}\t${account.role}\t${account.id}${account.blocked ? '\tblocked' : ''}\n`);
        }
      }),
    ),
  );

const keyCommand = program
  .command('key')
  .description('manage API keys for the OpenAI-compatible /v1 API; the running server sees changes at once');
const keyDataDir = () => new Option('--data-dir <path>', 'where api-keys.json lives').env('PARLEY_DATA_DIR').default(defaults.dataDir);
const runKeyCommand = async (work: () => Promise<void>) => {
  try {
    await work();
  } catch (error) {
    if (error instanceof ApiKeyStoreError || error instanceof UserStoreError) {
      process.stderr.write(`parley key: ${error.message}\n`);
      process.exit(1);
    }
    throw error;
  }
};

/**
 * The owner of new keys: an account, by name or id, or an invite user by the id the server
 * knows them by (`u_…`, as in its log). The epoch is read (sessions.json, and with `--redis` the
 * gateways' shared epochs) without writing it.
 */
async function keyOwner(stores: AuthStores, reference: string): Promise<KeyOwner> {
  const { users } = stores;
  const account = (await users.find(reference)) ?? (await users.findById(reference));
  if (account) return { userId: account.id, kind: KeyOwnerKind.account, userName: account.name, epoch: await stores.epochOf(account.id) };
  if (/^u_[A-Za-z0-9_-]+$/.test(reference) && (await stores.knows(reference))) {
    return { userId: reference, kind: KeyOwnerKind.invite, userName: reference, epoch: await stores.epochOf(reference) };
  }
  throw new ApiKeyStoreError(`No user "${reference}": give an account name, an account id (a_…) or the id of an invite user the server knows (u_…).`, ApiKeyStoreFailure.notFound);
}

function describeTime(ms: number | undefined): string {
  return ms === undefined ? 'never' : new Date(ms).toISOString();
}

function describeKey(key: ApiKey): string {
  return `"${key.name}" (${API_KEY_PREFIX}${key.prefix}…)`;
}

keyCommand
  .command('create')
  .description('make a key for a user; it is printed once (on stdout, alone) and never again')
  .argument('<user>', 'account name, account id (a_…) or invite user id (u_…)')
  .option('--name <name>', 'what the key is for, e.g. the tool or machine (1-64 characters)', 'API key')
  .addOption(keyDataDir())
  .addOption(authRedis())
  .action((reference: string, options: { name: string; dataDir: string; redis?: string }) =>
    runKeyCommand(() =>
      withAuthStores(options, async (stores) => {
        const owner = await keyOwner(stores, reference);
        const { key, apiKey } = await stores.apiKeys.create(owner, options.name);
        process.stderr.write(`Created API key ${describeKey(apiKey)} for ${owner.userName} (id ${owner.userId}):\n\n`);
        process.stdout.write(`${key}\n`);
        process.stderr.write(`\nCopy it now: it will not be shown again (Parley keeps only its hash).\nRevoke it with: npm run parley -- key revoke ${apiKey.prefix}\n`);
      }),
    ),
  );

keyCommand
  .command('list')
  .description("list a user's keys: name, prefix, created, last used, revoked (never the keys)")
  .argument('<user>', 'account name or user id')
  .addOption(keyDataDir())
  .addOption(authRedis())
  .action((reference: string, options: { dataDir: string; redis?: string }) =>
    runKeyCommand(() =>
      withAuthStores(options, async ({ users, apiKeys }) => {
        // Listing needs no live session: an invite user's id is enough.
        const account = (await users.find(reference)) ?? (await users.findById(reference));
        const userId = account?.id ?? reference;
        const keys = await apiKeys.list(userId);
        if (keys.length === 0) {
          process.stderr.write(`No API keys for "${reference}".\n`);
          return;
        }
        process.stdout.write('name\tprefix\tcreated\tlast used\trevoked\n');
        for (const key of keys) {
          process.stdout.write(`${key.name}\t${key.prefix}\t${describeTime(key.createdAt)}\t${describeTime(key.lastUsedAt)}\t${key.revokedAt === undefined ? 'no' : describeTime(key.revokedAt)}\n`);
        }
      }),
    ),
  );

keyCommand
  .command('revoke')
  .description('revoke a key by its prefix (from `key list`); tools using it are refused from their next request')
  .argument('<prefix>', `the 8 characters after ${API_KEY_PREFIX}`)
  .addOption(keyDataDir())
  .addOption(authRedis())
  .action((given: string, options: { dataDir: string; redis?: string }) =>
    runKeyCommand(async () => {
      const prefix = given.startsWith(API_KEY_PREFIX) ? given.slice(API_KEY_PREFIX.length) : given;
      if (!isKeyPrefix(prefix)) throw new ApiKeyStoreError(`A prefix is the 8 characters after ${API_KEY_PREFIX}, as \`key list\` shows them.`, ApiKeyStoreFailure.badName);
      await withAuthStores(options, async ({ apiKeys }) => {
        const before = await apiKeys.get(prefix);
        const revoked = await apiKeys.revoke(prefix);
        if (!revoked) throw new ApiKeyStoreError(`No API key with prefix ${prefix}.`, ApiKeyStoreFailure.notFound);
        process.stdout.write(`${before?.revokedAt === undefined ? 'Revoked' : 'Already revoked:'} ${describeKey(revoked)} of ${revoked.userName} (id ${revoked.userId}).\n`);
      });
    }),
  );

await program.parseAsync(process.argv);
