import type { GenerateRequest, GenerateResult } from '../../server/engine/Engine.js';
import { DelegatingEngine } from './DelegatingEngine.js';

/** Markers in a message that make FaultyEngine fail that one generation. */
export const Fault = {
  /** Throws before any token. */
  beforeFirstToken: '[fail-before-first-token]',
  /** Fails after the real model streamed a few pieces. */
  midStream: '[fail-mid-stream]',
} as const;

/**
 * The real engine with injected faults: a message containing a Fault marker fails, every other
 * request goes to the real model untouched. Models an engine bug or a native failure.
 */
export class FaultyEngine extends DelegatingEngine {
  override async generate(request: GenerateRequest): Promise<GenerateResult> {
    if (request.text.includes(Fault.beforeFirstToken)) throw new Error('injected engine failure');
    if (!request.text.includes(Fault.midStream)) return this.real.generate(request);
    // Stop the real generation after a few pieces, then fail as a crashing engine would.
    const stop = new AbortController();
    const onCallerAbort = () => stop.abort(request.signal.reason);
    request.signal.addEventListener('abort', onCallerAbort, { once: true });
    let pieces = 0;
    try {
      await this.real.generate({
        ...request,
        signal: stop.signal,
        onText: (text) => {
          request.onText(text);
          if (++pieces === 3) stop.abort('fault');
        },
      });
    } finally {
      request.signal.removeEventListener('abort', onCallerAbort);
    }
    if (request.signal.aborted) return { text: '', stopReason: 'aborted', promptTokens: 0, completionTokens: pieces };
    throw new Error('injected engine failure mid-stream');
  }
}
