import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Reply } from '../../server/chat/Reply.js';
import { SseReplyWriter } from '../../server/http/SseReplyWriter.js';
import { ShuttingDownError } from '../../server/ParleyError.js';
import type { HttpStream } from '../../server/transport/Transport.js';

/** A stream that reports backpressure while `full`, and records every chunk it took. */
class FakeStream implements HttpStream {
  readonly chunks: string[] = [];
  full = false;
  closed = false;
  private drains: Array<() => void> = [];
  write(chunk: string): boolean {
    if (this.closed) return false;
    this.chunks.push(chunk);
    return !this.full;
  }
  end(): void {
    this.closed = true;
  }
  onDrain(listener: () => void): void {
    this.drains.push(listener);
  }
  onClose(): void {}
  drain(): void {
    this.full = false;
    for (const listener of this.drains) listener();
  }
  /** The data events, parsed (or the literal [DONE]). */
  get events(): unknown[] {
    return this.chunks.filter((chunk) => chunk.startsWith('data: ')).map((chunk) => {
      const data = chunk.slice(6).trim();
      return data === '[DONE]' ? data : (JSON.parse(data) as unknown);
    });
  }
}

const usage = { promptTokens: 3, completionTokens: 4 };
const finished = { kind: 'finished', stopReason: 'max_tokens', usage, timing: { firstTokenMs: 1, tokensPerSecond: 1 } } as const;
const contentOf = (event: unknown) => (event as { choices?: Array<{ delta?: { content?: string } }> }).choices?.[0]?.delta?.content;

function setup(includeUsage = true) {
  const writer = new SseReplyWriter({ id: 'chatcmpl-1', model: 'tiny', created: 1, includeUsage });
  const reply = new Reply('chatcmpl-1', 'u_a', 'x_1', 1 << 20);
  const stream = new FakeStream();
  reply.attach(writer);
  writer.accepted(reply);
  return { writer, reply, stream };
}

test('chunks: the role first, then the text, the finish reason, the usage, then [DONE], and the stream ends', () => {
  const { writer, reply, stream } = setup();
  writer.start(stream);
  reply.delta('Hello');
  reply.delta(' world');
  reply.finish(finished);
  const events = stream.events;
  assert.deepEqual((events[0] as { choices: Array<{ delta: unknown }> }).choices[0]?.delta, { role: 'assistant', content: '' });
  assert.deepEqual(events.slice(1, 3).map(contentOf), ['Hello', ' world']);
  assert.equal((events[3] as { choices: Array<{ finish_reason: string }> }).choices[0]?.finish_reason, 'length');
  assert.deepEqual((events[4] as { usage: unknown }).usage, { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 });
  assert.equal(events[5], '[DONE]');
  assert.equal(events.length, 6);
  assert.equal(stream.closed, true);
});

test('under backpressure the text waits in the reply and leaves merged after the drain, and the end comes after it', () => {
  const { writer, reply, stream } = setup(false);
  writer.start(stream);
  stream.full = true;
  reply.delta('a');
  const written = stream.chunks.length;
  reply.delta('b');
  reply.delta('c');
  reply.finish(finished);
  assert.equal(stream.chunks.length, written, 'nothing more is written while the stream is full');
  stream.drain();
  const events = stream.events;
  assert.deepEqual(events.map(contentOf).filter((content) => content !== undefined && content !== ''), ['a', 'bc']);
  assert.equal(events.at(-1), '[DONE]');
  assert.equal(events.filter((event) => event === '[DONE]').length, 1);
});

test('text and the end that came before the head was written go out when it is', () => {
  const { writer, reply, stream } = setup(false);
  reply.delta('early');
  reply.finish(finished);
  writer.start(stream);
  assert.deepEqual(stream.events.map(contentOf).slice(0, 2), ['', 'early']);
  assert.equal(stream.events.at(-1), '[DONE]');
});

test('a reply that fails ends with one error event in OpenAI\'s shape, then [DONE]', () => {
  const { writer, reply, stream } = setup();
  writer.start(stream);
  reply.delta('partial');
  reply.finish({ kind: 'failed', error: new ShuttingDownError(), usage });
  const events = stream.events;
  assert.deepEqual((events.at(-2) as { error: { code: string; type: string } }).error.code, 'shutting_down');
  assert.equal(events.at(-1), '[DONE]');
});

test('a closed stream gets nothing more', () => {
  const { writer, reply, stream } = setup();
  writer.start(stream);
  stream.closed = true;
  const written = stream.chunks.length;
  reply.delta('late');
  reply.finish(finished);
  assert.equal(stream.chunks.length, written);
});
