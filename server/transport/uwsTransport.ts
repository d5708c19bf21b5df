import type { HttpResponse as UwsHttpResponse, WebSocket as UwsWebSocket, us_listen_socket } from '@trufflesuite/uws-js-unofficial';
import { CloseCode } from '../../shared/errorCodes.js';
import type { Principal } from '../auth/Principal.js';
import { SendStatus, TransportName, type Connection } from './Connection.js';
import { isStreamResponse, type HttpResponse, type Transport, type TransportOptions } from './Transport.js';
import { httpStatusLine } from './httpStatusLine.js';
import { clientAddress, forwardedHttps, trustNoProxy } from './clientAddress.js';
import { internalError } from './internalError.js';
import { BodySpool } from './BodySpool.js';
import { isUpload, maxBodyBytes } from './maxBodyBytes.js';
import { payloadTooLarge, uploadTooLarge } from './payloadTooLarge.js';
import { streamHeaders } from './streamHeaders.js';
import { HttpConnectionCap } from './HttpConnectionCap.js';
import type { UwsModule } from './loadUws.js';
import { tooManyConnections } from './tooManyConnections.js';
import { UwsHttpStream } from './UwsHttpStream.js';

interface SocketData {
  connection?: UwsConnection;
  principal: Principal;
  remoteAddress: string;
}

const decoder = new TextDecoder('utf-8');

class UwsConnection implements Connection {
  readonly transport = TransportName.uws;
  isOpen = true;

  constructor(
    readonly id: string,
    private readonly socket: UwsWebSocket<SocketData>,
    readonly principal: Principal,
    readonly remoteAddress: string,
  ) {}

  send(text: string): SendStatus {
    if (!this.isOpen) return SendStatus.closed;
    // 0 = queued under backpressure, 1 = written, 2 = dropped (maxBackpressure exceeded).
    // The outbox keeps buffered bytes far below maxBackpressure, so 2 means the peer is gone.
    const result = this.socket.send(text, false, false);
    if (result === 1) return SendStatus.sent;
    if (result === 0) return SendStatus.backpressure;
    this.close(1008, 'send buffer overflow');
    return SendStatus.closed;
  }

  bufferedAmount(): number {
    return this.isOpen ? this.socket.getBufferedAmount() : 0;
  }

  close(code: number, reason: string): void {
    if (!this.isOpen) return;
    this.isOpen = false;
    this.socket.end(code, reason);
  }
}

/** HTTP and WebSocket on native uWebSockets.js. */
export function uwsTransport(uws: UwsModule) {
  return (options: TransportOptions): Transport => {
    const { limits } = options;
    const trustProxy = options.trustProxy ?? trustNoProxy;
    const open = new Set<UwsConnection>();
    const streams = new Set<UwsHttpStream>();
    let listenSocket: us_listen_socket | undefined;
    let nextId = 0;
    const httpCap = new HttpConnectionCap(limits.maxHttpConnectionsPerIp);
    const extraHeaders = options.responseHeaders ?? {};
    const writeResponse = (res: UwsHttpResponse, response: HttpResponse, closeConnection = false) =>
      writeUwsResponse(res, { ...response, headers: { ...extraHeaders, ...response.headers } }, closeConnection);

    silenceVersionHeader(uws);
    // SSLApp throws "App construction failed" for unreadable or mismatched PEM files;
    // startServer checks them first so the user sees which file is wrong.
    const app = options.tls ? uws.SSLApp({ cert_file_name: options.tls.certFile, key_file_name: options.tls.keyFile }) : uws.App();

    app.ws<SocketData>(options.wsPath, {
      compression: uws.DISABLED,
      // uWS checks a frame's declared length against this in C++ as soon as the frame's header
      // arrives, and reserves the whole declared length for a frame that spans reads: the limit
      // is also the most it buffers per socket. Past it, and for a text frame that is not UTF-8,
      // it closes the TCP connection with no close frame (the peer sees 1006; by design, see
      // uWebSockets #1321 and #1025), and no JavaScript runs before that. So no close frame with
      // 1009 or 1007 can be sent on uWS; `close` below still reports them to Parley.
      maxPayloadLength: limits.maxFrameBytes,
      idleTimeout: limits.idleTimeoutSeconds,
      sendPingsAutomatically: true,
      // Above the outbox's high-water mark with room for one frame; reaching it means a dead peer.
      maxBackpressure: Math.max(limits.highWaterBytes * 4, limits.maxFrameBytes * 2, 1 << 20),
      closeOnBackpressureLimit: 0,

      upgrade: (res, req, context) => {
        // uWS invalidates `req` after this synchronous section: copy everything now.
        const headers = readHeaders(req);
        const path = req.getUrl();
        const remoteAddress = clientAddress(decoder.decode(res.getRemoteAddressAsText()), headers, trustProxy);
        const key = headers['sec-websocket-key'] ?? '';
        const extensions = headers['sec-websocket-extensions'] ?? '';
        let aborted = false;
        res.onAborted(() => {
          aborted = true;
        });
        // The decision normally settles within this callback's turn: every step of the upgrade
        // handler (origin policy, in-memory limiters, the node:crypto token check) is synchronous
        // behind its promise, and uWS calls JavaScript through node::MakeCallback, which runs the
        // microtasks before returning to C++. `res.upgrade` then runs inside uWS's upgrade
        // callback, where the socket is corked and uWS counts the call as corked: the synchronous
        // upgrade, with no warning on stderr and no `res.cork`.
        //
        // `res.cork` is never used for the upgrade: after an upgrade made inside it, cork() in
        // v20.30 may read HTTP state from the new WebSocket's memory and close it right after
        // `open` (uWebSockets #1928; fixed by PR #1929, which v20.30 lacks; docs/DEVELOPERS.md).
        // A decision that does go asynchronous (a limiter that awaits I/O) upgrades uncorked:
        // uWS then prints "writes must be made from within a corked callback" on stderr for it,
        // which is better than a dead socket. upgradeWarning.test.ts guards the normal path.
        options
          .upgrade({ path, headers, remoteAddress })
          .then((decision) => {
            if (aborted) return;
            if (decision.accept) {
              res.upgrade<SocketData>({ principal: decision.principal, remoteAddress }, key, decision.protocol, extensions, context);
            } else {
              res.cork(() => writeResponse(res, decision.response));
            }
          })
          .catch((error: unknown) => {
            options.onError(error, 'upgrade');
            if (!aborted) res.cork(() => writeResponse(res, internalError()));
          });
      },

      open: (ws) => {
        const data = ws.getUserData();
        const connection = new UwsConnection(`u${++nextId}`, ws, data.principal, data.remoteAddress);
        data.connection = connection;
        open.add(connection);
        options.socket.open(connection);
      },

      message: (ws, message, isBinary) => {
        const connection = ws.getUserData().connection;
        if (!connection) return;
        // No message exceeds maxFrameBytes here: maxPayloadLength closed the socket first.
        // `message` is only valid during this call: decode before anything async.
        options.socket.message(connection, isBinary ? null : decoder.decode(message));
      },

      drain: (ws) => {
        const connection = ws.getUserData().connection;
        if (connection && connection.bufferedAmount() < limits.highWaterBytes) options.socket.drain(connection);
      },

      close: (ws, code, message) => {
        const connection = ws.getUserData().connection;
        if (!connection) return;
        connection.isOpen = false;
        open.delete(connection);
        options.socket.close(connection, closeReason(code, message));
      },
    });

    app.any('/*', (res, req) => {
      const method = req.getMethod().toUpperCase();
      const path = req.getUrl();
      const query = req.getQuery() ?? '';
      const headers = readHeaders(req);
      const peerAddress = decoder.decode(res.getRemoteAddressAsText());
      const remoteAddress = clientAddress(peerAddress, headers, trustProxy);
      const viaHttps = forwardedHttps(peerAddress, headers, trustProxy);
      const release = httpCap.admit(remoteAddress);
      if (!release) {
        // Still inside uWS's request callback: corked, and the body (if any) is never read.
        writeResponse(res, tooManyConnections(), true);
        return;
      }
      const limit = maxBodyBytes(path, limits, method);
      // An upload goes to a temporary file as it arrives; removed once answered, whatever happened.
      const spool = isUpload(method, path) ? new BodySpool() : undefined;
      const discard = () => void spool?.discard().catch((error: unknown) => options.onError(error, 'upload spool'));
      let aborted = false;
      let stream: UwsHttpStream | undefined;
      // uWS runs onAborted only while the response is unfinished: the peer left before it was written.
      const peer = new AbortController();
      res.onAborted(() => {
        aborted = true;
        discard();
        release();
        peer.abort();
        stream?.peerLeft();
      });
      /** Writes the whole response and gives the connection's place back. */
      const respond = (response: HttpResponse, closeConnection = false) => {
        release();
        res.cork(() => writeResponse(res, response, closeConnection));
      };

      const chunks: Buffer[] = [];
      let size = 0;
      let tooLarge = false;
      const finish = (body: Buffer, bodyFile?: string) => {
        options
          .http({ method, path, query, headers, remoteAddress, forwardedHttps: viaHttps, body, ...(bodyFile === undefined ? {} : { bodyFile }), signal: peer.signal })
          .then((response) => {
            if (isStreamResponse(response)) {
              // Assigned before `start` runs, so onAborted reaches the stream from the first write on.
              stream = new UwsHttpStream(res, options.onError);
              // A stream holds its connection's place until it ends or its reader leaves.
              stream.onClose(release);
              stream.startResponse(response, streamHeaders(extraHeaders, response.headers), streams, aborted);
            } else if (!aborted) {
              respond(response);
            }
          })
          .catch((error: unknown) => {
            options.onError(error, 'http');
            // Once a stream's head may be out, a 500 cannot follow it: cut the connection instead.
            if (stream) stream.abort();
            else if (!aborted) respond(internalError());
          })
          .finally(discard);
      };

      if (method === 'GET' || method === 'HEAD') {
        finish(Buffer.alloc(0));
        return;
      }
      res.onData((chunk, isLast) => {
        if (tooLarge) return;
        size += chunk.byteLength;
        if (size > limit) {
          tooLarge = true;
          discard();
          if (!aborted) {
            aborted = true;
            respond(spool ? uploadTooLarge(limit) : payloadTooLarge(), true);
          }
          return;
        }
        if (spool) {
          // The chunk's memory is reused by uWS after this callback: copy it.
          spool.write(Buffer.from(chunk.slice(0)));
          if (isLast) {
            spool.finish().then(
              (file) => finish(Buffer.alloc(0), file),
              (error: unknown) => {
                options.onError(error, 'upload spool');
                discard();
                if (!aborted) respond(internalError());
              },
            );
          }
          return;
        }
        // The chunk's memory is reused by uWS after this callback: copy it.
        chunks.push(Buffer.from(chunk.slice(0)));
        if (isLast) finish(Buffer.concat(chunks, size));
      });
    });

    return {
      name: TransportName.uws,
      listen(host, port) {
        return new Promise((resolve, reject) => {
          app.listen(host, port, (socket) => {
            if (!socket) {
              reject(new Error(`uWS could not listen on ${host}:${port}`));
              return;
            }
            listenSocket = socket;
            resolve({ port: uws.us_socket_local_port(socket) });
          });
        });
      },
      async close(code, reason) {
        if (listenSocket) {
          uws.us_listen_socket_close(listenSocket);
          listenSocket = undefined;
        }
        for (const connection of [...open]) connection.close(code, reason);
        // An open stream would keep its socket (and the loop) alive: cut it; its onClose(true) runs.
        for (const stream of [...streams]) stream.abort();
        // uWS.App has no close() in v20.30; closing the listen socket, every WebSocket and every
        // stream lets the loop exit. Keep-alive HTTP sockets time out on their own (10 s).
        await new Promise((resolve) => setImmediate(resolve));
      },
    };
  };
}

/**
 * Why a socket closed, for Parley. uWS closes the TCP connection itself for an over-limit frame
 * and for invalid UTF-8, without a close frame, and reports 1006 with its reason as the message:
 * those become 1009 and 1007, the codes ws sends for the same frames.
 */
function closeReason(code: number, message: ArrayBuffer): number {
  if (code !== 1006) return code;
  const reason = decoder.decode(message);
  // "Received too big message" (and ", or other inflation error" with compression, which is off).
  if (reason.startsWith('Received too big message')) return CloseCode.messageTooBig;
  if (reason === 'Received invalid UTF-8') return CloseCode.invalidPayload;
  return code;
}

function readHeaders(req: { forEach(cb: (key: string, value: string) => void): void }): Record<string, string> {
  const headers: Record<string, string> = Object.create(null) as Record<string, string>;
  req.forEach((key, value) => {
    headers[key] = key in headers ? `${headers[key]}, ${value}` : value;
  });
  return headers;
}

/**
 * uWS writes `uWebSockets: 20` into every HTTP response, including the 101, unless the binary
 * was built with UWS_HTTPRESPONSE_NO_WRITEMARK. The prebuilt v20.30 binary was not, but its
 * undocumented `_cfg` export switches the mark off for the whole loop at runtime: it calls
 * `Loop::setSilent(true)` for the key "silent" (v20.30 compares the sum of the key's character codes).
 * Idempotent. handshake.test.ts fails if the mark ever comes back.
 */
function silenceVersionHeader(uws: UwsModule): void {
  const cfg = (uws as unknown as { _cfg?: (key: string) => void })._cfg;
  if (typeof cfg === 'function') cfg('silent');
}

function writeUwsResponse(res: UwsHttpResponse, response: HttpResponse, closeConnection: boolean): void {
  res.writeStatus(httpStatusLine(response.status));
  for (const [name, value] of Object.entries(response.headers)) res.writeHeader(name, value);
  res.end(response.body, closeConnection);
}

