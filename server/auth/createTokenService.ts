import { randomBytes } from 'node:crypto';
import { SignJWT, jwtVerify } from 'jose';
import { UnauthorizedError } from '../ParleyError.js';
import type { Principal } from './Principal.js';
import type { SigningKey } from './loadOrCreateSigningKey.js';

export const TokenClaims = {
  issuer: 'parley',
  audience: 'parley:ws',
  /** The JOSE `typ` of access tokens; any other kind of token is refused where an access token is expected. */
  accessType: 'parley-access+jwt',
  algorithm: 'EdDSA',
  clockToleranceSeconds: 5,
} as const;

export interface IssuedToken {
  readonly token: string;
  readonly expiresAt: number;
  readonly principal: Principal;
}

export interface TokenService {
  issueAccessToken(user: { userId?: string; name: string }): Promise<IssuedToken>;
  /** Resolves the principal, or rejects with UnauthorizedError. */
  verifyAccessToken(token: string): Promise<Principal>;
}

/** Short-lived EdDSA access tokens (jose), with the algorithm, issuer, audience and type pinned. */
export function createTokenService(options: { key: SigningKey; ttlSeconds: number; now?: () => number }): TokenService {
  const now = options.now ?? Date.now;
  return {
    async issueAccessToken(user) {
      const userId = user.userId ?? `u_${randomBytes(9).toString('base64url')}`;
      const issuedAt = Math.floor(now() / 1000);
      const exp = issuedAt + options.ttlSeconds;
      const token = await new SignJWT({ name: user.name })
        .setProtectedHeader({ alg: TokenClaims.algorithm, typ: TokenClaims.accessType, kid: options.key.kid })
        .setSubject(userId)
        .setIssuer(TokenClaims.issuer)
        .setAudience(TokenClaims.audience)
        .setIssuedAt(issuedAt)
        .setExpirationTime(exp)
        .setJti(randomBytes(12).toString('base64url'))
        .sign(options.key.privateKey);
      const expiresAt = exp * 1000;
      return { token, expiresAt, principal: { userId, name: user.name, expiresAt } };
    },

    async verifyAccessToken(token) {
      try {
        const { payload } = await jwtVerify(token, options.key.publicKey, {
          algorithms: [TokenClaims.algorithm],
          issuer: TokenClaims.issuer,
          audience: TokenClaims.audience,
          typ: TokenClaims.accessType,
          requiredClaims: ['exp', 'iat', 'sub'],
          clockTolerance: TokenClaims.clockToleranceSeconds,
          currentDate: new Date(now()),
        });
        if (typeof payload.sub !== 'string' || typeof payload.name !== 'string' || typeof payload.exp !== 'number') {
          throw new Error('token claims have the wrong types');
        }
        return { userId: payload.sub, name: payload.name, expiresAt: payload.exp * 1000 };
      } catch (error) {
        throw new UnauthorizedError('Missing, invalid or expired token.', error);
      }
    },
  };
}
