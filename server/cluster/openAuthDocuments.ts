import { join } from 'node:path';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { API_KEYS_FILE } from '../auth/ApiKeyStore.js';
import { FileDocument } from '../auth/FileDocument.js';
import { BLOCKS_FILE } from '../auth/SignInBlocks.js';
import { USERS_FILE } from '../auth/UserStore.js';
import { RedisDocument } from './RedisDocument.js';

export const USERS_KEY = 'parley:auth:users';
export const API_KEYS_KEY = 'parley:auth:api-keys';
export const BLOCKS_KEY = 'parley:auth:blocks';

/**
 * The accounts, API keys and invite users' sign-in blocks every gateway shares over `--redis`.
 * The first gateway to start with Redis empty copies in its data dir's `users.json`,
 * `api-keys.json` and `blocks.json`; from then on Redis is the truth and those files are no
 * longer read.
 */
export async function openAuthDocuments(client: Redis, dataDir: string, logger: Logger): Promise<{ users: RedisDocument; apiKeys: RedisDocument; blocks: RedisDocument }> {
  const users = new RedisDocument(client, USERS_KEY);
  const apiKeys = new RedisDocument(client, API_KEYS_KEY);
  const blocks = new RedisDocument(client, BLOCKS_KEY);
  for (const [document, file] of [
    [users, USERS_FILE],
    [apiKeys, API_KEYS_FILE],
    [blocks, BLOCKS_FILE],
  ] as const) {
    if (await document.seedFrom(new FileDocument(join(dataDir, file)))) logger.info({ key: document.name, file }, `auth state: ${file} copied into redis (${document.name}), shared by every gateway from now on`);
  }
  return { users, apiKeys, blocks };
}
