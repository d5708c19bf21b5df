import type { DocumentSource, StopReason } from '../../shared/protocol.js';
import type { ParleyError } from '../ParleyError.js';

export interface ReplyUsage {
  readonly promptTokens: number;
  readonly completionTokens: number;
  /** Of the prompt tokens, those served from the KV cache (a conversation's earlier turns), when the engine tells. */
  readonly cachedPromptTokens?: number;
}

export interface ReplyTiming {
  /** Milliseconds from leaving the queue to the first text. */
  readonly firstTokenMs: number;
  /** Completion tokens per second after the first token. */
  readonly tokensPerSecond: number;
}

/**
 * How an admitted request ended, in no surface's words: each surface maps it to its own terminal
 * frame or response. Every admitted request gets exactly one.
 */
export type ReplyOutcome =
  | {
      readonly kind: 'finished';
      readonly stopReason: StopReason;
      readonly usage: ReplyUsage;
      readonly timing: ReplyTiming;
      /** The document passages its prompt quoted, when the conversation has documents. */
      readonly sources?: readonly DocumentSource[];
    }
  | { readonly kind: 'cancelled'; readonly usage: ReplyUsage }
  | { readonly kind: 'failed'; readonly error: ParleyError; readonly usage: ReplyUsage };
