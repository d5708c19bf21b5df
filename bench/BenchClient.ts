import { performance } from 'node:perf_hooks';
import { WebSocket } from 'ws';

const CONNECT_TIMEOUT_MS = 30_000;

/** The fields of server frames a benchmark reads; the rest of each frame is ignored. */
interface Frame {
  readonly type: string;
  readonly id?: string;
  readonly code?: string;
  readonly transport?: string;
  readonly usage?: { readonly completionTokens: number };
  readonly stopReason?: string;
}

export type TerminalType = 'done' | 'cancelled' | 'error';

/** One request as this client saw it. Times are `performance.now()` in this process. */
export interface RequestTrace {
  readonly id: string;
  readonly sentAt: number;
  /** A `queued` frame came: every slot was busy when it arrived. */
  queued: boolean;
  firstDeltaAt: number | undefined;
  endedAt: number | undefined;
  terminal: TerminalType | undefined;
  /** From the `done` frame's usage; 0 for a cancelled or failed request. */
  completionTokens: number;
  /** From the `done` frame: eos, max_tokens, context_full or time_limit. */
  stopReason: string | undefined;
  errorCode: string | undefined;
  /** Resolves at the first delta's arrival, or undefined if the request ended without one. */
  readonly firstDelta: Promise<number | undefined>;
  /** Resolves once the server placed the request: true on a `queued` frame, false when it started or ended first. */
  readonly placed: Promise<boolean>;
  readonly ended: Promise<RequestTrace>;
}

interface Pending {
  readonly trace: RequestTrace;
  readonly onFirstDelta: (at: number | undefined) => void;
  readonly onPlaced: (queued: boolean) => void;
  readonly onEnded: (trace: RequestTrace) => void;
}

/**
 * A lean Parley client for measuring: frames are JSON-parsed, never schema-validated (the tests
 * do that), so the client's own CPU cost stays small next to the server's. It timestamps the
 * frames of each request on arrival.
 */
export class BenchClient {
  /** Frames that belong to no request (`conversations`, id-less `error`), in arrival order of callback. */
  onOtherFrame: ((frame: Frame, at: number) => void) | undefined;
  private readonly pending = new Map<string, Pending>();
  private counter = 0;

  private constructor(
    private readonly socket: WebSocket,
    /** `transport` of the `ready` frame: what the server says it runs. */
    readonly transport: string,
  ) {
    socket.on('message', (data) => this.receive(JSON.parse(String(data)) as Frame, performance.now()));
    socket.on('close', () => {
      for (const [, pending] of this.pending) this.end(pending, 'error', performance.now(), 'closed');
      this.pending.clear();
    });
  }

  /** Opens `/ws` the way the web client does (subprotocols, Origin) and resolves on `ready`. */
  static connect(wsUrl: string, origin: string, token: string, options: { localAddress?: string } = {}): Promise<BenchClient> {
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(wsUrl, ['parley.v1', `bearer.${token}`], { origin, perMessageDeflate: false, ...options });
      const fail = (error: Error) => {
        clearTimeout(timer);
        socket.removeAllListeners('message');
        socket.terminate();
        reject(error);
      };
      const timer = setTimeout(() => fail(new Error(`no ready frame within ${CONNECT_TIMEOUT_MS / 1000} s`)), CONNECT_TIMEOUT_MS);
      socket.once('error', fail);
      socket.once('unexpected-response', (_request, response) => fail(new Error(`upgrade refused: HTTP ${response.statusCode}`)));
      socket.once('message', (data) => {
        clearTimeout(timer);
        const frame = JSON.parse(String(data)) as Frame;
        if (frame.type !== 'ready') {
          fail(new Error(`expected ready, got ${frame.type}`));
          return;
        }
        socket.removeAllListeners('error');
        // Errors after the handshake (a reset while closing) surface as a close; nothing to add.
        socket.on('error', () => undefined);
        resolve(new BenchClient(socket, frame.transport ?? 'unknown'));
      });
    });
  }

  get open(): boolean {
    return this.socket.readyState === WebSocket.OPEN;
  }

  /** Sends a fresh request (a new conversation) and returns its trace. */
  send(text: string): RequestTrace {
    const id = `b${++this.counter}`;
    let onFirstDelta!: (at: number | undefined) => void;
    let onPlaced!: (queued: boolean) => void;
    let onEnded!: (trace: RequestTrace) => void;
    const firstDelta = new Promise<number | undefined>((resolve) => { onFirstDelta = resolve; });
    const placed = new Promise<boolean>((resolve) => { onPlaced = resolve; });
    const ended = new Promise<RequestTrace>((resolve) => { onEnded = resolve; });
    const trace: RequestTrace = {
      id, sentAt: performance.now(), queued: false, firstDeltaAt: undefined, endedAt: undefined,
      terminal: undefined, completionTokens: 0, stopReason: undefined, errorCode: undefined, firstDelta, placed, ended,
    };
    this.pending.set(id, { trace, onFirstDelta, onPlaced, onEnded });
    this.socket.send(JSON.stringify({ type: 'send', id, text }));
    return trace;
  }

  /** Sends `cancel` and returns the time it was handed to the socket. */
  cancel(id: string): number {
    const at = performance.now();
    this.socket.send(JSON.stringify({ type: 'cancel', id }));
    return at;
  }

  /** Any frame as is (the frame benchmark's `list_conversations`). */
  sendRaw(text: string): void {
    this.socket.send(text);
  }

  close(): void {
    this.socket.close(1000);
  }

  terminate(): void {
    this.socket.terminate();
  }

  private receive(frame: Frame, at: number): void {
    const pending = frame.id === undefined ? undefined : this.pending.get(frame.id);
    if (pending === undefined) {
      this.onOtherFrame?.(frame, at);
      return;
    }
    const { trace } = pending;
    switch (frame.type) {
      case 'queued':
        trace.queued = true;
        pending.onPlaced(true);
        break;
      case 'delta':
        if (trace.firstDeltaAt === undefined) {
          trace.firstDeltaAt = at;
          pending.onFirstDelta(at);
          pending.onPlaced(false);
        }
        break;
      case 'done':
        trace.completionTokens = frame.usage?.completionTokens ?? 0;
        trace.stopReason = frame.stopReason;
        this.end(pending, 'done', at);
        break;
      case 'cancelled':
        this.end(pending, 'cancelled', at);
        break;
      case 'error':
        this.end(pending, 'error', at, frame.code);
        break;
      default:
        break;
    }
  }

  private end(pending: Pending, type: TerminalType, at: number, code?: string): void {
    const { trace } = pending;
    trace.terminal = type;
    trace.endedAt = at;
    trace.errorCode = code;
    this.pending.delete(trace.id);
    pending.onFirstDelta(trace.firstDeltaAt);
    pending.onPlaced(trace.queued);
    pending.onEnded(trace);
  }
}
