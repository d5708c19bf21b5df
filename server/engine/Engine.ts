import type { ModelRuntime } from '../../shared/protocol.js';

/** What an engine tells about its model; the model's id is the pool's (ModelPool), not the engine's. */
export interface EngineInfo {
  /** Shown to people. */
  readonly name: string;
  /** True for Parley's generated demo model. */
  readonly demo: boolean;
  /** Tokens per sequence. */
  readonly contextSize: number;
  /** Where the model runs (device and offloaded layers); absent for engines that are not llama.cpp. */
  readonly runtime?: ModelRuntime;
}

export interface Turn {
  readonly role: 'user' | 'assistant';
  readonly text: string;
  /** This turn's tokens as the engine counted them before (PromptPlan.turnTokens); counted again when absent. */
  readonly tokens?: number;
}

/** Output the engine must produce, enforced while decoding (a grammar): any JSON value, or JSON fitting a schema. */
export type ResponseFormat = { readonly type: 'json' } | { readonly type: 'json_schema'; readonly schema: unknown };

/** Sampling and shape of one reply, beyond the engine's defaults. */
export interface GenerationOptions {
  /** Replaces the server's system prompt for this request. */
  readonly system?: string;
  /** Sampling temperature; the engine's own when absent. */
  readonly temperature?: number;
  readonly topP?: number;
  readonly seed?: number;
  /** The reply ends before the first of these (which is not part of it). */
  readonly stop?: readonly string[];
  readonly format?: ResponseFormat;
}

export const EngineStopReason = {
  endOfText: 'eos',
  maxTokens: 'max_tokens',
  contextFull: 'context_full',
  aborted: 'aborted',
} as const;
export type EngineStopReason = (typeof EngineStopReason)[keyof typeof EngineStopReason];

/** What fits in the context window for one request, decided before it is queued. */
export interface PromptPlan {
  /** History turns from this index on are sent to the model; older ones are left out. */
  readonly firstTurn: number;
  readonly promptTokens: number;
  /** The reply budget: the configured cap, or less when the context has less room. */
  readonly maxTokens: number;
  /** True when the budget is limited by the context rather than the configured cap. */
  readonly limitedByContext: boolean;
  /** Each history turn's token count, for the caller to keep with the turn so it is never counted twice. */
  readonly turnTokens: readonly number[];
}

export interface GenerateRequest {
  readonly slot: number;
  readonly conversationId: string;
  readonly history: readonly Turn[];
  readonly text: string;
  readonly maxTokens: number;
  readonly options?: GenerationOptions;
  readonly signal: AbortSignal;
  /** Called for each piece of decoded text, in order. */
  readonly onText: (text: string) => void;
}

export interface GenerateResult {
  readonly text: string;
  readonly stopReason: EngineStopReason;
  readonly promptTokens: number;
  readonly completionTokens: number;
  /** Prompt tokens taken from the sequence's KV cache instead of evaluated (a conversation's earlier turns); absent when the engine cannot tell. */
  readonly cachedPromptTokens?: number;
}

/**
 * A loaded model with a fixed number of slots (sequences of one context). Generations on
 * different slots run together in one batch. The caller (the Scheduler) guarantees a slot
 * is used by at most one generation at a time; an engine may serve a slot from whichever of its
 * sequences it likes (LlamaEngine picks the one holding the conversation's cache, if free).
 */
export interface Engine {
  readonly info: EngineInfo;
  readonly slots: number;
  /**
   * Chooses the newest history turns that fit beside the message and the reply budget, in one
   * pass over per-turn token counts. Throws ContextOverflowError when the message alone cannot fit.
   */
  planPrompt(history: readonly Turn[], text: string, maxTokens: number, system?: string): PromptPlan;
  /**
   * Optional: counts these texts with the engine's own tokenizer ahead of planPrompt, where
   * counting is a round trip (an upstream's /tokenize). Never throws; planning estimates without it.
   */
  prepareTokenCounts?(texts: readonly string[], signal?: AbortSignal): Promise<void>;
  /** Resolves when the engine can enforce `format`; rejects with a ParleyError (bad_request) when it cannot (an unsupported schema). */
  prepareFormat(format: ResponseFormat): Promise<void>;
  generate(request: GenerateRequest): Promise<GenerateResult>;
  dispose(): Promise<void>;
}
