import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Polls `probe` every 20 ms until `done` accepts its value (a rejection counts as not yet);
 * rejects naming `what` and the last value if that takes longer than `timeoutMs`, a failure bound only.
 */
export async function eventually<T>(probe: () => Promise<T>, done: (value: T) => boolean, what: string, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let last: unknown;
    try {
      const value = await probe();
      if (done(value)) return value;
      last = value;
    } catch (error) {
      last = error instanceof Error ? error.message : error;
    }
    if (Date.now() > deadline) throw new Error(`${what} not met within ${timeoutMs} ms (last: ${JSON.stringify(last)})`);
    await sleep(20);
  }
}
