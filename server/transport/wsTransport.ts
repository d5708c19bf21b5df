import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type RequestListener, type Server, type ServerOptions, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { CloseCode } from '../../shared/errorCodes.js';
import { toHttpResponse } from '../http/toHttpResponse.js';
import { BadRequestError, NotFoundError } from '../ParleyError.js';
import type { Principal } from '../auth/Principal.js';
import { SendStatus, TransportName, type Connection } from './Connection.js';
import { isStreamResponse, type HttpResponse, type Transport, type TransportOptions } from './Transport.js';
import { httpStatusLine } from './httpStatusLine.js';
import { clientAddress, forwardedHttps, trustNoProxy } from './clientAddress.js';
import { internalError } from './internalError.js';
import { BodySpool } from './BodySpool.js';
import { isUpload, maxBodyBytes } from './maxBodyBytes.js';
import { NodeHttpStream } from './NodeHttpStream.js';
import { payloadTooLarge, uploadTooLarge } from './payloadTooLarge.js';
import { streamHeaders } from './streamHeaders.js';
import { HttpConnectionCap } from './HttpConnectionCap.js';
import { tooManyConnections } from './tooManyConnections.js';

/** The close codes `ws` sends for the frames Parley's limits refuse, by its error code. */
const REFUSAL_CLOSE_CODES: Readonly<Record<string, number>> = {
  WS_ERR_UNSUPPORTED_MESSAGE_LENGTH: CloseCode.messageTooBig,
  WS_ERR_INVALID_UTF8: CloseCode.invalidPayload,
};

class WsConnection implements Connection {
  readonly transport = TransportName.ws;
  isOpen = true;
  /** Bytes passed to ws.send whose write callback has not fired yet. */
  private pending = 0;
  private overHighWater = false;

  constructor(
    readonly id: string,
    readonly socket: WebSocket,
    readonly principal: Principal,
    readonly remoteAddress: string,
    private readonly highWaterBytes: number,
    private readonly onDrain: () => void,
  ) {}

  send(text: string): SendStatus {
    if (!this.isOpen) return SendStatus.closed;
    const bytes = Buffer.byteLength(text);
    this.pending += bytes;
    this.socket.send(text, { binary: false, compress: false }, () => {
      this.pending -= bytes;
      if (this.overHighWater && this.pending < this.highWaterBytes) {
        this.overHighWater = false;
        if (this.isOpen) this.onDrain();
      }
    });
    if (this.pending >= this.highWaterBytes) {
      this.overHighWater = true;
      return SendStatus.backpressure;
    }
    return SendStatus.sent;
  }

  bufferedAmount(): number {
    return this.isOpen ? this.pending : 0;
  }

  close(code: number, reason: string): void {
    if (!this.isOpen) return;
    this.isOpen = false;
    this.socket.close(code, reason);
  }
}

/** HTTP on node:http (node:https under TLS) and WebSocket on `ws`: the fallback when native uWS is unavailable. */
export function wsTransport() {
  return (options: TransportOptions): Transport => {
    const { limits } = options;
    const trustProxy = options.trustProxy ?? trustNoProxy;
    let nextId = 0;
    const open = new Set<WsConnection>();
    const streams = new Set<NodeHttpStream>();
    const alive = new WeakMap<WebSocket, boolean>();
    const httpCap = new HttpConnectionCap(limits.maxHttpConnectionsPerIp);
    const extraHeaders = options.responseHeaders ?? {};
    const withExtra = (response: HttpResponse): HttpResponse => ({ ...response, headers: { ...extraHeaders, ...response.headers } });

    const wss = new WebSocketServer({
      noServer: true,
      maxPayload: limits.maxFrameBytes,
      perMessageDeflate: false,
      clientTracking: false,
      // The protocol was already checked in the upgrade handler; echo only parley.v1, never a token.
      handleProtocols: (protocols) => (protocols.has('parley.v1') ? 'parley.v1' : false),
    });
    // ws refuses a malformed handshake (no key, bad version, an unparsable protocol list; e.g.
    // a key pushed past Node's 2,000-header cap) with its own text/html 400. Answering here
    // gives it the same JSON body and security headers as every other response.
    wss.on('wsClientError', (error: Error, socket: Duplex) => {
      const status = error.message === 'Invalid HTTP method' ? 405 : 400;
      rejectUpgrade(socket, withExtra(toHttpResponse(new BadRequestError(`${error.message}.`, status))));
    });

    const onRequest: RequestListener = (req, res) => {
      const headers = flattenHeaders(req);
      const peerAddress = req.socket.remoteAddress ?? '';
      const remoteAddress = clientAddress(peerAddress, headers, trustProxy);
      const release = httpCap.admit(remoteAddress);
      if (!release) {
        // The body (if any) is never read: the connection closes after this answer.
        writeResponse(res, withExtra(tooManyConnections()), true);
        return;
      }
      let stream: NodeHttpStream | undefined;
      // `close` also follows a response that finished; only an unfinished one means the peer left.
      const peer = new AbortController();
      res.on('close', () => {
        // Written, streamed to its end or cut: the connection's place is free either way.
        release();
        if (!res.writableFinished) peer.abort();
      });
      const serve = async () => {
        // Inside the promise: an odd request target can make URL throw, and that must become a 500.
        const url = new URL(req.url ?? '/', 'http://x');
        const method = (req.method ?? 'GET').toUpperCase();
        const limit = maxBodyBytes(url.pathname, limits, method);
        let body: Buffer = Buffer.alloc(0);
        let bodyFile: string | undefined;
        if (isUpload(method, url.pathname)) {
          // An upload goes to a temporary file as it arrives; removed once answered, whatever happened.
          const spool = new BodySpool();
          res.on('close', () => void spool.discard().catch((error: unknown) => options.onError(error, 'upload spool')));
          bodyFile = await spoolBody(req, limit, spool);
          if (bodyFile === undefined) return writeResponse(res, withExtra(uploadTooLarge(limit)), true);
        } else {
          const read = await readBody(req, limit);
          if (read === undefined) return writeResponse(res, withExtra(payloadTooLarge()), true);
          body = read;
        }
        const response = await options.http({
          method,
          path: url.pathname,
          query: url.search.slice(1),
          headers,
          remoteAddress,
          forwardedHttps: forwardedHttps(peerAddress, headers, trustProxy),
          body,
          ...(bodyFile === undefined ? {} : { bodyFile }),
          signal: peer.signal,
        });
        if (!isStreamResponse(response)) return writeResponse(res, withExtra(response));
        const opened = new NodeHttpStream(res, options.onError);
        stream = opened;
        opened.startResponse(response, streamHeaders(extraHeaders, response.headers), streams, res.destroyed);
      };
      serve().catch((error: unknown) => {
        options.onError(error, 'http');
        // Once a stream's head may be out, a 500 cannot follow it: cut the connection instead.
        if (stream) stream.abort();
        else if (!res.headersSent) writeResponse(res, withExtra(internalError()));
      });
    };
    // Node's defaults: at most 2,000 headers are kept (the rest are dropped, the case of
    // CVE-2024-37890, fixed in ws 8.17.1) and a header section over maxHeaderSize is refused.
    const serverOptions: ServerOptions = { maxHeaderSize: 16 * 1024 };
    const server: Server = options.tls
      ? createHttpsServer({ ...serverOptions, cert: readFileSync(options.tls.certFile), key: readFileSync(options.tls.keyFile) }, onRequest)
      : createServer(serverOptions, onRequest);
    server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => {
      if (!socket.writable) {
        socket.destroy();
        return;
      }
      const tooLarge = error.code === 'HPE_HEADER_OVERFLOW';
      const message = tooLarge ? 'Request headers are too large.' : 'Malformed request.';
      rejectUpgrade(socket, withExtra(toHttpResponse(new BadRequestError(message, tooLarge ? 431 : 400))));
    });

    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      socket.on('error', () => socket.destroy());
      const url = new URL(req.url ?? '/', 'http://x');
      if (url.pathname !== options.wsPath) {
        rejectUpgrade(socket, withExtra(toHttpResponse(new NotFoundError())));
        return;
      }
      const headers = flattenHeaders(req);
      const remoteAddress = clientAddress(req.socket.remoteAddress ?? '', headers, trustProxy);
      options
        .upgrade({ path: url.pathname, headers, remoteAddress })
        .then((decision) => {
          if (socket.destroyed) return;
          if (!decision.accept) {
            rejectUpgrade(socket, withExtra(decision.response));
            return;
          }
          wss.handleUpgrade(req, socket, head, (ws) => {
            const connection: WsConnection = new WsConnection(
              `w${++nextId}`,
              ws,
              decision.principal,
              remoteAddress,
              limits.highWaterBytes,
              () => options.socket.drain(connection),
            );
            open.add(connection);
            alive.set(ws, true);
            ws.on('pong', () => alive.set(ws, true));
            ws.on('message', (data, isBinary) => {
              alive.set(ws, true);
              options.socket.message(connection, isBinary ? null : rawToString(data));
            });
            // `ws` emits 'error' for a frame it refuses, sends its close frame and ends the socket;
            // 'close' then reports 1006 (no close frame came back), so keep the code it sent.
            let refusedWith: number | undefined;
            ws.on('error', (error: Error & { code?: string }) => {
              refusedWith = error.code === undefined ? undefined : REFUSAL_CLOSE_CODES[error.code];
            });
            ws.on('close', (code) => {
              connection.isOpen = false;
              open.delete(connection);
              options.socket.close(connection, refusedWith ?? code);
            });
            options.socket.open(connection);
          });
        })
        .catch((error: unknown) => {
          options.onError(error, 'upgrade');
          if (!socket.destroyed) rejectUpgrade(socket, withExtra(internalError()));
        });
    });

    // Same contract as uWS idleTimeout: a socket silent for a whole period, and deaf to the
    // ping sent halfway through it, is terminated.
    const heartbeat = setInterval(
      () => {
        for (const connection of open) {
          const ws = connection.socket;
          if (!alive.get(ws)) {
            ws.terminate();
            continue;
          }
          alive.set(ws, false);
          ws.ping();
        }
      },
      (limits.idleTimeoutSeconds * 1000) / 2,
    );
    heartbeat.unref();

    return {
      name: TransportName.ws,
      listen(host, port) {
        return new Promise((resolve, reject) => {
          server.once('error', reject);
          server.listen(port, host, () => {
            server.off('error', reject);
            const address = server.address();
            resolve({ port: typeof address === 'object' && address ? address.port : port });
          });
        });
      },
      async close(code, reason) {
        clearInterval(heartbeat);
        for (const connection of [...open]) connection.close(code, reason);
        // server.close waits for every connection; an open stream would hold it forever. Its onClose(true) runs.
        for (const stream of [...streams]) stream.abort();
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeIdleConnections();
        });
      },
    };
  };
}

function flattenHeaders(req: IncomingMessage): Record<string, string> {
  const headers: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const [key, value] of Object.entries(req.headers)) {
    if (value === undefined) continue;
    headers[key] = Array.isArray(value) ? value.join(', ') : value;
  }
  return headers;
}

function rawToString(data: WebSocket.RawData): string {
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  if (data instanceof ArrayBuffer) return Buffer.from(data).toString('utf8');
  return data.toString('utf8');
}

/**
 * Hands the body to `onChunk` as it arrives. Resolves true at its end, or false as soon as it
 * passes `limit` bytes: from then on the rest is drained unread and nothing more is handed on.
 */
function receiveBody(req: IncomingMessage, limit: number, onChunk: (chunk: Buffer) => void): Promise<boolean> {
  return new Promise((resolve, reject) => {
    let size = 0;
    let over = false;
    req.on('data', (chunk: Buffer) => {
      if (over) return;
      size += chunk.length;
      if (size > limit) {
        over = true;
        resolve(false);
        req.resume();
        return;
      }
      onChunk(chunk);
    });
    req.on('end', () => {
      if (!over) resolve(true);
    });
    req.on('error', reject);
  });
}

async function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  return (await receiveBody(req, limit, (chunk) => chunks.push(chunk))) ? Buffer.concat(chunks) : undefined;
}

/** Writes the body into `spool` as it arrives; resolves with the file, or undefined once it passes `limit` (the rest is not read). */
async function spoolBody(req: IncomingMessage, limit: number, spool: BodySpool): Promise<string | undefined> {
  if (await receiveBody(req, limit, (chunk) => spool.write(chunk))) return spool.finish();
  void spool.discard();
  return undefined;
}

function writeResponse(res: ServerResponse, response: HttpResponse, closeConnection = false): void {
  const body = typeof response.body === 'string' ? Buffer.from(response.body) : response.body;
  res.statusCode = response.status;
  for (const [name, value] of Object.entries(response.headers)) res.setHeader(name, value);
  res.setHeader('content-length', body.length);
  if (closeConnection) res.setHeader('connection', 'close');
  res.end(body);
}

/** Writes a whole response on a raw socket and closes it: upgrade refusals and parse errors. */
function rejectUpgrade(socket: Duplex, response: HttpResponse): void {
  const body = typeof response.body === 'string' ? Buffer.from(response.body) : response.body;
  const lines = [`HTTP/1.1 ${httpStatusLine(response.status)}`, 'Connection: close', `Content-Length: ${body.length}`];
  for (const [name, value] of Object.entries(response.headers)) lines.push(`${name}: ${value}`);
  socket.end(Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`), body]));
}

