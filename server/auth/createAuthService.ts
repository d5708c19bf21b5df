import type { IssuedToken, TokenService } from './createTokenService.js';
import { Role, type Principal } from './Principal.js';
import { RefreshRefusal, type FamilyRecord, type SessionStore } from './SessionStore.js';
import type { Account, UserStore } from './UserStore.js';

/** What a login or a refresh hands out: an access token, and the refresh credential for the cookie. */
export interface IssuedSession {
  readonly access: IssuedToken;
  readonly refresh: { readonly token: string; readonly expiresAt: number };
  /** Family id of the session, for audit records. */
  readonly family: string;
}

export const RefreshFailure = {
  ...RefreshRefusal,
  /** Bad signature, wrong type or audience, expired, malformed. */
  invalid: 'invalid',
  /** The named account behind the session was removed; all its sessions and tokens are revoked. */
  accountGone: 'account_gone',
} as const;
export type RefreshFailure = (typeof RefreshFailure)[keyof typeof RefreshFailure];

export type RefreshOutcome =
  | { readonly ok: true; readonly session: IssuedSession }
  | { readonly ok: false; readonly reason: RefreshFailure; readonly userId?: string; readonly family?: string };

export type PasswordLoginOutcome =
  | { readonly ok: true; readonly session: IssuedSession; readonly account: Account }
  /** `knownName` is for the server's audit log only, never for the response. */
  | { readonly ok: false; readonly knownName: boolean };

export interface AuthService {
  /** A new invite user: a fresh user id, role `user`. */
  loginWithInvite(name: string): Promise<IssuedSession>;
  loginWithPassword(name: string, password: string): Promise<PasswordLoginOutcome>;
  /**
   * Exchanges a refresh credential for a new access token and a rotated credential. Reuse of
   * a rotated credential revokes its family and raises the user's epoch, killing the access
   * tokens the family handed out.
   */
  refresh(refreshToken: string): Promise<RefreshOutcome>;
  /** Verifies an access token (signature, claims and epoch). Rejects with UnauthorizedError. */
  authenticate(accessToken: string): Promise<Principal>;
  /** The user behind a refresh credential whose signature and claims verify, whatever its jti. */
  refreshTokenUser(refreshToken: string): Promise<string | undefined>;
  /** Revokes every session of the user and raises their epoch. */
  revokeUser(userId: string): Promise<void>;
  /** An account name (case-insensitive) or a user id the server has seen; undefined otherwise. */
  resolveUser(reference: string): Promise<string | undefined>;
}

/** Login, refresh and revocation on top of the token service and the two stores. */
export function createAuthService(deps: {
  tokens: TokenService;
  sessions: SessionStore;
  users: UserStore;
  refreshTtlSeconds: number;
  now?: () => number;
}): AuthService {
  const { tokens, sessions, users } = deps;
  const now = deps.now ?? Date.now;

  async function startSession(user: { userId?: string; name: string; role: Role }, kind: FamilyRecord['kind']): Promise<IssuedSession> {
    const access = await tokens.issueAccessToken(user);
    const expiresAt = (Math.floor(now() / 1000) + deps.refreshTtlSeconds) * 1000;
    const { userId } = access.principal;
    const { family, jti } = await sessions.startFamily(userId, expiresAt, kind);
    const token = await tokens.issueRefreshToken({ userId, name: user.name, role: user.role, family, jti, expiresAt });
    return { access, refresh: { token, expiresAt }, family };
  }

  return {
    loginWithInvite(name) {
      return startSession({ name, role: Role.user }, 'invite');
    },

    async loginWithPassword(name, password) {
      const account = await users.verify(name, password);
      if (!account) return { ok: false, knownName: (await users.find(name)) !== undefined };
      const session = await startSession({ userId: account.id, name: account.name, role: account.role }, 'account');
      return { ok: true, session, account };
    },

    async refresh(refreshToken) {
      let claims;
      try {
        claims = await tokens.verifyRefreshToken(refreshToken);
      } catch {
        return { ok: false, reason: RefreshFailure.invalid };
      }
      const { family, userId } = claims;
      const stored = sessions.get(family);
      if (stored && stored.userId !== userId) return { ok: false, reason: RefreshFailure.invalid };
      const rotated = await sessions.rotate(family, claims.jti);
      if (!rotated.ok) {
        if (rotated.reason === RefreshFailure.reused) await sessions.bumpEpoch(userId);
        return { ok: false, reason: rotated.reason, userId, family };
      }
      let user = { userId, name: claims.name, role: claims.role };
      if (rotated.session.kind === 'account') {
        // The account decides name and role now, so `parley user remove` ends its sessions.
        const account = await users.findById(userId);
        if (!account) {
          await sessions.revokeUser(userId);
          return { ok: false, reason: RefreshFailure.accountGone, userId, family };
        }
        user = { userId, name: account.name, role: account.role };
      }
      const access = await tokens.issueAccessToken(user);
      const { expiresAt } = rotated.session;
      const token = await tokens.issueRefreshToken({ ...user, family, jti: rotated.jti, expiresAt });
      return { ok: true, session: { access, refresh: { token, expiresAt }, family } };
    },

    authenticate(accessToken) {
      return tokens.verifyAccessToken(accessToken);
    },

    async refreshTokenUser(refreshToken) {
      try {
        return (await tokens.verifyRefreshToken(refreshToken)).userId;
      } catch {
        return undefined;
      }
    },

    async revokeUser(userId) {
      await sessions.revokeUser(userId);
    },

    async resolveUser(reference) {
      const account = await users.find(reference);
      if (account) return account.id;
      return sessions.knows(reference) ? reference : undefined;
    },
  };
}
