import type { Principal } from '../auth/Principal.js';

export const TransportName = { uws: 'uws', ws: 'ws' } as const;
export type TransportName = (typeof TransportName)[keyof typeof TransportName];

export const SendStatus = {
  /** Handed to the socket with no backlog. */
  sent: 'sent',
  /** Accepted but queued in the transport: the caller should hold further frames until `drain`. */
  backpressure: 'backpressure',
  /** Not sent: the socket is closed or closing. */
  closed: 'closed',
} as const;
export type SendStatus = (typeof SendStatus)[keyof typeof SendStatus];

/**
 * One open WebSocket, identical across transports. Methods are safe to call after the socket
 * closed: they do nothing and `send` reports `closed`. Text frames only.
 */
export interface Connection {
  readonly id: string;
  readonly transport: TransportName;
  readonly remoteAddress: string;
  readonly principal: Principal;
  readonly isOpen: boolean;
  send(text: string): SendStatus;
  /** Bytes handed to `send` that the transport has not yet written to the network. */
  bufferedAmount(): number;
  close(code: number, reason: string): void;
}
