/**
 * Caps how many lines of one kind reach the log: at most `limit` per `windowMs` (a fixed window
 * per key). Lines past the cap are counted, not written; the first line written in a later window
 * carries that count, so nothing is hidden, only folded. For events anyone can cause at will
 * (a refused Host, a /metrics probe without credentials), so a flood of them cannot flood the log.
 */
export class LogThrottle {
  private readonly windows = new Map<string, { start: number; written: number; suppressed: number }>();
  private readonly now: () => number;

  constructor(private readonly options: { readonly limit: number; readonly windowMs: number; readonly now?: () => number }) {
    this.now = options.now ?? Date.now;
  }

  /**
   * Whether a line of this kind may be written now. When it may, `suppressed` is how many lines of
   * the kind were left out since the last one written (add it to the line).
   */
  admit(key: string): { readonly ok: true; readonly suppressed: number } | { readonly ok: false } {
    const now = this.now();
    let window = this.windows.get(key);
    if (window === undefined || now - window.start >= this.options.windowMs) {
      window = { start: now, written: 0, suppressed: window?.suppressed ?? 0 };
      this.windows.set(key, window);
    }
    if (window.written >= this.options.limit) {
      window.suppressed++;
      return { ok: false };
    }
    window.written++;
    const suppressed = window.suppressed;
    window.suppressed = 0;
    return { ok: true, suppressed };
  }
}

/** Lines per kind and minute for events a client can cause at will. */
export const REFUSAL_LOG_LIMIT = { limit: 10, windowMs: 60_000 } as const;
