import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** A request the fake upstream received: headers and the parsed JSON body. */
export interface UpstreamRequest {
  readonly path: string;
  readonly headers: IncomingMessage['headers'];
  readonly body: Record<string, unknown>;
}

/** A streamed reply the test writes piece by piece (mode `held`). */
export interface HeldReply {
  readonly request: UpstreamRequest;
  send(text: string): void;
  /** A finish chunk, the usage chunk and `[DONE]`, then the end of the response. */
  finish(): void;
  /** Drops the connection mid-reply, as a dying server would. */
  kill(): void;
  /** Resolves when the client closed the connection (an abort). */
  readonly closed: Promise<void>;
}

/**
 * A tiny OpenAI-compatible server under the test's control, for what a real engine node cannot be
 * made to do on cue: refuse (`refuse`: 503 to every completion), fail its health check (`health`),
 * or stream a reply the test writes and then kills (`held`). `stream` answers every completion at
 * once with `words`. Nothing here waits on time: the test drives each step.
 */
export class FakeUpstream {
  mode: 'stream' | 'refuse' | 'held' = 'stream';
  /** Status of GET /health. */
  health = 200;
  words: readonly string[] = ['Hello', ' from', ' the', ' fake'];
  readonly model = 'fake-model';
  readonly contextLength = 2048;
  readonly completions: UpstreamRequest[] = [];
  /** Completion requests it dropped without an answer (dropNext). */
  dropped = 0;
  /** The next this many completion requests get no answer: the connection is destroyed, as a server that closed a kept-alive connection does. */
  dropNext = 0;
  /** Its POST /tokenize: llama-server's dialect, vLLM's, or none (404). It counts one token per character. */
  tokenizer: 'llama' | 'vllm' | 'none' = 'none';
  /** Bodies of the /tokenize requests it answered or refused. */
  readonly tokenizeRequests: Array<Record<string, unknown>> = [];
  private readonly heldQueue: HeldReply[] = [];
  private readonly heldWaiters: Array<(reply: HeldReply) => void> = [];

  private constructor(
    private readonly server: Server,
    readonly url: string,
  ) {}

  static async start(): Promise<FakeUpstream> {
    const holder: { fake?: FakeUpstream } = {};
    const server = createServer((request, response) => void holder.fake?.handle(request, response));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    holder.fake = new FakeUpstream(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    return holder.fake;
  }

  /** The next held reply, once its request has arrived (rejects after `timeoutMs`, so a test that sent nothing fails rather than hangs). */
  nextHeld(timeoutMs = 20_000): Promise<HeldReply> {
    const ready = this.heldQueue.shift();
    if (ready) return Promise.resolve(ready);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const index = this.heldWaiters.indexOf(waiter);
        if (index >= 0) this.heldWaiters.splice(index, 1);
        reject(new Error(`no completion request reached the fake upstream within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = (reply: HeldReply) => {
        clearTimeout(timer);
        resolve(reply);
      };
      this.heldWaiters.push(waiter);
    });
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const path = request.url ?? '/';
    if (request.method === 'GET' && path === '/health') {
      response.writeHead(this.health, { 'content-type': 'application/json' }).end(JSON.stringify({ status: this.health === 200 ? 'ok' : 'error' }));
      return;
    }
    if (request.method === 'GET' && path === '/v1/models') {
      if (this.health !== 200) {
        response.writeHead(503).end();
        return;
      }
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ object: 'list', data: [{ id: this.model, object: 'model', context_length: this.contextLength }] }));
      return;
    }
    if (request.method === 'POST' && path === '/tokenize') {
      const chunks: Buffer[] = [];
      for await (const chunk of request) chunks.push(chunk as Buffer);
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
      this.tokenizeRequests.push(body);
      // Each dialect refuses the other's body, as the real servers do.
      if (this.tokenizer === 'llama' && typeof body.content === 'string') {
        response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ tokens: [...body.content].map((_, index) => index) }));
      } else if (this.tokenizer === 'vllm' && typeof body.prompt === 'string') {
        response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ count: [...body.prompt].length, max_model_len: this.contextLength, tokens: [] }));
      } else {
        response.writeHead(this.tokenizer === 'none' ? 404 : 400).end();
      }
      return;
    }
    if (request.method !== 'POST' || path !== '/v1/chat/completions') {
      response.writeHead(404).end();
      return;
    }
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    if (this.dropNext > 0) {
      this.dropNext--;
      this.dropped++;
      request.socket.destroy();
      return;
    }
    const received: UpstreamRequest = { path, headers: request.headers, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown> };
    this.completions.push(received);
    if (this.mode === 'refuse') {
      response.writeHead(503, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { message: 'overloaded', type: 'api_error' } }));
      return;
    }
    response.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' });
    response.flushHeaders();
    let pieces = 0;
    const send = (text: string) => {
      pieces++;
      response.write(`data: ${JSON.stringify({ object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: text }, finish_reason: null }] })}\n\n`);
    };
    const finish = () => {
      response.write(`data: ${JSON.stringify({ object: 'chat.completion.chunk', choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] })}\n\n`);
      response.write(`data: ${JSON.stringify({ object: 'chat.completion.chunk', choices: [], usage: { prompt_tokens: 7, completion_tokens: pieces, total_tokens: 7 + pieces } })}\n\n`);
      response.end('data: [DONE]\n\n');
    };
    if (this.mode === 'stream') {
      for (const word of this.words) send(word);
      finish();
      return;
    }
    const closed = new Promise<void>((resolve) => response.on('close', () => resolve()));
    const held: HeldReply = { request: received, send, finish, kill: () => response.socket?.destroy(), closed };
    const waiter = this.heldWaiters.shift();
    if (waiter) waiter(held);
    else this.heldQueue.push(held);
  }
}
