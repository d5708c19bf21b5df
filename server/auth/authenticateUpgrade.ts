import { BEARER_PREFIX, PROTOCOL_VERSION } from '../../shared/limits.js';
import { ErrorCode } from '../../shared/errorCodes.js';
import type { HttpResponse, UpgradeDecision, UpgradeRequest } from '../transport/Transport.js';
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
    if (request.path !== wsPath) return reject(404, ErrorCode.notFound, 'Not found.');
    const header = request.headers['sec-websocket-protocol'] ?? '';
    if (header.length > MAX_PROTOCOL_HEADER) return reject(400, ErrorCode.badRequest, 'Sec-WebSocket-Protocol is too long.');
    const offered = header.split(',').map((entry) => entry.trim());
    if (!offered.includes(PROTOCOL_VERSION)) {
      return reject(400, ErrorCode.badRequest, `Offer the ${PROTOCOL_VERSION} subprotocol.`);
    }
    const bearers = offered.filter((entry) => entry.startsWith(BEARER_PREFIX));
    if (bearers.length !== 1) return reject(401, ErrorCode.unauthorized, 'Missing, invalid or expired token.');
    try {
      const principal = await tokens.verifyAccessToken((bearers[0] as string).slice(BEARER_PREFIX.length));
      return { accept: true, principal, protocol: PROTOCOL_VERSION };
    } catch {
      return reject(401, ErrorCode.unauthorized, 'Missing, invalid or expired token.');
    }
  };
}

function reject(status: number, code: string, message: string): UpgradeDecision {
  const response: HttpResponse = {
    status,
    headers: { 'content-type': 'application/json', 'cache-control': 'no-store' },
    body: JSON.stringify({ code, message }),
  };
  return { accept: false, response };
}
