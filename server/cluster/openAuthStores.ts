import pino from 'pino';
import { ApiKeyStore } from '../auth/ApiKeyStore.js';
import { SessionStore } from '../auth/SessionStore.js';
import { UserStore } from '../auth/UserStore.js';
import { createLogger } from '../logging/createLogger.js';
import { EPOCHS_KEY } from './RevocationBus.js';
import { openAuthDocuments } from './openAuthDocuments.js';
import { openRedis } from './openRedis.js';
import { RedisFamilies } from './RedisFamilies.js';

/** What a `parley user` or `parley key` command reads and changes. */
export interface AuthStores {
  readonly users: UserStore;
  readonly apiKeys: ApiKeyStore;
  /** The user's revocation epoch now (a new key starts at it). */
  epochOf(userId: string): Promise<number>;
  /** Whether the server has seen this user id (a session or an epoch). */
  knows(userId: string): Promise<boolean>;
  close(): Promise<void>;
}

/**
 * The accounts and API keys a command changes: the data dir's files, or with `redisUrl` (the
 * gateways' `--redis`) the documents every gateway shares, seeded from the data dir's files
 * first if they were never written, exactly as a starting gateway does. Sessions are read, never
 * written. Warnings go to standard error: standard output carries the command's answer alone.
 */
export async function openAuthStores(dataDir: string, redisUrl: string | undefined): Promise<AuthStores> {
  const sessions = await SessionStore.read(dataDir);
  if (redisUrl === undefined) {
    return {
      users: new UserStore(dataDir),
      apiKeys: new ApiKeyStore(dataDir),
      epochOf: (userId) => Promise.resolve(sessions.epochOf(userId)),
      knows: (userId) => Promise.resolve(sessions.knows(userId)),
      close: () => Promise.resolve(),
    };
  }
  const logger = createLogger({ level: 'warn', destination: pino.destination(2) });
  const redis = await openRedis(redisUrl, { logger });
  try {
    const documents = await openAuthDocuments(redis.client, dataDir, logger);
    const families = new RedisFamilies(redis.client);
    return {
      users: new UserStore(dataDir, { document: documents.users }),
      apiKeys: new ApiKeyStore(dataDir, { document: documents.apiKeys }),
      async epochOf(userId) {
        return Math.max(sessions.epochOf(userId), Number((await redis.client.hget(EPOCHS_KEY, userId)) ?? 0));
      },
      async knows(userId) {
        return sessions.knows(userId) || (await families.familiesOf(userId)).length > 0 || (await redis.client.hexists(EPOCHS_KEY, userId)) === 1;
      },
      close: () => redis.close(),
    };
  } catch (error) {
    await redis.close();
    throw error;
  }
}
