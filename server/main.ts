#!/usr/bin/env node
/**
 * Parley's entry point: the only module that reads process.argv and process.env.
 * Flags win over PARLEY_* environment variables, which win over defaults (server/config.ts).
 */
import { resolve } from 'node:path';
import { Command, Option } from 'commander';
import qrcode from 'qrcode-terminal';
import { pullModel } from '../models/pullModel.js';
import { ConfigError, defaults, loadConfig } from './config.js';
import { joinLink } from './joinLink.js';
import { createLogger } from './logging/createLogger.js';
import { startServer } from './startServer.js';

const program = new Command('parley')
  .description('Self-hosted LAN chat server for local GGUF models. With no command, serves the chat.')
  .showHelpAfterError()
  .enablePositionalOptions();

program
  .addOption(new Option('--host <address>', 'address to listen on').env('PARLEY_HOST').default(defaults.host))
  .addOption(new Option('--port <number>', 'port to listen on; 0 picks a free one').env('PARLEY_PORT').default(String(defaults.port)))
  .addOption(new Option('--model <path>', "GGUF model file to serve (default: Parley's generated demo model)").env('PARLEY_MODEL'))
  .addOption(new Option('--invite <code>', 'pin the invite code (default: generated once, kept in the data dir)').env('PARLEY_INVITE'))
  .addOption(new Option('--transport <name>', 'auto: native uWebSockets.js when it loads, else ws').choices(['auto', 'uws', 'ws']).env('PARLEY_TRANSPORT').default(defaults.transport))
  .addOption(new Option('--slots <n>', 'parallel generations (sequences in one batch)').env('PARLEY_SLOTS').default(String(defaults.slots)))
  .addOption(new Option('--threads <n>', 'CPU threads for the model').env('PARLEY_THREADS').default(String(defaults.threads)))
  .addOption(new Option('--data-dir <path>', 'where the signing key and invite live').env('PARLEY_DATA_DIR').default(defaults.dataDir))
  .addOption(new Option('--context-size <n>', 'context tokens per conversation slot').env('PARLEY_CONTEXT_SIZE').default(String(defaults.contextSize)))
  .addOption(new Option('--max-tokens <n>', 'reply token cap').env('PARLEY_MAX_TOKENS').default(String(defaults.maxTokens)))
  .addOption(new Option('--temperature <t>', 'sampling temperature (0 = greedy)').env('PARLEY_TEMPERATURE').default(String(defaults.temperature)))
  .addOption(new Option('--system-prompt <text>', 'system prompt for every conversation').env('PARLEY_SYSTEM_PROMPT'))
  .addOption(new Option('--max-queue <n>', 'requests that may wait for a slot').env('PARLEY_MAX_QUEUE').default(String(defaults.maxQueue)))
  .addOption(new Option('--max-text-chars <n>', 'longest message accepted, in characters').env('PARLEY_MAX_TEXT_CHARS').default(String(defaults.maxTextChars)))
  .addOption(new Option('--generation-timeout <ms>', 'wall-clock cap per reply').env('PARLEY_GENERATION_TIMEOUT_MS').default(String(defaults.generationTimeoutMs)))
  .addOption(new Option('--token-ttl <seconds>', 'access token lifetime').env('PARLEY_TOKEN_TTL').default(String(defaults.tokenTtlSeconds)))
  .addOption(new Option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent').env('PARLEY_LOG_LEVEL').default(defaults.logLevel))
  .addOption(new Option('--no-qr', 'do not print the join QR code'))
  .action(async (options: Record<string, string | boolean | undefined>) => {
    let config;
    try {
      config = loadConfig({
        host: options.host,
        port: options.port,
        model: options.model,
        invite: options.invite,
        transport: options.transport,
        slots: options.slots,
        threads: options.threads,
        dataDir: options.dataDir,
        contextSize: options.contextSize,
        maxTokens: options.maxTokens,
        temperature: options.temperature,
        systemPrompt: options.systemPrompt,
        maxQueue: options.maxQueue,
        maxTextChars: options.maxTextChars,
        generationTimeoutMs: options.generationTimeout,
        tokenTtlSeconds: options.tokenTtl,
        logLevel: options.logLevel,
        qr: options.qr,
      });
    } catch (error) {
      if (error instanceof ConfigError) {
        process.stderr.write(`${error.message}\n`);
        process.exit(2);
      }
      throw error;
    }
    const logger = createLogger({ level: config.logLevel });
    let started;
    try {
      started = await startServer(config, { logger });
    } catch (error) {
      logger.fatal({ err: error }, 'startup failed');
      process.stderr.write(`parley: ${(error as Error).message}\n`);
      process.exit(1);
    }
    const link = joinLink(config.host, started.port, started.invite.code);
    // The join link carries the invite: print it to the terminal only, never to the log.
    process.stderr.write(`\n  Parley is ready${started.engine.info.demo ? " (demo model: a toy that strings words together, not an assistant)" : ''}.\n  Join from any device on this network:\n\n    ${link}\n\n`);
    if (config.qr) qrcode.generate(link, { small: true }, (code) => process.stderr.write(`${code}\n`));

    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal }, 'shutting down');
      started
        .stop()
        .then(() => process.exit(0))
        .catch((error: unknown) => {
          logger.error({ err: error }, 'shutdown failed');
          process.exit(1);
        });
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });

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

await program.parseAsync(process.argv);
