import type { Logger } from 'pino';
import { CloseCode, ErrorCode } from '../../shared/errorCodes.js';
import { parseClientFrame } from '../../shared/parseClientFrame.js';
import type { ReadyFrame, ServerFrame } from '../../shared/protocol.js';
import type { Connection } from '../transport/Connection.js';
import { AbortReason } from './AbortReason.js';
import type { ActiveRequest, ChatService } from './ChatService.js';
import { Outbox } from './Outbox.js';

export interface ClientSessionOptions {
  readonly highWaterBytes: number;
  readonly maxOutboxBytes: number;
  readonly ready: Omit<ReadyFrame, 'type' | 'protocol' | 'user' | 'transport' | 'expiresAt'>;
}

/**
 * The protocol state of one connection: parses frames, starts and cancels this
 * connection's requests, and stops all of them when the socket closes.
 * Bad input gets an error frame; it never closes the socket or throws.
 */
export class ClientSession {
  private readonly outbox: Outbox;
  private readonly active = new Map<string, ActiveRequest>();

  constructor(
    private readonly connection: Connection,
    private readonly chat: ChatService,
    private readonly log: Logger,
    private readonly options: ClientSessionOptions,
  ) {
    this.outbox = new Outbox(connection, {
      highWaterBytes: options.highWaterBytes,
      maxQueuedBytes: options.maxOutboxBytes,
      onOverflow: () => {
        log.warn({ pendingBytes: this.outbox.pendingBytes }, 'closing slow consumer');
        connection.close(CloseCode.policyViolation, 'client too slow');
      },
    });
  }

  open(): void {
    const { principal } = this.connection;
    this.send({
      type: 'ready',
      protocol: 'parley.v1',
      user: { id: principal.userId, name: principal.name },
      transport: this.connection.transport,
      expiresAt: principal.expiresAt,
      ...this.options.ready,
    });
  }

  message(data: string | null): void {
    if (data === null) {
      this.send({ type: 'error', code: ErrorCode.binaryFrame, message: 'Binary frames are not supported; send JSON text.' });
      return;
    }
    const parsed = parseClientFrame(data);
    if (!parsed.ok) {
      this.send({ type: 'error', code: parsed.code, message: parsed.message });
      return;
    }
    const frame = parsed.frame;
    switch (frame.type) {
      case 'send': {
        if (this.active.has(frame.id)) {
          this.send({ type: 'error', code: ErrorCode.duplicateId, message: `Request id ${frame.id} is still running; use a new id.` });
          return;
        }
        const sink = {
          userId: this.connection.principal.userId,
          log: this.log,
          send: (out: ServerFrame) => this.send(out),
          delta: (id: string, text: string) => this.outbox.delta(id, text),
        };
        const request = this.chat.start(sink, frame, () => this.active.delete(frame.id));
        if (request) this.active.set(frame.id, request);
        return;
      }
      case 'refresh': {
        this.send({ type: 'error', code: ErrorCode.badFrame, message: 'refresh is not supported yet.' });
        return;
      }
      case 'cancel': {
        const request = this.active.get(frame.id);
        if (!request) {
          this.send({ type: 'error', code: ErrorCode.unknownRequest, message: `No running request with id ${frame.id}.` });
          return;
        }
        request.controller.abort(AbortReason.cancel);
        return;
      }
    }
  }

  drain(): void {
    this.outbox.drain();
  }

  /** The socket is gone: stop every request of this connection and free their slots. */
  close(): void {
    for (const request of [...this.active.values()]) request.controller.abort(AbortReason.disconnect);
    this.active.clear();
  }

  private send(frame: ServerFrame): void {
    this.outbox.send(frame);
  }
}
