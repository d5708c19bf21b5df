import type { IssuedToken, RefreshClaims, TokenService } from './createTokenService.js';
import { Role, type Principal } from './Principal.js';
import { newBinding, RefreshRefusal, type FamilyRecord, type SessionStore } from './SessionStore.js';
import type { Account, UserStore } from './UserStore.js';

/** What a login or a refresh hands out: an access token, and the refresh credential for the cookie. */
export interface IssuedSession {
  readonly access: IssuedToken;
  readonly refresh: { readonly token: string; readonly expiresAt: number };
  /** Family id of the session, for audit records. */
  readonly family: string;
  /**
   * On sign-in only: the session's binding value. The page keeps it (its own storage is per
   * origin, port included, unlike cookies) and sends it with every refresh and logout.
   */
  readonly binding?: string;
}

/** At most this many refresh cookies of one request are looked at (another port of the host may have added some). */
const MAX_REFRESH_COOKIES = 4;

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
  /**
   * `knownName` is for the server's audit log only, never for the response. `blocked`: the
   * password was right, but an admin's revocation blocks the account (UserStore.setBlocked).
   */
  | { readonly ok: false; readonly knownName: boolean; readonly blocked?: true };

export interface AuthService {
  /** A new invite user: a fresh user id, role `user`. */
  loginWithInvite(name: string): Promise<IssuedSession>;
  loginWithPassword(name: string, password: string): Promise<PasswordLoginOutcome>;
  /**
   * Exchanges a refresh credential and the session's binding value for a new access token and
   * a rotated credential. Reuse of a rotated credential revokes its family and raises the
   * user's epoch, killing the access tokens the family handed out. `cookies` are the refresh
   * cookies the request carried: with more than one, only the one bound to `binding` is used.
   */
  refresh(cookies: readonly string[], binding: string | undefined): Promise<RefreshOutcome>;
  /** Verifies an access token (signature, claims and epoch). Rejects with UnauthorizedError. */
  authenticate(accessToken: string): Promise<Principal>;
  /**
   * The user behind a refresh credential that could refresh right now (a live session, its
   * current jti or the one just replaced within the grace window, with the binding); undefined
   * for any other, however good its signature.
   */
  sessionUser(cookies: readonly string[], binding: string | undefined): Promise<string | undefined>;
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
  /** For tests: awaited between a refresh's rotation and its token's issue, where a revocation can land. */
  afterRotate?: (family: string) => Promise<void>;
}): AuthService {
  const { tokens, sessions, users } = deps;
  const now = deps.now ?? Date.now;

  async function startSession(user: { userId?: string; name: string; role: Role }, kind: FamilyRecord['kind']): Promise<IssuedSession> {
    const access = await tokens.issueAccessToken(user);
    const expiresAt = (Math.floor(now() / 1000) + deps.refreshTtlSeconds) * 1000;
    const { userId } = access.principal;
    const binding = newBinding();
    const { family, jti } = await sessions.startFamily(userId, expiresAt, kind, binding);
    const token = await tokens.issueRefreshToken({ userId, name: user.name, role: user.role, family, jti, expiresAt });
    return { access, refresh: { token, expiresAt }, family, binding };
  }

  /**
   * The claims of the cookie to use: the only one that verifies, or, when a request carries
   * several that verify (another port of this host set its own: cookies ignore ports), the only
   * one bound to `binding`. Undefined when there is none, or no way to choose.
   */
  async function chooseCookie(cookies: readonly string[], binding: string | undefined): Promise<RefreshClaims | undefined> {
    const verified: RefreshClaims[] = [];
    for (const cookie of cookies.slice(0, MAX_REFRESH_COOKIES)) {
      try {
        verified.push(await tokens.verifyRefreshToken(cookie));
      } catch {
        // Not a credential of this server.
      }
    }
    // Shared families (--redis): the session may have begun, rotated or ended on another gateway.
    await Promise.all(verified.map((claims) => sessions.sync(claims.family)));
    if (verified.length <= 1) return verified[0];
    const bound = verified.filter((claims) => sessions.isBound(claims.family, binding));
    return bound.length === 1 ? bound[0] : undefined;
  }

  return {
    loginWithInvite(name) {
      return startSession({ name, role: Role.user }, 'invite');
    },

    async loginWithPassword(name, password) {
      const account = await users.verify(name, password);
      if (!account) return { ok: false, knownName: (await users.find(name)) !== undefined };
      if (account.blocked) return { ok: false, knownName: true, blocked: true };
      const session = await startSession({ userId: account.id, name: account.name, role: account.role }, 'account');
      return { ok: true, session, account };
    },

    async refresh(cookies, binding) {
      const claims = await chooseCookie(cookies, binding);
      if (!claims) return { ok: false, reason: RefreshFailure.invalid };
      const { family, userId } = claims;
      const stored = sessions.get(family);
      if (stored && stored.userId !== userId) return { ok: false, reason: RefreshFailure.invalid };
      // Read in the same tick as rotate's checks: a revocation from here on raises the epoch
      // above the one the new access token carries, so that token is born dead.
      const epoch = sessions.epochOf(userId);
      const rotated = await sessions.rotate(family, claims.jti, binding);
      if (!rotated.ok) {
        if (rotated.reason === RefreshFailure.reused) await sessions.bumpEpoch(userId);
        return { ok: false, reason: rotated.reason, userId, family };
      }
      await deps.afterRotate?.(family);
      let user = { userId, name: claims.name, role: claims.role };
      if (rotated.session.kind === 'account') {
        // The account decides name and role now, so `parley user remove` ends its sessions.
        const account = await users.findById(userId);
        // A blocked account's sessions were revoked with the block; one that slipped past ends here.
        if (!account || account.blocked) {
          await sessions.revokeUser(userId);
          return { ok: false, reason: RefreshFailure.accountGone, userId, family };
        }
        user = { userId, name: account.name, role: account.role };
      }
      // Revoked while this refresh was working (logout, an admin, reuse elsewhere): nothing to hand out.
      await sessions.sync(family);
      if (!sessions.isLive(family) || sessions.epochOf(userId) !== epoch) return { ok: false, reason: RefreshFailure.revoked, userId, family };
      const access = await tokens.issueAccessToken(user, { epoch });
      const { expiresAt } = rotated.session;
      const token = await tokens.issueRefreshToken({ ...user, family, jti: rotated.jti, expiresAt });
      return { ok: true, session: { access, refresh: { token, expiresAt }, family } };
    },

    authenticate(accessToken) {
      return tokens.verifyAccessToken(accessToken);
    },

    async sessionUser(cookies, binding) {
      const claims = await chooseCookie(cookies, binding);
      if (!claims) return undefined;
      const stored = sessions.get(claims.family);
      if (stored?.userId !== claims.userId) return undefined;
      return sessions.isCurrent(claims.family, claims.jti, binding) ? claims.userId : undefined;
    },

    async revokeUser(userId) {
      await sessions.revokeUser(userId);
    },

    async resolveUser(reference) {
      const account = await users.find(reference);
      if (account) return account.id;
      return (await sessions.isKnown(reference)) ? reference : undefined;
    },
  };
}
