import type { Logger } from 'pino';
import { LimitRefusedError } from '../limits/LimitRefusedError.js';
import type { Limiters } from '../limits/Limiters.js';
import { UnauthorizedError } from '../ParleyError.js';
import type { HttpRequest } from '../transport/Transport.js';
import { KeyOwnerKind, type ApiKey, type ApiKeyStore } from './ApiKeyStore.js';
import type { EpochSource } from './createTokenService.js';
import { Role, type Principal } from './Principal.js';
import type { UserStore } from './UserStore.js';

/** The principal behind an API key: its user, plus which key it was (for logs; not secret). */
export interface ApiKeyPrincipal extends Principal {
  readonly keyPrefix: string;
}

/** Resolves the key in `Authorization: Bearer <key>`, or rejects with UnauthorizedError or LimitRefusedError. */
export type ApiKeyAuthenticator = (request: HttpRequest) => Promise<ApiKeyPrincipal>;

export interface ApiKeyAuthenticatorDeps {
  readonly keys: ApiKeyStore;
  readonly users: Pick<UserStore, 'findById'>;
  /** The user's revocation epoch (the server's SessionStore). */
  readonly sessions: EpochSource;
  readonly limiters: Pick<Limiters, 'loginAllowed' | 'loginFailed'>;
  readonly logger: Logger;
  readonly now?: () => number;
}

/**
 * A key does not expire, so `expiresAt` only says how long this one request may rely on the
 * principal: a day, which keeps timers derived from it inside setTimeout's range.
 */
export const API_KEY_PRINCIPAL_TTL_MS = 24 * 3600_000;

/** Longest Authorization header looked at; a key with its scheme is 60 characters. */
const MAX_AUTHORIZATION_LENGTH = 512;

/** Why a presented key was refused: for the log only; every one gets the same 401. */
const Refusal = {
  malformed: 'malformed',
  unknown: 'unknown',
  revoked: 'revoked',
  accountRemoved: 'account_removed',
  userRevoked: 'user_revoked',
} as const;
type Refusal = (typeof Refusal)[keyof typeof Refusal];

/**
 * Authenticates the OpenAI-compatible API's requests by API key.
 *
 * Order, cheapest first: the IP's sign-in lockout (429, before the credential is looked at, so a
 * locked-out address is refused even with a good key); then the key; then its user, read now:
 * a removed account, or a logout or admin revocation after the key was made (the user's epoch
 * went up), ends it at once, and the store marks the user's keys revoked for good.
 *
 * A presented key that is wrong, revoked or orphaned counts as a failed sign-in of the IP,
 * exactly like a wrong password; a request without any credential does not count. A good key
 * does not reset the count, so one valid key cannot cover for guessing. Refusals are logged as
 * `api_key_refused` with the IP, and the prefix only of a key that exists; never the key.
 */
export function createApiKeyAuthenticator(deps: ApiKeyAuthenticatorDeps): ApiKeyAuthenticator {
  const { keys, users, sessions, limiters, logger } = deps;
  const now = deps.now ?? Date.now;

  async function refuse(ip: string, reason: Refusal, key?: ApiKey): Promise<never> {
    logger.info({ event: 'api_key_refused', ip, reason, ...(key ? { prefix: key.prefix, user: key.userId } : {}) }, 'API key refused');
    await limiters.loginFailed(ip);
    // While locked, requests are refused before reaching here, so this fires once per lockout.
    const after = await limiters.loginAllowed(ip);
    if (!after.ok && !after.failed) logger.info({ event: 'lockout', key: 'ip', method: 'api_key', ip, retryAfterMs: after.retryAfterMs }, 'login locked out');
    throw new UnauthorizedError('Invalid API key.');
  }

  return async (request) => {
    const ip = request.remoteAddress;
    const allowed = await limiters.loginAllowed(ip);
    if (!allowed.ok) throw new LimitRefusedError(allowed, 'Too many failed attempts from this address; try again later.');
    const header = request.headers.authorization;
    if (header === undefined || header.trim() === '') {
      logger.info({ event: 'api_key_refused', ip, reason: 'missing' }, 'API key refused');
      throw new UnauthorizedError('Send an API key: Authorization: Bearer pk-parley-….');
    }
    const match = header.length <= MAX_AUTHORIZATION_LENGTH ? /^Bearer +(\S+) *$/i.exec(header) : null;
    if (!match?.[1]) return refuse(ip, Refusal.malformed);
    const key = await keys.find(match[1]);
    if (!key) return refuse(ip, Refusal.unknown);
    if (key.revokedAt !== undefined) return refuse(ip, Refusal.revoked, key);

    let name = key.userName;
    let role: Role = Role.user;
    if (key.kind === KeyOwnerKind.account) {
      const account = await users.findById(key.userId);
      if (!account) {
        await revokeAll(key.userId, undefined);
        return refuse(ip, Refusal.accountRemoved, key);
      }
      ({ name, role } = account);
    }
    const epoch = sessions.epochOf(key.userId);
    if (epoch > key.epoch) {
      // Epochs are forgotten a day after the bump (SessionStore); the revocation must not be.
      await revokeAll(key.userId, epoch);
      return refuse(ip, Refusal.userRevoked, key);
    }

    // A failed last-used write must not refuse a good key.
    await keys.markUsed(key.prefix).catch((error: unknown) => logger.warn({ err: error, prefix: key.prefix }, 'could not record an API key use'));
    return { userId: key.userId, name, role, expiresAt: now() + API_KEY_PRINCIPAL_TTL_MS, keyPrefix: key.prefix };
  };

  async function revokeAll(userId: string, belowEpoch: number | undefined): Promise<void> {
    try {
      const count = await keys.revokeUser(userId, belowEpoch === undefined ? {} : { belowEpoch });
      if (count > 0) logger.info({ event: 'api_keys_revoked', user: userId, count, reason: belowEpoch === undefined ? 'account removed' : 'user revoked' }, 'API keys revoked');
    } catch (error) {
      // The refusal stands either way: the check above runs on every request.
      logger.error({ err: error, user: userId }, 'could not mark API keys revoked');
    }
  }
}
