import { performance } from 'node:perf_hooks';

/** One streamed completion as the server delivered it. Times are `performance.now()`. */
export interface ChatCompletionTrace {
  readonly sentAt: number;
  readonly firstAt: number | undefined;
  readonly endedAt: number;
  /** Generated tokens: the server's own count (`usage.completion_tokens`, or llama-server's `timings.predicted_n`) when it sends one, else the content chunks. */
  readonly tokens: number;
}

/**
 * One fresh chat completion from an OpenAI-compatible server at `origin` (llama.cpp's
 * llama-server, or Parley's /v1 with a key and a model id), streamed (`/v1/chat/completions`,
 * server-sent events) with the usage asked for and llama-server's prompt cache off. Rejects
 * when the answer is not 200 or the stream ends in an error chunk.
 */
export async function streamChatCompletion(
  origin: string,
  request: {
    readonly text: string; readonly maxTokens: number; readonly temperature: number; readonly signal?: AbortSignal; readonly apiKey?: string; readonly model?: string;
    /** llama-server's prompt cache (its default is on); off unless asked for, so every request is fresh. */
    readonly cachePrompt?: boolean;
  },
): Promise<ChatCompletionTrace> {
  const sentAt = performance.now();
  const response = await fetch(new URL('/v1/chat/completions', origin), {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(request.apiKey === undefined ? {} : { authorization: `Bearer ${request.apiKey}` }) },
    body: JSON.stringify({
      ...(request.model === undefined ? {} : { model: request.model }),
      stream_options: { include_usage: true },
      messages: [{ role: 'user', content: request.text }],
      max_tokens: request.maxTokens,
      temperature: request.temperature,
      stream: true,
      cache_prompt: request.cachePrompt ?? false,
    }),
    signal: request.signal,
  });
  if (!response.ok || response.body === null) throw new Error(`the server answered ${response.status}`);
  let firstAt: number | undefined;
  let chunks = 0;
  let predicted: number | undefined;
  let buffered = '';
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  for (let read = await reader.read(); !read.done; read = await reader.read()) {
    buffered += read.value;
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    for (const line of lines) {
      if (!line.startsWith('data: ') || line === 'data: [DONE]') continue;
      const event = JSON.parse(line.slice('data: '.length)) as { choices?: Array<{ delta?: { content?: string } }>; timings?: { predicted_n?: number }; usage?: { completion_tokens?: number } | null; error?: { message?: string } };
      // A reply that fails after the 200 ends with an error chunk (OpenAI's error body): not a reply to count.
      if (event.error !== undefined) throw new Error(`the stream ended in an error: ${event.error.message ?? JSON.stringify(event.error)}`);
      if (event.choices?.[0]?.delta?.content) {
        firstAt ??= performance.now();
        chunks++;
      }
      if (typeof event.timings?.predicted_n === 'number') predicted = event.timings.predicted_n;
      if (typeof event.usage?.completion_tokens === 'number') predicted = event.usage.completion_tokens;
    }
  }
  return { sentAt, firstAt, endedAt: performance.now(), tokens: predicted ?? chunks };
}
