/**
 * The OpenAI-compatible chat completions API (`/v1`), as far as Parley serves it. Request
 * objects are parsed with `z.object`, which drops keys it does not know (clients send many), so
 * nothing unknown (`__proto__` included) reaches the server; fields Parley cannot honour are
 * named here and refused with a 400, never silently ignored. Documented in docs/protocol.md.
 */
import * as z from 'zod/mini';

const TextPart = z.object({ type: z.literal('text'), text: z.string() });

/** Content: a string, or the array-of-parts form with text parts only. */
const Content = z.union([z.string(), z.array(z.object({ type: z.string(), text: z.optional(z.string()) }))]);

export const ChatMessage = z.object({
  role: z.string(),
  content: z.optional(z.nullable(Content)),
  name: z.optional(z.string()),
});
export type ChatMessage = z.infer<typeof ChatMessage>;

export const ResponseFormatParam = z.union([
  z.object({ type: z.literal('text') }),
  z.object({ type: z.literal('json_object') }),
  z.object({
    type: z.literal('json_schema'),
    json_schema: z.object({ name: z.optional(z.string()), schema: z.optional(z.record(z.string(), z.unknown())), strict: z.optional(z.nullable(z.boolean())) }),
  }),
]);

export const ChatCompletionRequest = z.object({
  model: z.string().check(z.minLength(1)),
  messages: z.array(ChatMessage),
  max_tokens: z.optional(z.nullable(z.int().check(z.gte(1)))),
  max_completion_tokens: z.optional(z.nullable(z.int().check(z.gte(1)))),
  temperature: z.optional(z.nullable(z.number().check(z.gte(0), z.lte(2)))),
  top_p: z.optional(z.nullable(z.number().check(z.gte(0), z.lte(1)))),
  stop: z.optional(z.nullable(z.union([z.string(), z.array(z.string()).check(z.maxLength(4))]))),
  seed: z.optional(z.nullable(z.int())),
  stream: z.optional(z.nullable(z.boolean())),
  stream_options: z.optional(z.nullable(z.object({ include_usage: z.optional(z.boolean()) }))),
  response_format: z.optional(z.nullable(ResponseFormatParam)),
  n: z.optional(z.nullable(z.int())),
  user: z.optional(z.string()),
  // Named so that they are refused, not dropped: Parley cannot honour them.
  tools: z.optional(z.unknown()),
  tool_choice: z.optional(z.unknown()),
  functions: z.optional(z.unknown()),
  function_call: z.optional(z.unknown()),
  logprobs: z.optional(z.nullable(z.boolean())),
  top_logprobs: z.optional(z.unknown()),
  audio: z.optional(z.unknown()),
  modalities: z.optional(z.unknown()),
  prediction: z.optional(z.unknown()),
});
export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequest>;

/** `content_filter`: Parley's content filter stopped the reply (what was sent before stays). */
export type FinishReason = 'stop' | 'length' | 'content_filter';

export interface CompletionUsage {
  readonly prompt_tokens: number;
  readonly completion_tokens: number;
  readonly total_tokens: number;
  /** `cached_tokens`: prompt tokens served from the KV cache rather than evaluated. */
  readonly prompt_tokens_details?: { readonly cached_tokens: number };
}

export interface ChatCompletion {
  readonly id: string;
  readonly object: 'chat.completion';
  readonly created: number;
  readonly model: string;
  readonly choices: ReadonlyArray<{ index: 0; message: { role: 'assistant'; content: string }; finish_reason: FinishReason; logprobs: null }>;
  readonly usage: CompletionUsage;
}

export interface ChatCompletionChunk {
  readonly id: string;
  readonly object: 'chat.completion.chunk';
  readonly created: number;
  readonly model: string;
  readonly choices: ReadonlyArray<{ index: 0; delta: { role?: 'assistant'; content?: string }; finish_reason: FinishReason | null; logprobs: null }>;
  readonly usage?: CompletionUsage | null;
}

/** A model in `GET /v1/models`: OpenAI's fields, and Parley's under `parley`. */
export interface OpenAiModel {
  readonly id: string;
  readonly object: 'model';
  readonly created: number;
  readonly owned_by: string;
  readonly parley: {
    readonly name: string;
    /** In memory now; an unloaded model loads on its first request, which waits for it. */
    readonly loaded: boolean;
    readonly context_size: number;
    /** Where it runs, while loaded: the device and the layers offloaded to a GPU. */
    readonly runtime?: { readonly device: string; readonly gpuLayers: number; readonly totalLayers: number; readonly summary: string };
  };
}

export interface ModelList {
  readonly object: 'list';
  readonly data: readonly OpenAiModel[];
}

/** OpenAI's error body. `type` is one of OpenAI's: invalid_request_error, authentication_error, permission_error, not_found_error, rate_limit_error, api_error. */
export interface OpenAiErrorBody {
  readonly error: { readonly message: string; readonly type: string; readonly param: string | null; readonly code: string | null };
}

export { TextPart };
