import { join } from 'node:path';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { API_KEYS_FILE } from '../auth/ApiKeyStore.js';
import { FileDocument } from '../auth/FileDocument.js';
import { USERS_FILE } from '../auth/UserStore.js';
import { RedisDocument } from './RedisDocument.js';

export const USERS_KEY = 'parley:auth:users';
export const API_KEYS_KEY = 'parley:auth:api-keys';

/**
 * The accounts and API keys every gateway shares over `--redis`. The first gateway to start
 * with Redis empty copies in its data dir's `users.json` and `api-keys.json`; from then on
 * Redis is the truth and those files are no longer read.
 */
export async function openAuthDocuments(client: Redis, dataDir: string, logger: Logger): Promise<{ users: RedisDocument; apiKeys: RedisDocument }> {
  const users = new RedisDocument(client, USERS_KEY);
  const apiKeys = new RedisDocument(client, API_KEYS_KEY);
  for (const [document, file] of [
    [users, USERS_FILE],
    [apiKeys, API_KEYS_FILE],
  ] as const) {
    if (await document.seedFrom(new FileDocument(join(dataDir, file)))) logger.info({ key: document.name, file }, `auth state: ${file} copied into redis (${document.name}), shared by every gateway from now on`);
  }
  return { users, apiKeys };
}
