/**
 * (address, account) pairs that signed in with the right password, each for a while: such an
 * address is not slowed when the account is (see Limiters.passwordAttempt). In this process
 * (MemoryRecognisedPairs) or across gateways (RedisRecognisedPairs).
 */
export interface RecognisedPairs {
  /** Whether the pair signed in within its window. Rejects when it cannot be read (the caller refuses: fail closed). */
  has(pair: string): Promise<boolean>;
  /** The pair signed in now: it counts for `ttlMs`. Rejects when it cannot be written. */
  add(pair: string, ttlMs: number): Promise<void>;
}

/** Pairs kept at most this many in one process (oldest forgotten first). */
const MAX_PAIRS = 10_000;

export class MemoryRecognisedPairs implements RecognisedPairs {
  /** Until when each pair counts (epoch ms), oldest addition first. */
  private readonly until = new Map<string, number>();

  constructor(private readonly now: () => number = Date.now) {}

  has(pair: string): Promise<boolean> {
    const until = this.until.get(pair);
    if (until === undefined) return Promise.resolve(false);
    if (until > this.now()) return Promise.resolve(true);
    this.until.delete(pair);
    return Promise.resolve(false);
  }

  add(pair: string, ttlMs: number): Promise<void> {
    this.until.delete(pair);
    this.until.set(pair, this.now() + ttlMs);
    for (const oldest of this.until.keys()) {
      if (this.until.size <= MAX_PAIRS) break;
      this.until.delete(oldest);
    }
    return Promise.resolve();
  }
}
