import type { Logger } from 'pino';
import * as z from 'zod/mini';
import { DEFAULT_EPOCH_RETENTION_MS } from '../auth/SessionStore.js';
import type { OpenedRedis } from './openRedis.js';

/** A user's revocation epoch went up: access tokens below `epoch` are refused, and their sockets close. */
export interface Revocation {
  readonly userId: string;
  readonly epoch: number;
}

/**
 * Carries revocations between the gateways of one installation, so a logout or an admin's
 * revocation on one gateway ends the user's sockets, tokens and API keys on every gateway.
 */
export interface RevocationBus {
  /**
   * Starts delivering revocations to `apply`: every one still known (a gateway started later
   * learns the earlier ones) before this resolves, then each new one, this gateway's own
   * included. `apply` must ignore an epoch it already has.
   */
  start(apply: (revocation: Revocation) => void): Promise<void>;
  /** Shares a revocation made here. Never throws: one that cannot go out now goes out when Redis is back. */
  publish(revocation: Revocation): void;
  /** Stops delivering; leaves the Redis connections (the caller's) open. Safe to call twice. */
  close(): Promise<void>;
}

/** One gateway alone: a revocation goes straight back to this gateway's own `apply`. */
export function createLocalRevocationBus(): RevocationBus {
  let apply: ((revocation: Revocation) => void) | undefined;
  return {
    start(deliver) {
      apply = deliver;
      return Promise.resolve();
    },
    publish(revocation) {
      apply?.(revocation);
    },
    close() {
      apply = undefined;
      return Promise.resolve();
    },
  };
}

/** Hash of user id → highest epoch any gateway raised it to. */
export const EPOCHS_KEY = 'parley:auth:epochs';
export const REVOCATIONS_CHANNEL = 'parley:auth:revocations';
/** A sync that failed (Redis unreachable, a timeout) is tried again this often until it succeeds. */
const RETRY_MS = 1000;
/** Epochs per script call when a gateway shares everything it knows. */
const BATCH = 500;

/**
 * Stores each epoch given (ARGV: channel, then user id, epoch pairs) only if it is higher than
 * the stored one, and publishes exactly the ones it stored, in the same atomic step: the hash
 * never goes down, and nothing is published that the hash does not hold.
 */
const RAISE_SCRIPT = `
local raised = 0
for i = 2, #ARGV, 2 do
  local user, epoch = ARGV[i], tonumber(ARGV[i + 1])
  local current = tonumber(redis.call('HGET', KEYS[1], user) or '0')
  if epoch > current then
    redis.call('HSET', KEYS[1], user, ARGV[i + 1])
    redis.call('PUBLISH', ARGV[1], cjson.encode({userId = user, epoch = epoch}))
    raised = raised + 1
  end
end
return raised`;

/** Forgets epochs below ARGV[1] (no token issued before them can still be alive) in one atomic step. */
const PRUNE_SCRIPT = `
local all = redis.call('HGETALL', KEYS[1])
local gone = 0
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) < tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[1], all[i])
    gone = gone + 1
  end
end
return gone`;

const Message = z.strictObject({ userId: z.string().check(z.minLength(1), z.maxLength(256)), epoch: z.int().check(z.gte(1)) });

/**
 * The revocation bus over `--redis`. Invariants:
 * - The hash `parley:auth:epochs` holds, per user, the highest epoch any gateway raised; it only
 *   goes up (RAISE_SCRIPT), and epochs old enough that no token below them can be alive go.
 * - Every (re)connection of either Redis connection runs a sync: this gateway first shares
 *   every epoch it knows (a revocation whose publish failed while Redis was down goes out now;
 *   a Redis that restarted empty learns them back), then reads the whole hash and applies it
 *   (a revocation published while this gateway's subscription was down is applied now). The
 *   subscription is confirmed before the read, so no revocation falls between the two.
 * - A failed sync is retried every RETRY_MS until one succeeds.
 */
export function createRedisRevocationBus(options: {
  readonly redis: Pick<OpenedRedis, 'client' | 'subscriber'>;
  readonly logger: Logger;
  /** The epochs this gateway knows, as [userId, epoch] (SessionStore.knownEpochs). */
  readonly known: () => Iterable<readonly [string, number]>;
  readonly now?: () => number;
  /** How long an epoch is kept; past it every token issued below it has expired. */
  readonly retentionMs?: number;
}): RevocationBus {
  const { client, subscriber } = options.redis;
  const log = options.logger.child({ component: 'revocations' });
  const now = options.now ?? Date.now;
  const retentionMs = options.retentionMs ?? DEFAULT_EPOCH_RETENTION_MS;
  let apply: ((revocation: Revocation) => void) | undefined;
  let queue: Promise<void> = Promise.resolve();
  let retry: NodeJS.Timeout | undefined;
  /** Set from a failed sync until one succeeds: an outage is logged once, not once per retry. */
  let failing = false;

  /** The oldest epoch still worth keeping: epochs are Unix seconds of the bump (or just above). */
  const cutoff = () => Math.floor((now() - retentionMs) / 1000);

  const deliver = (revocation: Revocation) => {
    if (revocation.epoch >= cutoff()) apply?.(revocation);
  };

  const share = async (epochs: readonly (readonly [string, number])[]) => {
    for (let index = 0; index < epochs.length; index += BATCH) {
      const args = epochs.slice(index, index + BATCH).flatMap(([userId, epoch]) => [userId, String(epoch)]);
      await client.eval(RAISE_SCRIPT, 1, EPOCHS_KEY, REVOCATIONS_CHANNEL, ...args);
    }
  };

  const syncOnce = async () => {
    await client.eval(PRUNE_SCRIPT, 1, EPOCHS_KEY, String(cutoff()));
    const floor = cutoff();
    await share([...options.known()].filter(([, epoch]) => epoch >= floor));
    const all = await client.hgetall(EPOCHS_KEY);
    for (const [userId, value] of Object.entries(all)) {
      const epoch = Number(value);
      if (Number.isSafeInteger(epoch) && epoch > 0) deliver({ userId, epoch });
    }
  };

  /** Syncs run one at a time, in order; a failure schedules another. */
  const sync = (reason: string): Promise<void> => {
    const run = queue.then(syncOnce).then(() => {
      if (failing) log.info({ reason }, 'revocations synced with redis again');
      failing = false;
    });
    queue = run.catch((error: unknown) => {
      if (apply === undefined) return;
      if (!failing) log.warn({ err: { message: (error as Error).message }, reason }, 'could not sync revocations with redis; retrying');
      failing = true;
      scheduleRetry();
    });
    return run;
  };
  const scheduleRetry = () => {
    retry ??= setTimeout(() => {
      retry = undefined;
      sync('retry').catch(() => undefined);
    }, RETRY_MS);
  };

  const onMessage = (channel: string, text: string) => {
    if (channel !== REVOCATIONS_CHANNEL) return;
    let revocation: Revocation;
    try {
      revocation = Message.parse(JSON.parse(text));
    } catch {
      log.warn('ignored a malformed revocation message');
      return;
    }
    deliver(revocation);
  };
  const onSubscriberReady = () => {
    // Confirmed before the read, so nothing published meanwhile is missed (ioredis also resubscribes; twice is harmless).
    subscriber
      .subscribe(REVOCATIONS_CHANNEL)
      .then(() => sync('subscriber reconnected'))
      .catch(() => undefined);
  };
  const onClientReady = () => void sync('client reconnected').catch(() => undefined);

  const close = async () => {
    if (apply === undefined) return;
    apply = undefined;
    clearTimeout(retry);
    retry = undefined;
    subscriber.off('message', onMessage);
    subscriber.off('ready', onSubscriberReady);
    client.off('ready', onClientReady);
    await subscriber.unsubscribe(REVOCATIONS_CHANNEL).catch(() => undefined);
    await queue;
  };

  return {
    async start(deliverTo) {
      apply = deliverTo;
      subscriber.on('message', onMessage);
      subscriber.on('ready', onSubscriberReady);
      client.on('ready', onClientReady);
      try {
        await subscriber.subscribe(REVOCATIONS_CHANNEL);
        await sync('start');
      } catch (error) {
        await close();
        throw error;
      }
    },
    publish(revocation) {
      if (revocation.epoch < 1) return;
      queue = queue
        .then(() => share([[revocation.userId, revocation.epoch]]))
        .catch((error: unknown) => {
          // Still in this gateway's SessionStore: the next sync shares it.
          log.warn({ err: { message: (error as Error).message }, user: revocation.userId }, 'could not publish a revocation; it goes out when redis is back');
          if (apply !== undefined) scheduleRetry();
        });
    },
    close,
  };
}
