import type { Redis } from 'ioredis';
import { DEFAULT_EPOCH_RETENTION_MS, FamilyRecord } from '../auth/SessionStore.js';
import type { SharedFamilies } from '../auth/SharedFamilies.js';
import { RedisDocument } from './RedisDocument.js';

const FAMILY_PREFIX = 'parley:auth:family:';
const USER_PREFIX = 'parley:auth:user-families:';

/**
 * Refresh sessions in Redis: one RedisDocument per family (`parley:auth:family:<id>`, changed
 * only by compare-and-set, so two gateways rotating one family at once cannot both rotate it),
 * and a set of family ids per user (`parley:auth:user-families:<userId>`) for sign-out and the
 * per-user bound. A family's key expires when SessionStore would prune it (at its expiry; a
 * revoked one after the retention time), and a user's set with their last family.
 */
export class RedisFamilies implements SharedFamilies {
  private readonly retentionMs: number;

  constructor(
    private readonly client: Redis,
    options: { readonly retentionMs?: number } = {},
  ) {
    this.retentionMs = options.retentionMs ?? DEFAULT_EPOCH_RETENTION_MS;
  }

  async load(family: string): Promise<FamilyRecord | undefined> {
    return parse(await this.document(family).read());
  }

  update<T>(family: string, change: (record: FamilyRecord | undefined) => { readonly record?: FamilyRecord; readonly result: T }): Promise<T> {
    return this.document(family).update((text) => {
      const outcome = change(parse(text));
      return { result: outcome.result, ...(outcome.record ? { text: JSON.stringify(outcome.record) } : {}) };
    });
  }

  async add(family: string, record: FamilyRecord, maxPerUser: number): Promise<void> {
    await this.update(family, () => ({ record, result: undefined }));
    const key = USER_PREFIX + record.userId;
    await this.client.multi().sadd(key, family).pexpireat(key, record.expiresAt + this.retentionMs).exec();
    const ids = await this.familiesOf(record.userId);
    if (ids.length <= maxPerUser) return;
    // The same order as SessionStore's own bound: revoked ones first, then the soonest to expire.
    const own = await Promise.all(ids.map(async (id) => [id, await this.load(id)] as const));
    own.sort(([, a], [, b]) => Number(b?.revoked ?? true) - Number(a?.revoked ?? true) || (a?.expiresAt ?? 0) - (b?.expiresAt ?? 0));
    const drop = own.slice(0, own.length - maxPerUser).map(([id]) => id);
    await this.client.multi().srem(key, ...drop).del(...drop.map((id) => FAMILY_PREFIX + id)).exec();
  }

  async familiesOf(userId: string): Promise<string[]> {
    return this.client.smembers(USER_PREFIX + userId);
  }

  private document(family: string): RedisDocument {
    return new RedisDocument(this.client, FAMILY_PREFIX + family, (text) => this.expiryOf(parse(text)));
  }

  /** When SessionStore.prune would drop the family. */
  private expiryOf(record: FamilyRecord | undefined): number {
    if (!record) return Date.now();
    return record.revoked ? Math.min(record.expiresAt, (record.revokedAt ?? 0) + this.retentionMs) : record.expiresAt;
  }
}

function parse(text: string | undefined): FamilyRecord | undefined {
  if (text === undefined) return undefined;
  const parsed = FamilyRecord.safeParse(JSON.parse(text));
  return parsed.success ? parsed.data : undefined;
}
