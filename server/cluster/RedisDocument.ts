import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { DocumentBusyError, type DocumentChange, type StateDocument } from '../auth/StateDocument.js';

/** Compare-and-set rounds lost in a row before an update gives up (each loss means another gateway won). */
const MAX_ATTEMPTS = 20;
/** Up to this many ms per lost round, at random, before the next: gateways that collided spread out. */
const BACKOFF_MS = 5;

/**
 * Writes ARGV[2] as the text and bumps the version, only if the version is still ARGV[1]
 * (the one the change was computed from); with ARGV[3], the key expires at that epoch ms.
 * Returns 1 when written, 0 when another writer won.
 */
const CAS_SCRIPT = `
local version = redis.call('HGET', KEYS[1], 'version') or '0'
if version ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'version', tostring(tonumber(version) + 1), 'text', ARGV[2])
if ARGV[3] then redis.call('PEXPIREAT', KEYS[1], ARGV[3]) end
return 1`;

/**
 * A document in one Redis hash (`version`, `text`), shared by every gateway. Invariants:
 * - `update` is optimistic: it reads text and version together, computes the change, and
 *   writes only if the version is unchanged (CAS_SCRIPT, atomic in Redis); otherwise it runs the
 *   change again on the newer text. A WATCH would not do: the command connection is shared.
 *   Updates from this process go one at a time, so only other gateways can make one lose.
 * - `read` fetches the text only when the version moved since the last read.
 * Redis must persist (appendonly yes) for this to outlive a Redis restart.
 */
export class RedisDocument implements StateDocument {
  private cache: { version: string; text: string } | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly client: Redis,
    readonly name: string,
    /** When the key may go (epoch ms), given the text written; it is kept for ever when absent. */
    private readonly expireAt?: (text: string) => number,
  ) {}

  async read(): Promise<string | undefined> {
    const version = await this.client.hget(this.name, 'version');
    if (version === null) return undefined;
    if (this.cache?.version === version) return this.cache.text;
    return (await this.fetch())?.text;
  }

  update<T>(change: (current: string | undefined) => DocumentChange<T>): Promise<T> {
    const run = this.queue.then(() => this.compareAndSet(change));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async compareAndSet<T>(change: (current: string | undefined) => DocumentChange<T>): Promise<T> {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      if (attempt > 0) await sleep(Math.random() * BACKOFF_MS);
      const current = await this.fetch();
      const outcome = change(current?.text);
      if (outcome.text === undefined) return outcome.result;
      const expiry = this.expireAt === undefined ? [] : [String(Math.max(1, Math.ceil(this.expireAt(outcome.text))))];
      const written = await this.client.eval(CAS_SCRIPT, 1, this.name, current?.version ?? '0', outcome.text, ...expiry);
      if (written === 1) return outcome.result;
    }
    throw new DocumentBusyError(`${this.name} kept changing under ${MAX_ATTEMPTS} updates in a row; try again.`);
  }

  /**
   * Copies `local`'s text in if this document was never written, so an installation that turns
   * on `--redis` keeps its accounts and keys. Returns whether it did.
   */
  async seedFrom(local: StateDocument): Promise<boolean> {
    const text = await local.read();
    if (text === undefined) return false;
    return this.update((current) => (current === undefined ? { text, result: true } : { result: false }));
  }

  /** Text and version, read together. */
  private async fetch(): Promise<{ version: string; text: string } | undefined> {
    const [version, text] = await this.client.hmget(this.name, 'version', 'text');
    if (version === null || version === undefined || text === null || text === undefined) return undefined;
    this.cache = { version, text };
    return this.cache;
  }
}
