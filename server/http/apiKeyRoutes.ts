import type { Logger } from 'pino';
import { ErrorCode } from '../../shared/errorCodes.js';
import { CreateApiKeyRequest, type ApiKeyInfo, type ApiKeyListResponse, type CreateApiKeyResponse } from '../../shared/protocol.js';
import { ApiKeyStoreError, ApiKeyStoreFailure, isKeyPrefix, KeyOwnerKind, type ApiKey, type ApiKeyStore } from '../auth/ApiKeyStore.js';
import type { EpochSource, TokenService } from '../auth/createTokenService.js';
import type { Principal } from '../auth/Principal.js';
import type { UserStore } from '../auth/UserStore.js';
import { LimitRefusedError } from '../limits/LimitRefusedError.js';
import type { Limiters } from '../limits/Limiters.js';
import { BadRequestError, ConflictError, NotFoundError, ParleyError } from '../ParleyError.js';
import type { HttpRequest, HttpResponse } from '../transport/Transport.js';
import { authenticateAccessToken } from './authenticateAccessToken.js';
import { readJsonBody } from './readJsonBody.js';
import { toHttpResponse } from './toHttpResponse.js';

export interface ApiKeyRouteDeps {
  readonly tokens: TokenService;
  readonly keys: ApiKeyStore;
  readonly users: Pick<UserStore, 'findById'>;
  readonly sessions: EpochSource;
  readonly limiters: Limiters;
  readonly logger: Logger;
}

export const API_KEYS_PATH = '/api/keys';

/**
 * The signed-in user's API keys, with the bearer access token of the web page:
 * - GET    /api/keys            my live keys: name, prefix, createdAt, lastUsedAt
 * - POST   /api/keys {name}     a new key: {key, prefix, name, createdAt} (201); the key only here
 * - DELETE /api/keys/{prefix}   revoke one of mine (204)
 *
 * Invariants: only an access token manages keys (an API key cannot make more of itself);
 * another user's prefix gets the same 404 as an unknown one; requests count against the user's
 * frame rate; the key is never logged and appears in no answer but the creating one.
 */
export async function handleApiKeyRoutes(request: HttpRequest, deps: ApiKeyRouteDeps): Promise<HttpResponse> {
  try {
    const principal = await authenticateAccessToken(request, deps.tokens);
    const rate = await deps.limiters.frame(`api:${principal.userId}`);
    if (!rate.ok) throw new LimitRefusedError(rate, 'Too many requests; slow down.');
    return await dispatch(request, principal, deps);
  } catch (error) {
    if (error instanceof ParleyError) return toHttpResponse(error, error.code === ErrorCode.unauthorized ? { 'www-authenticate': 'Bearer' } : {});
    throw error;
  }
}

async function dispatch(request: HttpRequest, principal: Principal, deps: ApiKeyRouteDeps): Promise<HttpResponse> {
  const parts = request.path.slice(API_KEYS_PATH.length).split('/').filter(Boolean);
  const { method } = request;
  if (parts.length === 0) {
    if (method === 'GET' || method === 'HEAD') {
      const items = (await deps.keys.list(principal.userId)).filter((key) => key.revokedAt === undefined).map(infoOf);
      return json(200, { items } satisfies ApiKeyListResponse);
    }
    if (method === 'POST') return create(request, principal, deps);
    return methodNotAllowed('GET, POST');
  }
  if (parts.length === 1) {
    if (method !== 'DELETE') return methodNotAllowed('DELETE');
    // A prefix is base64url: nothing in it is ever percent-encoded.
    const prefix = parts[0] ?? '';
    const revoked = isKeyPrefix(prefix) ? await deps.keys.revoke(prefix, principal.userId) : undefined;
    if (!revoked) throw new NotFoundError('No such API key.');
    audit(deps, 'api_key_revoked', { user: principal.userId, prefix, ip: request.remoteAddress }, 'API key revoked');
    return { status: 204, headers: { 'cache-control': 'no-store' }, body: '' };
  }
  throw new NotFoundError('No such endpoint.');
}

async function create(request: HttpRequest, principal: Principal, deps: ApiKeyRouteDeps): Promise<HttpResponse> {
  const { name } = readJsonBody(request, CreateApiKeyRequest, '{"name": string (1-64 characters)}');
  // Whether the user is an account decides, at every use, whether the key needs the account to exist.
  const kind = (await deps.users.findById(principal.userId)) ? KeyOwnerKind.account : KeyOwnerKind.invite;
  let created: { key: string; apiKey: ApiKey };
  try {
    created = await deps.keys.create({ userId: principal.userId, kind, userName: principal.name, epoch: deps.sessions.epochOf(principal.userId) }, name);
  } catch (error) {
    if (!(error instanceof ApiKeyStoreError)) throw error;
    if (error.reason === ApiKeyStoreFailure.badName) throw new BadRequestError(error.message);
    if (error.reason === ApiKeyStoreFailure.tooManyKeys) throw new ConflictError(error.message);
    throw error;
  }
  const { key, apiKey } = created;
  audit(deps, 'api_key_created', { user: principal.userId, prefix: apiKey.prefix, ip: request.remoteAddress }, 'API key created');
  return json(201, { key, prefix: apiKey.prefix, name: apiKey.name, createdAt: apiKey.createdAt } satisfies CreateApiKeyResponse);
}

function infoOf(key: ApiKey): ApiKeyInfo {
  return { name: key.name, prefix: key.prefix, createdAt: key.createdAt, ...(key.lastUsedAt === undefined ? {} : { lastUsedAt: key.lastUsedAt }) };
}

/** Audit records: info level with an `event` field, as the sign-in routes write them. Never a key. */
function audit(deps: ApiKeyRouteDeps, event: string, fields: Record<string, unknown>, message: string): void {
  deps.logger.info({ event, ...fields }, message);
}

function methodNotAllowed(allow: string): HttpResponse {
  return toHttpResponse(new BadRequestError(`Use ${allow}.`, 405), { allow });
}

function json(status: number, value: unknown): HttpResponse {
  return { status, headers: { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' }, body: JSON.stringify(value) };
}
