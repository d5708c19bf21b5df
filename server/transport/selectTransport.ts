import { TransportChoice } from '../config.js';
import { TransportName } from './Connection.js';
import type { TransportFactory } from './Transport.js';
import { loadUws } from './loadUws.js';
import { uwsTransport } from './uwsTransport.js';
import { wsTransport } from './wsTransport.js';

export interface SelectedTransport {
  readonly name: TransportName;
  readonly factory: TransportFactory;
  /** Why this transport runs, for the startup log. */
  readonly reason: string;
}

export class TransportUnavailableError extends Error {
  override name = 'TransportUnavailableError';
  readonly code = 'transport_unavailable';
}

/**
 * `auto` picks native uWebSockets.js when its binary really loads, else `ws`.
 * `uws` insists on the native binary (never the package's JS emulation) and fails otherwise.
 */
export function selectTransport(choice: TransportChoice): SelectedTransport {
  if (choice === TransportChoice.ws) return { name: TransportName.ws, factory: wsTransport(), reason: 'requested' };
  const uws = loadUws();
  if (uws.native) return { name: TransportName.uws, factory: uwsTransport(uws.uws), reason: `native uWebSockets.js (${uws.binary})` };
  if (choice === TransportChoice.uws) throw new TransportUnavailableError(`--transport uws was requested but ${uws.reason}`);
  return { name: TransportName.ws, factory: wsTransport(), reason: `fallback: ${uws.reason}` };
}
