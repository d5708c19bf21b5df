import type { Principal } from '../auth/Principal.js';
import type { Connection, TransportName } from './Connection.js';

/** A fully read HTTP request. Header names are lower case. */
export interface HttpRequest {
  readonly method: string;
  readonly path: string;
  readonly query: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly remoteAddress: string;
  readonly body: Buffer;
}

export interface HttpResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string | Buffer;
}

export type HttpHandler = (request: HttpRequest) => Promise<HttpResponse>;

export interface UpgradeRequest {
  readonly path: string;
  readonly headers: Readonly<Record<string, string>>;
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
  close(connection: Connection, code: number): void;
}

export interface TransportLimits {
  /** Largest WebSocket message accepted; larger closes the socket with 1009. */
  readonly maxFrameBytes: number;
  /** Largest HTTP request body accepted; larger gets 413. */
  readonly maxHttpBodyBytes: number;
  /** A socket that shows no traffic and answers no ping for this long is closed. */
  readonly idleTimeoutSeconds: number;
  /** Buffered bytes above which `send` reports backpressure. */
  readonly highWaterBytes: number;
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
