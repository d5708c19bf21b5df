import { WebSocket, type ClientOptions } from 'ws';
import { isTerminalFrame, ServerFrame, type ClientFrame, type TerminalFrame } from '../../shared/protocol.js';

type Frame = ServerFrame;

/**
 * A real WebSocket client for integration tests. Every frame it receives is validated against
 * the shared schema (a malformed server frame fails the test) and kept in arrival order.
 */
export class TestClient {
  readonly frames: Frame[] = [];
  closeCode: number | undefined;
  private waiters: Array<{ match: (frame: Frame) => boolean; resolve: (frame: Frame) => void }> = [];
  private closeWaiters: Array<(code: number) => void> = [];
  private counter = 0;

  private constructor(readonly socket: WebSocket) {
    socket.on('message', (data, isBinary) => {
      if (isBinary) throw new Error('server sent a binary frame');
      const frame = ServerFrame.parse(JSON.parse(String(data)));
      this.frames.push(frame);
      this.waiters = this.waiters.filter((waiter) => {
        if (!waiter.match(frame)) return true;
        waiter.resolve(frame);
        return false;
      });
    });
    socket.on('close', (code) => {
      this.closeCode = code;
      for (const resolve of this.closeWaiters) resolve(code);
    });
  }

  /** `options` go to the ws client: e.g. `origin`, `headers: { host }`, or `ca` for wss. */
  static connect(wsUrl: string, token: string, protocols?: string[], options: ClientOptions = {}): Promise<TestClient> {
    return new Promise((resolve, reject) => {
      const socket = new WebSocket(wsUrl, protocols ?? ['parley.v1', `bearer.${token}`], options);
      const client = new TestClient(socket);
      socket.once('open', () => resolve(client));
      socket.once('error', reject);
      socket.once('unexpected-response', (_req, res) => reject(new Error(`unexpected response ${res.statusCode}`)));
    });
  }

  nextId(): string {
    return `r${++this.counter}`;
  }

  sendFrame(frame: ClientFrame | Record<string, unknown>): void {
    this.socket.send(JSON.stringify(frame));
  }

  sendRaw(data: string | Buffer, binary = false): void {
    this.socket.send(data, { binary });
  }

  /** Sends a message and returns its request id. */
  send(text: string, conversationId?: string): string {
    const id = this.nextId();
    this.sendFrame({ type: 'send', id, text, ...(conversationId ? { conversationId } : {}) });
    return id;
  }

  cancel(id: string): void {
    this.sendFrame({ type: 'cancel', id });
  }

  /** Resolves with the first frame (already received or future) that matches. */
  waitFor<T extends Frame = Frame>(match: (frame: Frame) => boolean, timeoutMs = 20_000, fromIndex = 0): Promise<T> {
    const existing = this.frames.slice(fromIndex).find(match);
    if (existing) return Promise.resolve(existing as T);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for a frame; got ${JSON.stringify(this.frames.slice(-5))}`)), timeoutMs);
      this.waiters.push({
        match,
        resolve: (frame) => {
          clearTimeout(timer);
          resolve(frame as T);
        },
      });
    });
  }

  waitForType<K extends Frame['type']>(type: K, id?: string): Promise<Extract<Frame, { type: K }>> {
    return this.waitFor((frame) => frame.type === type && (id === undefined || ('id' in frame && frame.id === id)));
  }

  terminal(id: string, timeoutMs?: number): Promise<TerminalFrame> {
    return this.waitFor((frame) => isTerminalFrame(frame) && frame.id === id, timeoutMs) as Promise<TerminalFrame>;
  }

  framesFor(id: string): Frame[] {
    return this.frames.filter((frame) => 'id' in frame && frame.id === id);
  }

  /** The reply text so far, with a check that seqs are 0..n-1 without gaps. */
  replyText(id: string): string {
    const deltas = this.framesFor(id).filter((frame): frame is Extract<Frame, { type: 'delta' }> => frame.type === 'delta');
    deltas.forEach((delta, index) => {
      if (delta.seq !== index) throw new Error(`seq gap for ${id}: expected ${index}, got ${delta.seq}`);
    });
    return deltas.map((delta) => delta.text).join('');
  }

  terminalsFor(id: string): TerminalFrame[] {
    return this.frames.filter((frame): frame is TerminalFrame => isTerminalFrame(frame) && frame.id === id);
  }

  waitClose(timeoutMs = 10_000): Promise<number> {
    if (this.closeCode !== undefined) return Promise.resolve(this.closeCode);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('socket did not close')), timeoutMs);
      this.closeWaiters.push((code) => {
        clearTimeout(timer);
        resolve(code);
      });
    });
  }

  close(): void {
    this.socket.close(1000);
  }

  /** Drops the TCP connection without a close handshake, like a laptop lid closing. */
  drop(): void {
    this.socket.terminate();
  }
}
