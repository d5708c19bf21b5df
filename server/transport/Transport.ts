import type { Principal } from '../auth/Principal.js';
import type { Connection, TransportName } from './Connection.js';
import type { TrustProxy } from './clientAddress.js';

/** A fully read HTTP request. Header names are lower case. */
export interface HttpRequest {
  readonly method: string;
  readonly path: string;
  readonly query: string;
  readonly headers: Readonly<Record<string, string>>;
  /** The client's address: the TCP peer, or what a trusted proxy forwarded (clientAddress.ts). */
  readonly remoteAddress: string;
  /** A trusted proxy says the client used https (X-Forwarded-Proto); absent means no. */
  readonly forwardedHttps?: boolean;
  readonly body: Buffer;
  /**
   * Uploads only (isUpload): the body is in this temporary file instead of `body` (which is
   * empty). The transport deletes it once the response is written.
   */
  readonly bodyFile?: string;
  /** Aborts when the peer leaves before the response is written (so work for it can stop). */
  readonly signal?: AbortSignal;
}

export interface HttpResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string | Buffer;
}

/**
 * A response body written in pieces (Server-Sent Events), after the status and headers.
 *
 * Invariants: `write` returns false while the transport buffers (backpressure): the writer stops
 * and waits for `onDrain`, so a slow reader never makes the server buffer without bound; after
 * the peer left or `end`, writes are dropped and return false; `onClose` runs exactly once,
 * whether the peer left or the response ended.
 */
export interface HttpStream {
  write(chunk: string): boolean;
  /** Ends the response. Safe to call twice. */
  end(): void;
  /** Called once each time the transport drains after a `write` returned false. */
  onDrain(listener: () => void): void;
  /** Called once: the peer closed the connection, or the response ended. */
  onClose(listener: (peerLeft: boolean) => void): void;
  /** True once the peer left or the response ended. */
  readonly closed: boolean;
}

/**
 * A streamed response: the transport writes the head, then hands the body to `start`. The
 * transport adds `responseHeaders` and frames the body itself (chunked; a Content-Length is
 * dropped). uWS sends the end of the head only with the first `write`, so a client sees the
 * response once the first chunk is out: write one at once. If the peer left while the handler
 * ran, `start` still gets the stream, already closed, and `onClose(true)` runs.
 */
export interface HttpStreamResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  start(stream: HttpStream): void;
}

export function isStreamResponse(response: HttpResponse | HttpStreamResponse): response is HttpStreamResponse {
  return 'start' in response;
}

export type HttpHandler = (request: HttpRequest) => Promise<HttpResponse | HttpStreamResponse>;

export interface UpgradeRequest {
  readonly path: string;
  readonly headers: Readonly<Record<string, string>>;
  /** As HttpRequest's; the connection keeps it. */
  readonly remoteAddress: string;
}

/** Rejections are written as a plain HTTP response; no upgrade happens. */
export type UpgradeDecision =
  | { readonly accept: true; readonly principal: Principal; readonly protocol: string }
  | { readonly accept: false; readonly response: HttpResponse };

export type UpgradeHandler = (request: UpgradeRequest) => Promise<UpgradeDecision>;

export interface SocketHandlers {
  open(connection: Connection): void;
  /** `data` is null for a binary frame, which the protocol does not use. */
  message(connection: Connection, data: string | null): void;
  /** The transport's send buffer fell below its low-water mark. */
  drain(connection: Connection): void;
  /**
   * `code` says why: the close code received or sent, or what the transport detected when it
   * dropped the connection without one (1009 for an over-limit frame and 1007 for invalid UTF-8
   * on uWS); 1006 for any other drop.
   */
  close(connection: Connection, code: number): void;
}

export interface TransportLimits {
  /**
   * Largest WebSocket message accepted, and the most either transport buffers for one message.
   * Larger closes the socket: with 1009 on ws; on uWS without a close frame (the peer sees 1006),
   * while `SocketHandlers.close` still gets 1009 (see uwsTransport.ts).
   */
  readonly maxFrameBytes: number;
  /** Largest HTTP request body accepted; larger gets 413. */
  readonly maxHttpBodyBytes: number;
  /** Largest body for paths under /v1/ (the OpenAI-compatible API carries whole conversations). */
  readonly maxApiBodyBytes: number;
  /** Largest upload (POST /api/documents), spooled to a file; larger is cut off with 413 `document_too_large`. */
  readonly maxUploadBytes: number;
  /** A socket that shows no traffic and answers no ping for this long is closed. */
  readonly idleTimeoutSeconds: number;
  /** Buffered bytes above which `send` reports backpressure. */
  readonly highWaterBytes: number;
  /**
   * HTTP connections with a request in progress per client IP (see HttpConnectionCap); the next
   * gets 429 with Retry-After and is closed.
   */
  readonly maxHttpConnectionsPerIp: number;
}

/** PEM files for https and wss. uWS reads them by name; ws reads them once at creation. */
export interface TlsFiles {
  readonly certFile: string;
  readonly keyFile: string;
}

export interface TransportOptions {
  readonly wsPath: string;
  /** Serve https and wss instead of http and ws. */
  readonly tls?: TlsFiles;
  /**
   * Added to every HTTP response the transport writes: handler responses, upgrade refusals and
   * the transport's own 404, 413 and 500. A response's own header of the same name wins.
   */
  readonly responseHeaders?: Readonly<Record<string, string>>;
  /** Which TCP peers are proxies whose X-Forwarded-For names the client; absent: none. */
  readonly trustProxy?: TrustProxy;
  readonly http: HttpHandler;
  readonly upgrade: UpgradeHandler;
  readonly socket: SocketHandlers;
  readonly limits: TransportLimits;
  /** Called with unexpected errors from inside the transport; never with client input. */
  readonly onError: (error: unknown, context: string) => void;
}

export interface Transport {
  readonly name: TransportName;
  listen(host: string, port: number): Promise<{ port: number }>;
  /** Stops listening and closes every open socket with `code`. */
  close(code: number, reason: string): Promise<void>;
}

export type TransportFactory = (options: TransportOptions) => Transport;
