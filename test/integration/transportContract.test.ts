import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { randomBytes } from 'node:crypto';
import { connect as netConnect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { WebSocket } from 'ws';
import type { Principal } from '../../server/auth/Principal.js';
import { loadUws } from '../../server/transport/loadUws.js';
import { selectTransport } from '../../server/transport/selectTransport.js';
import { SendStatus, type Connection } from '../../server/transport/Connection.js';
import type { HttpResponse, HttpStream, HttpStreamResponse, Transport } from '../../server/transport/Transport.js';
import { TRANSPORTS } from '../helpers/startTestServer.js';

const principal: Principal = { userId: 'u_test', name: 'test', role: 'user', expiresAt: Date.now() + 60_000 };
const HIGH_WATER = 64 * 1024;
const MAX_FRAME = 16 * 1024;
const MAX_HTTP_BODY = 1024;
const MAX_API_BODY = 128 * 1024;
/** The transport's own headers; a response's header of the same name (cache-control here) wins. */
const RESPONSE_HEADERS = { 'x-content-type-options': 'nosniff', 'referrer-policy': 'no-referrer', 'cache-control': 'private' } as const;

/** A stream handed to the handler, with what the transport reported on it. */
interface StreamProbe {
  readonly stream: HttpStream;
  drains: number;
  /** `peerLeft` of every onClose call, in order: exactly one is expected. */
  readonly closes: boolean[];
}

interface Harness {
  transport: Transport;
  port: number;
  connections: Connection[];
  messages: Array<string | null>;
  drains: number;
  closes: number[];
  streams: StreamProbe[];
  /** Requests to /hold*: the handler answers only once the peer left (request.signal aborted). */
  held: number;
  heldAborted: number;
  /** The signal of the last plain (non-held, non-stream) request. */
  lastSignal?: AbortSignal;
}

async function startHarness(name: 'uws' | 'ws', maxHttpConnectionsPerIp = 64): Promise<Harness> {
  const harness = { connections: [], messages: [], drains: 0, closes: [], streams: [], held: 0, heldAborted: 0 } as unknown as Harness;
  const streamed = (): HttpStreamResponse => ({
    status: 200,
    headers: { 'content-type': 'text/event-stream', 'cache-control': 'no-store' },
    start: (stream) => {
      const probe: StreamProbe = { stream, drains: 0, closes: [] };
      stream.onDrain(() => probe.drains++);
      stream.onClose((peerLeft) => probe.closes.push(peerLeft));
      harness.streams.push(probe);
    },
  });
  const transport = selectTransport(name).factory({
    wsPath: '/ws',
    responseHeaders: RESPONSE_HEADERS,
    http: async (request): Promise<HttpResponse | HttpStreamResponse> => {
      if (request.path.startsWith('/hold')) {
        harness.held++;
        const signal = request.signal as AbortSignal;
        await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
        harness.heldAborted++;
        // Answered after the peer left: the transport must drop it without touching the dead response.
        if (request.path !== '/hold-stream') return { status: 200, headers: {}, body: 'too late' };
      } else if (request.path !== '/stream') {
        harness.lastSignal = request.signal;
        return { status: 200, headers: { 'content-type': 'text/plain' }, body: `${request.method} ${request.path} ${request.body.length}` };
      }
      return streamed();
    },
    upgrade: async (request) =>
      request.headers['sec-websocket-protocol']?.includes('let-me-in')
        ? { accept: true, principal, protocol: 'parley.v1' }
        : { accept: false, response: { status: 401, headers: { 'content-type': 'application/json' }, body: '{"code":"unauthorized"}' } },
    socket: {
      open: (connection) => harness.connections.push(connection),
      message: (connection, data) => {
        harness.messages.push(data);
        if (data === 'echo') connection.send('echo');
      },
      drain: () => harness.drains++,
      close: (_connection, code) => harness.closes.push(code),
    },
    limits: { maxFrameBytes: MAX_FRAME, maxHttpBodyBytes: MAX_HTTP_BODY, maxApiBodyBytes: MAX_API_BODY, maxUploadBytes: MAX_API_BODY, idleTimeoutSeconds: 60, highWaterBytes: HIGH_WATER, maxHttpConnectionsPerIp },
    onError: (error) => {
      throw error;
    },
  });
  const { port } = await transport.listen('127.0.0.1', 0);
  return Object.assign(harness, { transport, port });
}

function connect(port: number, protocols = ['parley.v1', 'let-me-in']): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(`ws://127.0.0.1:${port}/ws`, protocols);
    socket.once('open', () => resolve(socket));
    socket.once('error', reject);
  });
}

const until = async (condition: () => boolean, what: string) => {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
};

/** The next stream the handler is given (streams are handed over in request order). */
async function nextStream(harness: Harness, count: number): Promise<StreamProbe> {
  await until(() => harness.streams.length > count, 'the handler to get the stream');
  return harness.streams[count] as StreamProbe;
}

/** A raw HTTP/1.1 client: what arrives is kept byte for byte, so the head and the chunk framing can be checked. */
class RawClient {
  readonly socket: Socket;
  private data = Buffer.alloc(0);
  closed = false;

  constructor(port: number, path: string, localAddress?: string) {
    this.socket = netConnect({ port, host: '127.0.0.1', ...(localAddress ? { localAddress } : {}) });
    this.socket.on('data', (chunk: Buffer) => {
      this.data = Buffer.concat([this.data, chunk]);
    });
    this.socket.on('error', () => undefined);
    this.socket.on('close', () => {
      this.closed = true;
    });
    this.socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
  }

  get text(): string {
    return this.data.toString('latin1');
  }

  /** The head and the body so far, with the chunk framing removed; `ended` once the last (0) chunk arrived. */
  parse(): { status: number; headers: Record<string, string>; body: string; ended: boolean } {
    const text = this.text;
    const headEnd = text.indexOf('\r\n\r\n');
    if (headEnd < 0) return { status: 0, headers: {}, body: '', ended: false };
    const [statusLine = '', ...lines] = text.slice(0, headEnd).split('\r\n');
    const headers: Record<string, string> = {};
    for (const line of lines) {
      const colon = line.indexOf(':');
      headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
    }
    let body = '';
    let at = headEnd + 4;
    for (;;) {
      const lineEnd = text.indexOf('\r\n', at);
      if (lineEnd < 0) return { status: Number(statusLine.split(' ')[1]), headers, body, ended: false };
      const size = parseInt(text.slice(at, lineEnd), 16);
      if (size === 0) return { status: Number(statusLine.split(' ')[1]), headers, body, ended: true };
      if (text.length < lineEnd + 2 + size) return { status: Number(statusLine.split(' ')[1]), headers, body, ended: false };
      body += text.slice(lineEnd + 2, lineEnd + 2 + size);
      // uWS sends a chunk's closing CRLF in front of the next chunk: a chunk is whole before it.
      if (text.length < lineEnd + 4 + size) return { status: Number(statusLine.split(' ')[1]), headers, body, ended: false };
      assert.equal(text.slice(lineEnd + 2 + size, lineEnd + 4 + size), '\r\n', 'each chunk ends with CRLF');
      at = lineEnd + 4 + size;
    }
  }
}

/** POSTs `bytes` bytes and answers the status (node:http: it reads an early 413 like a browser would). */
function postStatus(port: number, path: string, bytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method: 'POST', agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end(Buffer.alloc(bytes, 'a'));
  });
}

/** A WebSocket opened by hand on a raw TCP socket, so a test can write any bytes after the 101. */
async function rawWebSocket(port: number): Promise<{ socket: Socket; readonly closed: boolean; closeFrameCode(): number | undefined }> {
  const socket = netConnect(port, '127.0.0.1');
  let data = Buffer.alloc(0);
  let closed = false;
  socket.on('data', (chunk: Buffer) => {
    data = Buffer.concat([data, chunk]);
  });
  socket.on('error', () => undefined);
  socket.on('close', () => {
    closed = true;
  });
  socket.write(
    [
      'GET /ws HTTP/1.1',
      'Host: 127.0.0.1',
      'Upgrade: websocket',
      'Connection: Upgrade',
      `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`,
      'Sec-WebSocket-Version: 13',
      'Sec-WebSocket-Protocol: parley.v1, let-me-in',
      '',
      '',
    ].join('\r\n'),
  );
  await until(() => data.includes('\r\n\r\n'), 'the 101');
  assert.match(data.toString('latin1'), /^HTTP\/1\.1 101 /);
  const headEnd = data.indexOf('\r\n\r\n') + 4;
  return {
    socket,
    get closed() {
      return closed;
    },
    /** The code of a close frame (opcode 8, unmasked, short) among the frames received after the 101. */
    closeFrameCode() {
      let at = headEnd;
      while (at + 2 <= data.length) {
        const opcode = (data[at] as number) & 0x0f;
        const length = (data[at + 1] as number) & 0x7f;
        if (length > 125) return undefined;
        if (opcode === 8 && length >= 2 && at + 4 <= data.length) return data.readUInt16BE(at + 2);
        at += 2 + length;
      }
      return undefined;
    },
  };
}

/** Status and headers of a GET from `localAddress`, read raw so a refusal that closes at once is seen whole. */
async function rawGet(port: number, path: string, localAddress: string): Promise<{ status: number; headers: Record<string, string>; closed: boolean }> {
  const client = new RawClient(port, path, localAddress);
  await until(() => client.closed || client.parse().status !== 0, 'the answer');
  const { status, headers } = client.parse();
  if (status === 429) await until(() => client.closed, 'the refused connection to close');
  const result = { status, headers, closed: client.closed };
  client.socket.destroy();
  return result;
}

test('native uWebSockets.js loads on this machine and auto selects it', { skip: !TRANSPORTS.includes('uws') && 'PARLEY_TEST_TRANSPORTS leaves uws out' }, () => {
  const uws = loadUws();
  assert.equal(uws.native, true, uws.native ? '' : uws.reason);
  // test:platforms names the version that must load (v20.57 in its Debian 13 root).
  const version = process.env.PARLEY_TEST_UWS_VERSION;
  if (version !== undefined) assert.equal(uws.version, version);
  assert.equal(selectTransport('auto').name, 'uws');
  assert.equal(selectTransport('ws').name, 'ws');
});

for (const name of TRANSPORTS) {
  describe(`transport contract: ${name}`, () => {
    let harness: Harness;
    before(async () => {
      harness = await startHarness(name);
    });
    after(async () => {
      await harness.transport.close(1001, 'bye');
    });

    test('HTTP requests reach the handler with method, path and body', async () => {
      const response = await fetch(`http://127.0.0.1:${harness.port}/some/path?x=1`, { method: 'POST', body: 'hello' });
      assert.equal(await response.text(), 'POST /some/path 5');
    });

    test('a refused upgrade answers with the handler’s status and body and opens no socket', async () => {
      const before = harness.connections.length;
      const status = await new Promise<number>((resolve) => {
        const socket = new WebSocket(`ws://127.0.0.1:${harness.port}/ws`, ['parley.v1']);
        socket.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
        socket.once('error', () => undefined);
      });
      assert.equal(status, 401);
      assert.equal(harness.connections.length, before);
    });

    test('text frames arrive as strings, binary frames as null, and sends reach the client', async () => {
      const socket = await connect(harness.port);
      const reply = new Promise<string>((resolve) => socket.once('message', (data) => resolve(String(data))));
      socket.send('echo');
      assert.equal(await reply, 'echo');
      socket.send(Buffer.from([1, 2]), { binary: true });
      await until(() => harness.messages.includes(null), 'binary frame');
      assert.equal(harness.connections.at(-1)?.principal.userId, 'u_test');
      assert.equal(harness.connections.at(-1)?.transport, name);
      // Closed in full before the next test opens its socket.
      const closed = new Promise((resolve) => socket.once('close', resolve));
      socket.close();
      await closed;
    });

    // uWS closes the TCP connection for these without a close frame, before any JavaScript runs
    // (uwsTransport.ts), so its peer sees 1006; Parley's close handler gets the reason on both.
    const peerSees = (code: number) => (name === 'uws' ? 1006 : code);

    for (const size of [MAX_FRAME + 1, 70_000, 1 << 20, 4 << 20]) {
      test(`a ${size}-byte frame closes the socket: 1009 (the peer sees ${name === 'uws' ? 1006 : 1009}) and is never delivered`, async () => {
        // This socket's own server side, not the previous test's (which may still be closing).
        const opened = harness.connections.length;
        const socket = await connect(harness.port);
        await until(() => harness.connections.length > opened && harness.connections.at(-1)?.isOpen === true, 'open');
        const messages = harness.messages.length;
        const closes = harness.closes.length;
        const closed = new Promise<number>((resolve) => socket.once('close', (code) => resolve(code)));
        socket.on('error', () => undefined);
        socket.send('x'.repeat(size));
        assert.equal(await closed, peerSees(1009));
        await until(() => harness.closes.length > closes, 'the close handler');
        assert.equal(harness.closes.at(-1), 1009);
        assert.equal(harness.messages.length, messages);
      });
    }

    test(`a text frame that is not UTF-8 closes the socket: 1007 (the peer sees ${name === 'uws' ? 1006 : 1007})`, async () => {
      const socket = await connect(harness.port);
      await until(() => harness.connections.at(-1)?.isOpen === true, 'open');
      const messages = harness.messages.length;
      const closes = harness.closes.length;
      const closed = new Promise<number>((resolve) => socket.once('close', (code) => resolve(code)));
      socket.on('error', () => undefined);
      socket.send(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), { binary: false });
      assert.equal(await closed, peerSees(1007));
      await until(() => harness.closes.length > closes, 'the close handler');
      assert.equal(harness.closes.at(-1), 1007);
      assert.equal(harness.messages.length, messages);
    });

    test('a frame header that declares more than maxFrameBytes ends the socket before any payload is sent', async () => {
      // Nothing past the header is ever written: the transport must decide on the declared
      // length, so neither buffers (nor reserves) more than maxFrameBytes for a message.
      const raw = await rawWebSocket(harness.port);
      const header = Buffer.alloc(14);
      header[0] = 0x81; // FIN, text
      header[1] = 0x80 | 127; // masked, 64-bit length
      header.writeBigUInt64BE(BigInt(1 << 30), 2);
      raw.socket.write(header); // the 4 mask bytes are zero
      await until(() => raw.closed || raw.closeFrameCode() !== undefined, 'the server to end the socket');
      // ws answers with a close frame first; uWS just closes the connection.
      if (name === 'ws') assert.equal(raw.closeFrameCode(), 1009);
      else assert.equal(raw.closed, true);
      raw.socket.destroy();
    });

    test('a reader that stops reading causes backpressure, then drain, and every byte arrives in order', async () => {
      const socket = await connect(harness.port);
      await until(() => harness.connections.length > 0 && harness.connections.at(-1)?.isOpen === true, 'open');
      const connection = harness.connections.at(-1) as Connection;
      const raw = (socket as unknown as { _socket: { pause(): void; resume(): void } })._socket;
      raw.pause();
      const received: number[] = [];
      socket.on('message', (data) => received.push(Number(String(data).slice(0, 8))));
      const chunk = 'y'.repeat(60 * 1024);
      let sent = 0;
      let status: SendStatus = SendStatus.sent;
      // Fill the kernel buffers until the transport itself reports backpressure (bounded loop).
      while (status === SendStatus.sent && sent < 2000) {
        status = connection.send(`${String(sent).padStart(8, '0')}${chunk}`);
        sent++;
        if (status === SendStatus.sent) await new Promise((resolve) => setImmediate(resolve));
      }
      assert.equal(status, SendStatus.backpressure);
      assert.ok(connection.bufferedAmount() > 0);
      const drainsBefore = harness.drains;
      raw.resume();
      await until(() => harness.drains > drainsBefore, 'drain');
      await until(() => received.length === sent, 'all frames');
      assert.deepEqual(received, Array.from({ length: sent }, (_, index) => index));
      socket.close();
    });

    test('a streamed response arrives chunk by chunk, in order, and ends', async () => {
      const count = harness.streams.length;
      // A POST with a body, like `POST /v1/chat/completions` with `stream: true`.
      const responsePromise = fetch(`http://127.0.0.1:${harness.port}/stream`, { method: 'POST', body: '{"stream":true}' });
      const probe = await nextStream(harness, count);
      // uWS completes the head with the first write: fetch resolves once a chunk is out.
      assert.equal(probe.stream.write('data: 0\n\n'), true);
      const response = await responsePromise;
      assert.equal(response.status, 200);
      assert.equal(response.headers.get('content-type'), 'text/event-stream');
      const reader = (response.body as ReadableStream<Uint8Array>).getReader();
      const decoder = new TextDecoder();
      let received = '';
      for (let index = 0; index < 5; index++) {
        const expected = `data: ${index}\n\n`;
        // Each chunk is read before the next is written: nothing waits for the end of the response.
        while (received.length < expected.length) {
          const { value, done } = await reader.read();
          assert.equal(done, false, `chunk ${index} arrives before the end`);
          received += decoder.decode(value, { stream: true });
        }
        assert.equal(received, expected);
        received = '';
        if (index < 4) assert.equal(probe.stream.write(`data: ${index + 1}\n\n`), true);
      }
      assert.equal(probe.stream.closed, false);
      probe.stream.end();
      assert.equal(probe.stream.closed, true);
      assert.equal((await reader.read()).done, true);
      assert.deepEqual(probe.closes, [false]);
      probe.stream.end();
      assert.equal(probe.stream.write('late'), false);
      assert.deepEqual(probe.closes, [false], 'onClose runs once');
    });

    test('a streamed response’s head carries the transport’s headers and is chunked, with no length', async () => {
      const count = harness.streams.length;
      const client = new RawClient(harness.port, '/stream');
      const probe = await nextStream(harness, count);
      probe.stream.write('data: a\n\n');
      probe.stream.write('data: b\n\n');
      probe.stream.end();
      await until(() => client.parse().ended, 'the last chunk');
      const { status, headers, body } = client.parse();
      assert.equal(status, 200);
      assert.equal(headers['x-content-type-options'], 'nosniff');
      assert.equal(headers['referrer-policy'], 'no-referrer');
      assert.equal(headers['cache-control'], 'no-store', 'the response’s own header wins');
      assert.equal(headers['content-type'], 'text/event-stream');
      assert.equal(headers['transfer-encoding'], 'chunked');
      assert.equal(headers['content-length'], undefined);
      assert.equal(headers.uwebsockets, undefined, 'no version mark');
      assert.equal(body, 'data: a\n\ndata: b\n\n');
      assert.deepEqual(probe.closes, [false]);
      client.socket.destroy();
    });

    test('a stream to a reader that stops reading reports backpressure, then drain, and every byte arrives in order', async () => {
      const count = harness.streams.length;
      const client = new RawClient(harness.port, '/stream');
      client.socket.pause();
      const probe = await nextStream(harness, count);
      // Under node's 16 KiB high-water mark, so `false` means the bytes stopped moving, not a big chunk.
      const line = (seq: number) => `${String(seq).padStart(8, '0')}${'y'.repeat(8 * 1024)}\n`;
      let seq = 0;
      let written = true;
      // Fill the kernel buffers until the transport itself reports backpressure (bounded loop).
      while (written && seq < 20_000) {
        written = probe.stream.write(line(seq++));
        if (written) await new Promise((resolve) => setImmediate(resolve));
      }
      assert.equal(written, false, 'write reports backpressure');
      // The writer's side of the contract: stop, and go on at onDrain until `total`, then end.
      const total = seq + 16;
      const pump = () => {
        while (seq < total) if (!probe.stream.write(line(seq++))) return;
        probe.stream.end();
      };
      probe.stream.onDrain(pump);
      client.socket.resume();
      await until(() => client.parse().ended, 'the whole body');
      assert.ok(probe.drains >= 1, 'onDrain fired');
      const lines = client.parse().body.split('\n').slice(0, -1);
      assert.equal(lines.length, total);
      lines.forEach((text, index) => assert.equal(text, line(index).slice(0, -1), `line ${index} intact and in order`));
      assert.deepEqual(probe.closes, [false]);
      client.socket.destroy();
    });

    test('a client that leaves mid-stream fires onClose(true) once, and later writes return false', async () => {
      const count = harness.streams.length;
      const client = new RawClient(harness.port, '/stream');
      const probe = await nextStream(harness, count);
      probe.stream.write('data: first\n\n');
      await until(() => client.parse().body === 'data: first\n\n', 'the first chunk');
      client.socket.destroy();
      await until(() => probe.closes.length > 0, 'onClose');
      assert.deepEqual(probe.closes, [true]);
      assert.equal(probe.stream.closed, true);
      assert.equal(probe.stream.write('data: late\n\n'), false);
      probe.stream.end();
      let late: boolean | undefined;
      probe.stream.onClose((peerLeft) => {
        late = peerLeft;
      });
      await until(() => late !== undefined, 'a listener added after the close');
      assert.equal(late, true);
      assert.deepEqual(probe.closes, [true], 'onClose ran once');
    });

    test('a peer that leaves before the response aborts request.signal; a stream answered then starts closed', async () => {
      for (const path of ['/hold', '/hold-stream']) {
        const held = harness.held;
        const aborted = harness.heldAborted;
        const streams = harness.streams.length;
        const client = new RawClient(harness.port, path);
        await until(() => harness.held > held, 'the handler to hold the request');
        client.socket.destroy();
        await until(() => harness.heldAborted > aborted, 'request.signal to abort');
        if (path === '/hold-stream') {
          const probe = await nextStream(harness, streams);
          assert.equal(probe.stream.closed, true);
          await until(() => probe.closes.length > 0, 'onClose');
          assert.deepEqual(probe.closes, [true]);
          assert.equal(probe.stream.write('data: x\n\n'), false);
        }
      }
      // A request answered in full does not abort its signal.
      const client = new RawClient(harness.port, '/plain');
      await until(() => client.text.endsWith('GET /plain 0'), 'the response');
      assert.equal(harness.lastSignal?.aborted, false);
      client.socket.destroy();
    });

    test('bodies under /v1/ may be up to maxApiBodyBytes; other paths keep maxHttpBodyBytes', async () => {
      const body = 100 * 1024;
      const accepted = await fetch(`http://127.0.0.1:${harness.port}/v1/x`, { method: 'POST', body: Buffer.alloc(body, 'a') });
      assert.equal(await accepted.text(), `POST /v1/x ${body}`);
      assert.equal(await postStatus(harness.port, '/v1x', body), 413);
      assert.equal(await postStatus(harness.port, '/api/x', body), 413);
      assert.equal(await postStatus(harness.port, '/api/x', MAX_HTTP_BODY), 200);
      assert.equal(await postStatus(harness.port, '/v1/x', MAX_API_BODY), 200);
      assert.equal(await postStatus(harness.port, '/v1/x', MAX_API_BODY + 1), 413);
    });

    test('close(code) reaches the client and the close handler runs once', async () => {
      const socket = await connect(harness.port);
      await until(() => harness.connections.at(-1)?.isOpen === true, 'open');
      const connection = harness.connections.at(-1) as Connection;
      const closesBefore = harness.closes.length;
      const closed = new Promise<number>((resolve) => socket.once('close', (code) => resolve(code)));
      connection.close(4000, 'test');
      assert.equal(await closed, 4000);
      await until(() => harness.closes.length === closesBefore + 1, 'close handler');
      assert.equal(connection.send('late'), SendStatus.closed);
      connection.close(4000, 'twice');
    });
  });

  test(`over ${name}, HTTP connections with a request in progress are capped per IP: the next gets 429 and is closed, other IPs are served`, async () => {
    const own = await startHarness(name, 3);
    try {
      // Three places taken from 127.0.0.1: two requests the handler holds and one open stream.
      const held = [new RawClient(own.port, '/hold'), new RawClient(own.port, '/hold')];
      await until(() => own.held === 2, 'the handler to hold both requests');
      const streamClient = new RawClient(own.port, '/stream');
      const probe = await nextStream(own, 0);
      probe.stream.write('data: 0\n\n');

      const refused = await rawGet(own.port, '/plain', '127.0.0.1');
      assert.equal(refused.status, 429);
      assert.equal(refused.headers['retry-after'], '5');
      assert.equal(refused.headers['x-content-type-options'], 'nosniff', 'the transport’s headers are on the refusal too');
      assert.equal(refused.closed, true, 'the refused connection is closed');
      assert.equal(own.held, 2, 'no handler ran for it');

      assert.equal((await rawGet(own.port, '/plain', '127.0.0.2')).status, 200, 'another address is served');

      // A peer that leaves gives its place back, and so does a stream that ends.
      (held[0] as RawClient).socket.destroy();
      await until(() => own.heldAborted === 1, 'the held request to be aborted');
      assert.equal((await rawGet(own.port, '/plain', '127.0.0.1')).status, 200);
      probe.stream.end();
      await until(() => streamClient.parse().ended, 'the stream to end');
      const again = new RawClient(own.port, '/hold');
      await until(() => own.held === 3, 'a held request in the freed place');
      assert.equal((await rawGet(own.port, '/plain', '127.0.0.1')).status, 200, 'the stream’s place was freed');
      for (const client of [...held, again, streamClient]) client.socket.destroy();
    } finally {
      await own.transport.close(1001, 'bye');
    }
  });

  test(`close() over ${name} ends an open stream: its onClose(true) runs and shutdown does not wait for it`, async () => {
    const own = await startHarness(name);
    const responsePromise = fetch(`http://127.0.0.1:${own.port}/stream`);
    const probe = await nextStream(own, 0);
    probe.stream.write('data: 0\n\n');
    const reader = ((await responsePromise).body as ReadableStream<Uint8Array>).getReader();
    assert.equal((await reader.read()).done, false);
    await own.transport.close(1001, 'bye');
    assert.deepEqual(probe.closes, [true]);
    assert.equal(probe.stream.write('data: late\n\n'), false);
    // The connection is cut, not ended: a client cannot take a cut answer for a whole one.
    await assert.rejects(async () => {
      for (;;) if ((await reader.read()).done) return;
    });
  });
}
