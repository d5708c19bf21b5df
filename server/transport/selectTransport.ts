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
 * `auto` picks native uWebSockets.js when a binary really loads (v20.57, else v20.30; see
 * UWS_PACKAGES), else `ws`. `uws` insists on a native binary (never a package's JS emulation) and
 * fails otherwise. The reason names the binary that runs and why the ones before it did not.
 */
export function selectTransport(choice: TransportChoice): SelectedTransport {
  if (choice === TransportChoice.ws) return { name: TransportName.ws, factory: wsTransport(), reason: 'requested' };
  const uws = loadUws();
  if (uws.native) {
    const skipped = uws.skipped.length > 0 ? `; not ${uws.skipped.join('; not ')}` : '';
    return { name: TransportName.uws, factory: uwsTransport(uws.uws), reason: `native uWebSockets.js v${uws.version} (${uws.binary})${skipped}` };
  }
  if (choice === TransportChoice.uws) throw new TransportUnavailableError(`--transport uws was requested but ${uws.reason}`);
  return { name: TransportName.ws, factory: wsTransport(), reason: `fallback: no native uWebSockets.js: ${uws.reason}` };
}
