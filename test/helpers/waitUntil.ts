import { setTimeout as sleep } from 'node:timers/promises';

/** Polls `condition` every 10 ms; rejects naming `what` if it is still false after `timeoutMs`. */
export async function waitUntil(condition: () => boolean, timeoutMs = 20_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`${what} not met within ${timeoutMs} ms`);
    await sleep(10);
  }
}
