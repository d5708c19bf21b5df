import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { WebSocket } from 'ws';
import type { Principal } from '../../server/auth/Principal.js';
import { loadUws } from '../../server/transport/loadUws.js';
import { selectTransport } from '../../server/transport/selectTransport.js';
import { SendStatus, type Connection } from '../../server/transport/Connection.js';
import type { Transport } from '../../server/transport/Transport.js';
import { TRANSPORTS } from '../helpers/startTestServer.js';

const principal: Principal = { userId: 'u_test', name: 'test', role: 'user', expiresAt: Date.now() + 60_000 };
const HIGH_WATER = 64 * 1024;
const MAX_FRAME = 16 * 1024;

interface Harness {
  transport: Transport;
  port: number;
  connections: Connection[];
  messages: Array<string | null>;
  drains: number;
  closes: number[];
}

async function startHarness(name: 'uws' | 'ws'): Promise<Harness> {
  const harness = { connections: [], messages: [], drains: 0, closes: [] } as unknown as Harness;
  const transport = selectTransport(name).factory({
    wsPath: '/ws',
    http: async (request) => ({ status: 200, headers: { 'content-type': 'text/plain' }, body: `${request.method} ${request.path} ${request.body.length}` }),
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
    limits: { maxFrameBytes: MAX_FRAME, maxHttpBodyBytes: 1024, idleTimeoutSeconds: 60, highWaterBytes: HIGH_WATER },
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

test('native uWebSockets.js loads on this machine and auto selects it', () => {
  const uws = loadUws();
  assert.equal(uws.native, true, uws.native ? '' : uws.reason);
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
      socket.close();
    });

    test('a frame over maxFrameBytes closes the socket with 1009', async () => {
      const socket = await connect(harness.port);
      const closed = new Promise<number>((resolve) => socket.once('close', (code) => resolve(code)));
      socket.send('x'.repeat(MAX_FRAME + 1));
      const code = await closed;
      assert.equal(code, 1009);
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
}
