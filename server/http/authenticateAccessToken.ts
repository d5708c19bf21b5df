import type { TokenService } from '../auth/createTokenService.js';
import type { Principal } from '../auth/Principal.js';
import { UnauthorizedError } from '../ParleyError.js';
import type { HttpRequest } from '../transport/Transport.js';

/** The principal of the request's `Authorization: Bearer <access token>`; UnauthorizedError without a valid one. */
export async function authenticateAccessToken(request: HttpRequest, tokens: TokenService): Promise<Principal> {
  const match = /^Bearer\s+([A-Za-z0-9_.-]+)\s*$/i.exec(request.headers.authorization ?? '');
  if (!match?.[1]) throw new UnauthorizedError('Send the access token as a Bearer token.');
  return tokens.verifyAccessToken(match[1]);
}
