import { randomBytes } from 'node:crypto';
import { SignJWT, jwtVerify } from 'jose';
import { UnauthorizedError } from '../ParleyError.js';
import { isRole, Role, type Principal } from './Principal.js';
import type { SigningKey } from './loadOrCreateSigningKey.js';
import { ed25519PublicKey, verifyEdDsaJwt } from './verifyEdDsaJwt.js';

export const TokenClaims = {
  issuer: 'parley',
  audience: 'parley:ws',
  /** The JOSE `typ` of access tokens; any other kind of token is refused where an access token is expected. */
  accessType: 'parley-access+jwt',
  /** Refresh credentials differ from access tokens in both `typ` and `aud`, so neither passes for the other. */
  refreshAudience: 'parley:refresh',
  refreshType: 'parley-refresh+jwt',
  algorithm: 'EdDSA',
  clockToleranceSeconds: 5,
} as const;

export interface IssuedToken {
  readonly token: string;
  readonly expiresAt: number;
  readonly principal: Principal;
}

/** The claims of a refresh credential, as issued and as verified. */
export interface RefreshClaims {
  readonly userId: string;
  readonly name: string;
  readonly role: Role;
  /** Session family: every rotation keeps it; revoking it ends the session. */
  readonly family: string;
  /** This credential's id; only the family's latest jti is accepted. */
  readonly jti: string;
  /** Epoch ms. */
  readonly expiresAt: number;
}

/** The per-user revocation epoch: access tokens carry the epoch they were issued at (`ep`). */
export interface EpochSource {
  epochOf(userId: string): number;
}

export interface TokenService {
  /**
   * `epoch`: the `ep` to put in the token instead of the user's epoch now. A refresh passes the
   * epoch it read when it checked the session, so a revocation that lands while the refresh is
   * still working leaves the token it hands out already dead.
   */
  issueAccessToken(user: { userId?: string; name: string; role?: Role }, options?: { epoch?: number }): Promise<IssuedToken>;
  /** Resolves the principal, or rejects with UnauthorizedError. */
  verifyAccessToken(token: string): Promise<Principal>;
  issueRefreshToken(claims: RefreshClaims): Promise<string>;
  /** Checks signature, type and claims only; whether the jti is current is the SessionStore's call. */
  verifyRefreshToken(token: string): Promise<RefreshClaims>;
}

const noEpochs: EpochSource = { epochOf: () => 0 };

/**
 * Short-lived EdDSA access tokens and long-lived refresh credentials (jose), both signed with
 * the server key, with the algorithm, issuer, audience and type pinned on verification.
 * An access token whose `ep` is below the user's current epoch was revoked (logout or admin).
 */
export function createTokenService(options: { key: SigningKey; ttlSeconds: number; epochs?: EpochSource; now?: () => number }): TokenService {
  const now = options.now ?? Date.now;
  const epochs = options.epochs ?? noEpochs;
  const accessKey = ed25519PublicKey(options.key.publicKey);
  const verifyOptions = (audience: string, typ: string, required: string[]) => ({
    algorithms: [TokenClaims.algorithm],
    issuer: TokenClaims.issuer,
    audience,
    typ,
    requiredClaims: ['exp', 'iat', 'sub', 'iss', 'aud', ...required],
    clockTolerance: TokenClaims.clockToleranceSeconds,
    currentDate: new Date(now()),
  });

  return {
    async issueAccessToken(user, issue = {}) {
      const userId = user.userId ?? `u_${randomBytes(9).toString('base64url')}`;
      const role = user.role ?? Role.user;
      const issuedAt = Math.floor(now() / 1000);
      const exp = issuedAt + options.ttlSeconds;
      const token = await new SignJWT({ name: user.name, role, ep: issue.epoch ?? epochs.epochOf(userId) })
        .setProtectedHeader({ alg: TokenClaims.algorithm, typ: TokenClaims.accessType, kid: options.key.kid })
        .setSubject(userId)
        .setIssuer(TokenClaims.issuer)
        .setAudience(TokenClaims.audience)
        .setIssuedAt(issuedAt)
        .setExpirationTime(exp)
        .setJti(randomBytes(12).toString('base64url'))
        .sign(options.key.privateKey);
      const expiresAt = exp * 1000;
      return { token, expiresAt, principal: { userId, name: user.name, role, expiresAt } };
    },

    async verifyAccessToken(token) {
      try {
        // Synchronous (node:crypto, not jose's WebCrypto): the promise settles without leaving the
        // caller's turn, so uWS upgrades inside its own callback (see uwsTransport.ts).
        const payload = verifyEdDsaJwt(token, accessKey, {
          typ: TokenClaims.accessType,
          issuer: TokenClaims.issuer,
          audience: TokenClaims.audience,
          requiredClaims: ['exp', 'iat', 'sub', 'iss', 'aud', 'role', 'ep'],
          clockToleranceSeconds: TokenClaims.clockToleranceSeconds,
          nowSeconds: Math.floor(now() / 1000),
        });
        const { sub, name, role, ep, exp } = payload;
        if (typeof sub !== 'string' || typeof name !== 'string' || typeof exp !== 'number' || !isRole(role) || !Number.isSafeInteger(ep) || (ep as number) < 0) {
          throw new Error('token claims have the wrong types');
        }
        if ((ep as number) < epochs.epochOf(sub)) throw new Error('token was revoked');
        return { userId: sub, name, role, expiresAt: exp * 1000 };
      } catch (error) {
        throw new UnauthorizedError('Missing, invalid or expired token.', error);
      }
    },

    async issueRefreshToken(claims) {
      return new SignJWT({ name: claims.name, role: claims.role, fam: claims.family })
        .setProtectedHeader({ alg: TokenClaims.algorithm, typ: TokenClaims.refreshType, kid: options.key.kid })
        .setSubject(claims.userId)
        .setIssuer(TokenClaims.issuer)
        .setAudience(TokenClaims.refreshAudience)
        .setIssuedAt(Math.floor(now() / 1000))
        .setExpirationTime(Math.floor(claims.expiresAt / 1000))
        .setJti(claims.jti)
        .sign(options.key.privateKey);
    },

    async verifyRefreshToken(token) {
      try {
        const { payload } = await jwtVerify(token, options.key.publicKey, verifyOptions(TokenClaims.refreshAudience, TokenClaims.refreshType, ['jti', 'fam', 'role']));
        const { sub, name, role, fam, jti, exp } = payload;
        if (typeof sub !== 'string' || typeof name !== 'string' || typeof fam !== 'string' || typeof jti !== 'string' || typeof exp !== 'number' || !isRole(role)) {
          throw new Error('refresh claims have the wrong types');
        }
        return { userId: sub, name, role, family: fam, jti, expiresAt: exp * 1000 };
      } catch (error) {
        throw new UnauthorizedError('Missing, invalid or expired refresh credential.', error);
      }
    },
  };
}
