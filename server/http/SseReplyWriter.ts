import { ErrorCode } from '../../shared/errorCodes.js';
import type { ChatCompletionChunk, CompletionUsage, FinishReason } from '../../shared/openAiProtocol.js';
import type { AdmissionListener } from '../chat/ChatCore.js';
import type { Reply } from '../chat/Reply.js';
import type { ReplyOutcome } from '../chat/ReplyOutcome.js';
import type { HttpStream } from '../transport/Transport.js';
import { toOpenAiError } from './toOpenAiError.js';

/**
 * The OpenAI finish reason of a reply that has a completion: the model's own end or a stop
 * sequence is `stop`, any cap is `length`, a reply the content filter stopped `content_filter`
 * (OpenAI's convention: the text so far, then that finish reason, not an error).
 */
export function finishReasonOf(outcome: ReplyOutcome): FinishReason {
  if (outcome.kind !== 'finished') return 'content_filter';
  return outcome.stopReason === 'eos' ? 'stop' : 'length';
}

/** Whether the content filter stopped this reply: on /v1 it still ends as a completion, with finish_reason `content_filter`. */
export function isFilteredOutcome(outcome: ReplyOutcome | undefined): boolean {
  return outcome?.kind === 'failed' && outcome.error.code === ErrorCode.contentFiltered;
}

export function usageOf(outcome: ReplyOutcome): CompletionUsage {
  const { promptTokens, completionTokens, cachedPromptTokens } = outcome.usage;
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
    ...(cachedPromptTokens === undefined ? {} : { prompt_tokens_details: { cached_tokens: cachedPromptTokens } }),
  };
}

/**
 * Writes one reply as OpenAI chat-completion chunks over Server-Sent Events: a first chunk with
 * the role, one chunk per piece of text the writer takes, a last chunk with the finish reason,
 * the usage chunk when asked for, then `data: [DONE]`. A reply that fails ends with an error
 * chunk (OpenAI's error body), then `[DONE]`.
 *
 * Invariants: text stays in the Reply until the stream can take it, so while the reader is slow
 * the text merges there and the server buffers at most one chunk per drain; the end is written
 * exactly once, after all text; nothing is written once the stream is closed.
 */
export class SseReplyWriter implements AdmissionListener {
  private stream: HttpStream | undefined;
  private blocked = false;
  private reply: Reply | undefined;
  private done = false;

  constructor(
    private readonly meta: { readonly id: string; readonly model: string; readonly created: number; readonly includeUsage: boolean },
  ) {}

  /** The head is written: from here on the reply's events reach the client. */
  start(stream: HttpStream): void {
    this.stream = stream;
    stream.onDrain(() => {
      this.blocked = false;
      this.pump();
    });
    this.write(this.chunk({ role: 'assistant', content: '' }, null));
    this.pump();
  }

  accepted(reply: Reply): void {
    this.reply = reply;
  }

  queued(): void {
    // A comment line keeps proxies from timing the request out while it waits; clients ignore it.
    if (this.stream && !this.blocked) this.write(': queued\n\n');
  }

  textPending(reply: Reply): void {
    this.reply = reply;
    this.pump();
  }

  ended(reply: Reply): void {
    this.reply = reply;
    this.pump();
  }

  released(): void {}

  /** Writes what the reply has, as far as the stream takes it, and the end once all text is out. */
  private pump(): void {
    const { stream, reply } = this;
    if (!stream || !reply || this.done) return;
    while (!this.blocked && !stream.closed) {
      const taken = reply.takePending();
      if (!taken) break;
      this.write(this.chunk({ content: taken.text }, null));
    }
    if (this.blocked || stream.closed || !reply.outcome) return;
    this.done = true;
    const outcome = reply.outcome;
    if (outcome.kind === 'finished' || isFilteredOutcome(outcome)) {
      this.write(this.chunk({}, finishReasonOf(outcome)));
      if (this.meta.includeUsage) this.write(`data: ${JSON.stringify({ ...this.base(), choices: [], usage: usageOf(outcome) })}\n\n`);
    } else if (outcome.kind === 'failed') {
      this.write(`data: ${toOpenAiError(outcome.error).body as string}\n\n`);
    }
    this.write('data: [DONE]\n\n');
    stream.end();
  }

  private write(text: string): void {
    if (this.stream && !this.stream.write(text)) this.blocked = true;
  }

  private base(): Omit<ChatCompletionChunk, 'choices'> {
    return { id: this.meta.id, object: 'chat.completion.chunk', created: this.meta.created, model: this.meta.model };
  }

  private chunk(delta: ChatCompletionChunk['choices'][number]['delta'], finishReason: FinishReason | null): string {
    const chunk: ChatCompletionChunk = { ...this.base(), choices: [{ index: 0, delta, finish_reason: finishReason, logprobs: null }], ...(this.meta.includeUsage ? { usage: null } : {}) };
    return `data: ${JSON.stringify(chunk)}\n\n`;
  }
}
