import { BEARER_PREFIX, PROTOCOL_VERSION } from '../../shared/limits.js';
import { toHttpResponse } from '../http/toHttpResponse.js';
import { BadRequestError, NotFoundError, UnauthorizedError, type ParleyError } from '../ParleyError.js';
import type { UpgradeDecision, UpgradeRequest } from '../transport/Transport.js';
import type { TokenService } from './createTokenService.js';

/** A Sec-WebSocket-Protocol longer than this is refused unparsed (two entries fit in 4 KiB). */
const MAX_PROTOCOL_HEADER = 4096;

/**
 * Decides a WebSocket upgrade before it happens. The token rides in Sec-WebSocket-Protocol
 * as `bearer.<jwt>` beside `parley.v1`, so it never appears in a URL or a proxy log; the
 * server selects `parley.v1` and never echoes the token.
 */
export function createUpgradeAuthenticator(tokens: TokenService, wsPath: string) {
  return async (request: UpgradeRequest): Promise<UpgradeDecision> => {
    if (request.path !== wsPath) return reject(new NotFoundError());
    const header = request.headers['sec-websocket-protocol'] ?? '';
    if (header.length > MAX_PROTOCOL_HEADER) return reject(new BadRequestError('Sec-WebSocket-Protocol is too long.'));
    const offered = header.split(',').map((entry) => entry.trim());
    if (!offered.includes(PROTOCOL_VERSION)) return reject(new BadRequestError(`Offer the ${PROTOCOL_VERSION} subprotocol.`));
    const bearers = offered.filter((entry) => entry.startsWith(BEARER_PREFIX));
    if (bearers.length !== 1) return reject(new UnauthorizedError());
    try {
      const principal = await tokens.verifyAccessToken((bearers[0] as string).slice(BEARER_PREFIX.length));
      return { accept: true, principal, protocol: PROTOCOL_VERSION };
    } catch {
      return reject(new UnauthorizedError());
    }
  };
}

function reject(error: ParleyError): UpgradeDecision {
  return { accept: false, response: toHttpResponse(error) };
}
