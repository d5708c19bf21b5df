import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { redactUrl } from './redactUrl.js';

/** The Redis state a gateway reports on /readyz. */
export interface RedisHealth {
  readonly ready: boolean;
  /** Why not, in words (the URL's password never appears). */
  readonly reason?: string;
}

export interface OpenedRedis {
  /** Commands: limiters, counts, streams. Fails fast while Redis is down (no offline queue). */
  readonly client: Redis;
  /** A second connection for SUBSCRIBE and blocking reads, which hold their connection. */
  readonly subscriber: Redis;
  health(): RedisHealth;
  close(): Promise<void>;
}

/** How long a command may wait for Redis before it fails (a refusal, never a hang). */
const COMMAND_TIMEOUT_MS = 2000;

/**
 * Connects to `--redis`. Invariants:
 * - While Redis is unreachable every command rejects at once (`enableOfflineQueue: false`,
 *   one attempt per command), so limiters fail closed instead of queueing requests.
 * - The connections retry for ever, at most every 2 s, so Parley recovers without a restart
 *   when Redis comes back.
 * - The URL's password is never logged.
 */
export async function openRedis(url: string, options: { readonly logger: Logger; readonly connectTimeoutMs?: number }): Promise<OpenedRedis> {
  const { logger } = options;
  const shown = redactUrl(url);
  let lastError: string | undefined;
  /** Set by close(): the connections end on purpose, which is not an outage. */
  let closing = false;
  const make = (role: string) => {
    const redis = new Redis(url, {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      commandTimeout: COMMAND_TIMEOUT_MS,
      connectTimeout: options.connectTimeoutMs ?? 5000,
      connectionName: `parley-${role}`,
      retryStrategy: (attempt) => Math.min(100 * attempt, 2000),
    });
    let wasReady = false;
    redis.on('ready', () => {
      lastError = undefined;
      if (!wasReady) logger.info({ redis: shown, role }, `redis ${role} connection ready`);
      wasReady = true;
    });
    redis.on('error', (error: Error) => {
      const message = error.message.replaceAll(url, shown);
      if (message !== lastError) logger.warn({ redis: shown, role, err: { message } }, `redis ${role} connection failed: ${message}`);
      lastError = message;
    });
    redis.on('end', () => undefined);
    redis.on('close', () => {
      if (wasReady && !closing) logger.warn({ redis: shown, role }, `redis ${role} connection lost; retrying`);
      wasReady = false;
    });
    return redis;
  };
  const client = make('commands');
  const subscriber = make('subscriber');
  try {
    await Promise.all([client.connect(), subscriber.connect()]);
  } catch (error) {
    client.disconnect();
    subscriber.disconnect();
    throw new Error(`cannot reach redis at ${shown}: ${(error as Error).message.replaceAll(url, shown)}`);
  }
  return {
    client,
    subscriber,
    health() {
      if (client.status === 'ready' && subscriber.status === 'ready') return { ready: true };
      return { ready: false, reason: `redis at ${shown} is unreachable${lastError === undefined ? '' : ` (${lastError})`}` };
    },
    async close() {
      closing = true;
      await Promise.allSettled([client.quit(), subscriber.quit()]);
      client.disconnect();
      subscriber.disconnect();
    },
  };
}
