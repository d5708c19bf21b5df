import { performance } from 'node:perf_hooks';

/** One streamed completion as llama-server delivered it. Times are `performance.now()`. */
export interface ChatCompletionTrace {
  readonly sentAt: number;
  readonly firstAt: number | undefined;
  readonly endedAt: number;
  /** Generated tokens: the server's own count (`timings.predicted_n`) when it sends one, else the content chunks. */
  readonly tokens: number;
}

/**
 * One fresh chat completion from llama.cpp's llama-server at `origin`, streamed
 * (`/v1/chat/completions`, server-sent events) with its prompt cache off.
 */
export async function streamChatCompletion(
  origin: string,
  request: { readonly text: string; readonly maxTokens: number; readonly temperature: number; readonly signal?: AbortSignal },
): Promise<ChatCompletionTrace> {
  const sentAt = performance.now();
  const response = await fetch(new URL('/v1/chat/completions', origin), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      messages: [{ role: 'user', content: request.text }],
      max_tokens: request.maxTokens,
      temperature: request.temperature,
      stream: true,
      cache_prompt: false,
    }),
    signal: request.signal,
  });
  if (!response.ok || response.body === null) throw new Error(`llama-server answered ${response.status}`);
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
      const event = JSON.parse(line.slice('data: '.length)) as { choices?: Array<{ delta?: { content?: string } }>; timings?: { predicted_n?: number } };
      if (event.choices?.[0]?.delta?.content) {
        firstAt ??= performance.now();
        chunks++;
      }
      if (typeof event.timings?.predicted_n === 'number') predicted = event.timings.predicted_n;
    }
  }
  return { sentAt, firstAt, endedAt: performance.now(), tokens: predicted ?? chunks };
}
