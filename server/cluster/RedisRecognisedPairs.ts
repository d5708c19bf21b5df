import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { RecognisedPairs } from '../limits/RecognisedPairs.js';

/**
 * Recognised (address, account) pairs shared by every gateway: one key per pair that Redis
 * expires itself, so a pair recognised on one gateway is recognised on all, and nothing needs
 * pruning. Keys hold a hash of the pair, not the account name.
 */
export class RedisRecognisedPairs implements RecognisedPairs {
  constructor(private readonly redis: Redis) {}

  async has(pair: string): Promise<boolean> {
    return (await this.redis.exists(keyOf(pair))) === 1;
  }

  async add(pair: string, ttlMs: number): Promise<void> {
    await this.redis.set(keyOf(pair), '1', 'PX', Math.max(1, Math.floor(ttlMs)));
  }
}

function keyOf(pair: string): string {
  return `parley:recognised:${createHash('sha256').update(pair).digest('base64url')}`;
}
