import { LogThrottle, REFUSAL_LOG_LIMIT } from '../logging/LogThrottle.js';
import { isRedisUnreachable } from '../cluster/isRedisUnreachable.js';
import type { Logger } from 'pino';
import type * as z from 'zod/mini';
import { REFRESH_BINDING_HEADER, TokenRequest, type TokenResponse } from '../../shared/protocol.js';
import { LoginRequest, RevokeRequest, type RevokeResponse, type RotateInviteResponse } from '../../shared/protocol.js';
import { createAuthService, type AuthService, type IssuedSession } from '../auth/createAuthService.js';
import type { TokenService } from '../auth/createTokenService.js';
import type { Invite } from '../auth/loadOrCreateInvite.js';
import { Role, type Principal } from '../auth/Principal.js';
import { clearedRefreshCookie, readRefreshCookies, refreshCookie } from '../auth/refreshCookie.js';
import type { ApiKeyStore } from '../auth/ApiKeyStore.js';
import type { ApiKeyAuthenticator } from '../auth/authenticateApiKey.js';
import type { SessionStore } from '../auth/SessionStore.js';
import type { UserStore } from '../auth/UserStore.js';
import type { SignInBlocks } from '../auth/SignInBlocks.js';
import { isAccountId } from '../limits/budgetKeysOf.js';
import type { ChatCore } from '../chat/ChatCore.js';
import { LimitRefusedError } from '../limits/LimitRefusedError.js';
import { PasswordRefusal, type LimitDecision, type Limiters } from '../limits/Limiters.js';
import { BadRequestError, ForbiddenError, InternalError, NotFoundError, UnauthorizedError } from '../ParleyError.js';
import type { HttpHandler, HttpRequest, HttpResponse, HttpStreamResponse } from '../transport/Transport.js';
import type { Metrics } from '../metrics/Metrics.js';
import { authorizeMetrics, isLoopback } from './authorizeMetrics.js';
import type { StaticFile } from './loadStaticFiles.js';
import { securityHeaders } from './securityHeaders.js';
import { CONVERSATIONS_PATH, handleConversationApi } from './conversationApi.js';
import { DOCUMENTS_PATH, handleDocumentApi } from './documentApi.js';
import { handleOpenAiApi, OPENAI_PATH } from './openAiApi.js';
import { API_KEYS_PATH, handleApiKeyRoutes } from './apiKeyRoutes.js';
import { toHttpResponse } from './toHttpResponse.js';

export interface HttpDeps {
  readonly tokens: TokenService;
  readonly invite: Invite;
  readonly sessions: SessionStore;
  readonly users: UserStore;
  /** Devices and addresses of revoked invite users, refused at the next join until lifted. */
  readonly blocks: SignInBlocks;
  readonly limiters: Limiters;
  readonly refreshTtlSeconds: number;
  /**
   * Adds `Secure` to the refresh cookie; true when Parley serves TLS. A request a trusted proxy
   * says came over https (`forwardedHttps`) gets it as well.
   */
  readonly secureCookies: boolean;
  /** The user's tokens were revoked (logout, admin, refresh reuse): close their sockets. */
  readonly onRevoked: (userId: string) => void;
  readonly staticFiles: ReadonlyMap<string, StaticFile>;
  /** False on an engine node (`--role engine`): the web page's paths answer 404. True when absent. */
  readonly webPage?: boolean;
  readonly logger: Logger;
  /** Readiness for /readyz and /api/health: new work is accepted (false once shutdown begins). */
  readonly isReady: () => boolean;
  /** `--redis`: whether the gateways' shared state answers; /readyz is 503 with the reason while it does not. */
  readonly sharedState?: () => { readonly ready: boolean; readonly reason?: string };
  /** Served at /metrics to loopback peers, admin access tokens and the metrics token. */
  readonly metrics: Metrics;
  /** Bearer secret for /metrics scrapers; absent means loopback and admin tokens only. */
  readonly metricsToken: string | undefined;
  /** The chat core, whose stored conversations /api/conversations serves. */
  readonly chat: ChatCore;
  /** API keys, managed by their owner at /api/keys. */
  readonly apiKeys: ApiKeyStore;
  /** Checks `Authorization: Bearer pk-parley-…` for the OpenAI-compatible /v1 API. */
  readonly authenticateApiKey: ApiKeyAuthenticator;
}

interface Context {
  readonly deps: HttpDeps;
  readonly auth: AuthService;
  readonly request: HttpRequest;
  /** Caps log lines of refusals anyone can cause. */
  readonly refusals: LogThrottle;
  readonly ip: string;
}

type Route = (context: Context) => Promise<HttpResponse>;

/** POST routes under /api. Every one of them changes state, so none answers GET. */
const postRoutes: Readonly<Record<string, Route>> = {
  '/api/token': issueInviteToken,
  '/api/login': login,
  '/api/token/refresh': refresh,
  '/api/logout': logout,
  '/api/admin/revoke': adminRevoke,
  '/api/admin/rotate-invite': adminRotateInvite,
  '/api/admin/unblock': adminUnblock,
};

/**
 * Probe and scrape routes, at the fixed root paths that orchestrators and Prometheus expect.
 * They change nothing, so they answer GET and HEAD only.
 */
const getRoutes: Readonly<Record<string, Route>> = {
  '/healthz': liveness,
  '/readyz': readiness,
  '/metrics': scrapeMetrics,
};

/** Milliseconds a client is told to wait when the shared state failed mid-request. */
const SHARED_STATE_RETRY_MS = 1000;

/** Every HTTP route: token, login, refresh, logout and admin endpoints, health probes, metrics and the built client. */
export function createHttpHandler(deps: HttpDeps): HttpHandler {
  const auth = createAuthService({ tokens: deps.tokens, sessions: deps.sessions, users: deps.users, refreshTtlSeconds: deps.refreshTtlSeconds });
  // Refusals anyone can cause at will (a /metrics probe) are logged at most REFUSAL_LOG_LIMIT a minute.
  const refusals = new LogThrottle(REFUSAL_LOG_LIMIT);
  return async (request) => {
    try {
      const requestDeps = request.forwardedHttps === true && !deps.secureCookies ? { ...deps, secureCookies: true } : deps;
      return withSecurityHeaders(await route({ deps: requestDeps, auth, request, ip: request.remoteAddress, refusals }));
    } catch (error) {
      // Shared state (--redis) lost mid-request, after the limits passed: the same 503 the limits give while it is down.
      if (isRedisUnreachable(error)) {
        deps.logger.warn({ method: request.method, path: request.path, err: { message: (error as Error).message } }, 'shared state unreachable mid-request');
        return withSecurityHeaders(toHttpResponse(new LimitRefusedError({ ok: false, retryAfterMs: SHARED_STATE_RETRY_MS, failed: true, sharedStateUnreachable: true }, '')));
      }
      deps.logger.error({ err: error, method: request.method, path: request.path }, 'http handler failed');
      return withSecurityHeaders(toHttpResponse(new InternalError(error)));
    }
  };
}

async function route(context: Context): Promise<HttpResponse | HttpStreamResponse> {
  const { deps, request } = context;
  const post = Object.hasOwn(postRoutes, request.path) ? postRoutes[request.path] : undefined;
  if (post) {
    if (request.method !== 'POST') return toHttpResponse(new BadRequestError('Use POST.', 405), { allow: 'POST' });
    // SameSite=Strict keeps the cookie from other sites, but another port of this host is the
    // same site. Browsers label such requests, so refuse anything not from this very origin.
    const site = request.headers['sec-fetch-site'];
    if (site !== undefined && site !== 'same-origin' && site !== 'none') {
      return toHttpResponse(new ForbiddenError('Cross-site requests are not accepted.'));
    }
    return post(context);
  }
  const get = Object.hasOwn(getRoutes, request.path) ? getRoutes[request.path] : undefined;
  if (get) {
    if (request.method !== 'GET' && request.method !== 'HEAD') return useGet();
    const response = await get(context);
    return request.method === 'HEAD' ? { ...response, body: '' } : response;
  }
  if (request.path === '/api/health') {
    const ready = deps.isReady();
    // Where each model runs, so an operator can see at a glance whether the GPU is used.
    const models = deps.chat.models.list().map(({ id, loaded, runtime }) => ({ id, loaded: loaded ?? false, ...(runtime === undefined ? {} : { runtime }) }));
    return json(ready ? 200 : 503, { status: ready ? 'ok' : 'unavailable', models });
  }
  if (request.path === OPENAI_PATH || request.path.startsWith(`${OPENAI_PATH}/`)) {
    return handleOpenAiApi(request, { chat: deps.chat, authenticate: deps.authenticateApiKey, logger: deps.logger });
  }
  if (request.path === CONVERSATIONS_PATH || request.path.startsWith(`${CONVERSATIONS_PATH}/`)) {
    return handleConversationApi(request, { tokens: deps.tokens, chat: deps.chat, limiters: deps.limiters });
  }
  if (request.path === DOCUMENTS_PATH || request.path.startsWith(`${DOCUMENTS_PATH}/`)) {
    return handleDocumentApi(request, { tokens: deps.tokens, documents: deps.chat.documents, limiters: deps.limiters });
  }
  if (request.path === API_KEYS_PATH || request.path.startsWith(`${API_KEYS_PATH}/`)) {
    return handleApiKeyRoutes(request, { tokens: deps.tokens, keys: deps.apiKeys, users: deps.users, sessions: deps.sessions, limiters: deps.limiters, logger: deps.logger });
  }
  if (request.path.startsWith('/api/')) return toHttpResponse(new NotFoundError('No such endpoint.'));
  if (request.method !== 'GET' && request.method !== 'HEAD') return useGet();
  if (deps.webPage === false) return toHttpResponse(new NotFoundError('This Parley is an engine node (--role engine): it serves /v1, not the web page.'));
  return serveStatic(deps.staticFiles, request);
}

// ---- health and metrics -----------------------------------------------------

/** GET /healthz: the process is alive and serving HTTP. Stays 200 during shutdown, so a liveness probe never kills a draining server. */
async function liveness(): Promise<HttpResponse> {
  return json(200, { status: 'ok' });
}

/**
 * GET /readyz: 200 while new work is accepted; 503 from the moment shutdown begins, so balancers
 * stop sending people here, and 503 with the reason while the shared state (`--redis`) is
 * unreachable (new work is refused then), 200 again once it is back.
 */
async function readiness({ deps }: Context): Promise<HttpResponse> {
  if (!deps.isReady()) return json(503, { status: 'shutting_down' });
  const shared = deps.sharedState?.();
  if (shared !== undefined && !shared.ready) return json(503, { status: 'unavailable', reason: shared.reason ?? 'shared state unreachable' });
  return json(200, { status: 'ready' });
}

/**
 * GET /metrics: the Prometheus text exposition, for loopback peers, the metrics token and
 * admin access tokens (authorizeMetrics). A refusal is logged with the peer and status only.
 * From other machines, a presented credential that is wrong counts as a failed login of the IP,
 * and a locked-out IP gets 429 before its credential is looked at, as on the login routes; a
 * request without any credential (a scraper not yet configured) does not count.
 */
async function scrapeMetrics(context: Context): Promise<HttpResponse> {
  const { deps, request, ip } = context;
  const guessing = request.headers.authorization !== undefined && !isLoopback(ip);
  if (guessing) {
    const locked = limitRefusal(await deps.limiters.loginAllowed(ip), 'Too many failed attempts from this address; try again later.');
    if (locked) return locked;
  }
  const decision = await authorizeMetrics({ remoteAddress: ip, authorization: request.headers.authorization }, deps);
  if (!decision.ok) {
    const { error } = decision;
    if (guessing && error.httpStatus === 401) await deps.limiters.loginFailed(ip);
    const admitted = context.refusals.admit('metrics_refused');
    if (admitted.ok) audit(deps, 'metrics_refused', { ip, status: error.httpStatus, code: error.code, ...(admitted.suppressed > 0 ? { suppressed: admitted.suppressed } : {}) }, 'metrics request refused');
    return toHttpResponse(error, error.httpStatus === 401 ? { 'www-authenticate': 'Bearer' } : {});
  }
  // HEAD gets the status and headers only, so it skips collecting every metric.
  const body = request.method === 'HEAD' ? '' : await deps.metrics.render();
  return { status: 200, headers: { 'content-type': deps.metrics.contentType, 'cache-control': 'no-store' }, body };
}

// ---- logins -----------------------------------------------------------------

/** POST /api/token {invite, name}: a new invite user. */
async function issueInviteToken(context: Context): Promise<HttpResponse> {
  const { deps, auth, ip } = context;
  const refused = await admitLogin(context);
  if (refused) return refused;
  const body = readJson(context.request, TokenRequest, 'Expected {"invite": string, "name": string (1-64 characters)}.');
  if (!body.ok) return body.response;
  if (!deps.invite.matches(body.value.invite)) {
    await loginFailed(context, [ip], { method: 'invite' });
    return toHttpResponse(new UnauthorizedError('Wrong invite code.'));
  }
  await deps.limiters.loginSucceeded(ip);
  // A revoked invite user's devices and addresses stay out until an admin lifts the block;
  // before the identity count, so a refused join costs the address nothing.
  await deps.blocks.sync();
  if (deps.blocks.isBlocked(body.value.device, ip)) {
    audit(deps, 'join_blocked', { ip }, 'join refused: device or address blocked by an admin');
    return toHttpResponse(new ForbiddenError('An admin has blocked joins from this device or address.'));
  }
  // Every invite login is a new user with fresh per-user budgets; the budgets that must hold
  // for the person are charged to the IP as well (budgetKeysOf), and this caps how many
  // identities one address can collect. Counted only once the invite was right.
  const identities = limitRefusal(await deps.limiters.inviteUser(ip), 'Too many new users from this address; keep using the one you have, or try again later.');
  if (identities) return identities;
  const session = await auth.loginWithInvite(body.value.name.trim() || 'guest');
  audit(deps, 'login', { user: session.access.principal.userId, role: session.access.principal.role, method: 'invite', family: session.family, ip }, 'login with invite');
  try {
    await deps.blocks.recordJoin(session.access.principal.userId, body.value.device, ip);
  } catch (error) {
    // The join stands; only a later revocation could not block this device and address.
    deps.logger.error({ err: error, user: session.access.principal.userId }, 'could not record the join in blocks.json');
  }
  return sessionResponse(deps, session);
}

/** POST /api/login {name, password}: a named account. */
async function login(context: Context): Promise<HttpResponse> {
  const { deps, auth, ip } = context;
  const refused = await admitLogin(context);
  if (refused) return refused;
  const body = readJson(context.request, LoginRequest, 'Expected {"name": string, "password": string}.');
  if (!body.ok) return body.response;
  // Wrong guesses lock the (address, account) pair and only slow the account down, so a
  // stranger cannot lock the owner out from another address (Limiters.passwordAttempt).
  const account = body.value.name.toLowerCase();
  const attempt = await deps.limiters.passwordAttempt(ip, account);
  if (!attempt.ok) {
    const message =
      attempt.reason === PasswordRefusal.slowedDown
        ? 'This account has had many failed sign-ins; try again shortly.'
        : 'Too many failed attempts for this account from this address; try again later.';
    return toHttpResponse(new LimitRefusedError(attempt, message));
  }
  const outcome = await auth.loginWithPassword(body.value.name, body.value.password);
  if (!outcome.ok) {
    if (outcome.blocked) {
      audit(deps, 'login_blocked', { method: 'password', account: body.value.name, ip }, 'sign-in refused: account blocked by an admin');
      return toHttpResponse(new ForbiddenError('An admin has blocked this account.'));
    }
    // The name is logged only when it is an account: a password typed into the name field stays out of the log.
    const details = { method: 'password', account: outcome.knownName ? body.value.name : undefined };
    await loginFailed(context, [ip], details);
    const counted = await deps.limiters.passwordFailed(ip, account);
    if (counted.pairLocked) audit(deps, 'lockout', { key: 'pair', ...details, ip }, 'login locked out for this account from this address');
    if (counted.slowdownBegan) audit(deps, 'login_slowdown', { ...details, ip }, 'account slowed down after many failed sign-ins');
    return toHttpResponse(new UnauthorizedError('Wrong name or password.'));
  }
  await deps.limiters.loginSucceeded(ip);
  await deps.limiters.passwordSucceeded(ip, account);
  const { principal } = outcome.session.access;
  audit(deps, 'login', { user: principal.userId, role: principal.role, method: 'password', account: outcome.account.name, family: outcome.session.family, ip }, 'login with password');
  return sessionResponse(deps, outcome.session);
}

/**
 * Per-IP limits that come before any credential is looked at: token requests per minute,
 * then the brute-force lockout, so a locked-out address is refused even with the right secret.
 */
async function admitLogin(context: Context): Promise<HttpResponse | undefined> {
  const { deps, ip } = context;
  return (
    limitRefusal(await deps.limiters.tokenRequest(ip), 'Too many token requests; try again later.') ??
    limitRefusal(await deps.limiters.loginAllowed(ip), 'Too many failed attempts from this address; try again later.')
  );
}

/** Counts a wrong invite or password against each key and records a lockout when one begins. */
async function loginFailed(context: Context, keys: readonly string[], details: Record<string, unknown>): Promise<void> {
  const { deps, ip } = context;
  audit(deps, 'login_failed', { ...details, ip }, 'login failed');
  for (const key of keys) {
    await deps.limiters.loginFailed(key);
    // While locked, requests are refused before reaching here, so this fires once per lockout.
    const now = await deps.limiters.loginAllowed(key);
    if (!now.ok && !now.failed) audit(deps, 'lockout', { key: key === ip ? 'ip' : 'account', ...details, ip, retryAfterMs: now.retryAfterMs }, 'login locked out');
  }
}

// ---- refresh and logout -----------------------------------------------------

/**
 * POST /api/token/refresh: the cookie and the session's binding value (a header the page sends
 * from its own storage); rotates the cookie and returns a new access token.
 */
async function refresh(context: Context): Promise<HttpResponse> {
  const { deps, auth, ip } = context;
  const limited = limitRefusal(await deps.limiters.tokenRequest(ip), 'Too many token requests; try again later.');
  if (limited) return limited;
  const cookies = readRefreshCookies(context.request.headers.cookie);
  if (cookies.length === 0) return unauthorizedClearingCookie(deps, 'No refresh credential.');
  const outcome = await auth.refresh(cookies, readBinding(context.request));
  if (!outcome.ok) {
    if (outcome.reason === 'reused') {
      audit(deps, 'refresh_reuse_detected', { user: outcome.userId, family: outcome.family, ip }, 'a rotated refresh credential came back: session revoked');
      if (outcome.userId !== undefined) deps.onRevoked(outcome.userId);
    } else if (outcome.reason === 'account_gone') {
      audit(deps, 'revoked', { user: outcome.userId, reason: 'account removed', family: outcome.family, ip }, 'account removed: sessions revoked');
      if (outcome.userId !== undefined) deps.onRevoked(outcome.userId);
    } else {
      audit(deps, 'refresh_refused', { reason: outcome.reason, user: outcome.userId, family: outcome.family, ip }, 'refresh refused');
    }
    return unauthorizedClearingCookie(deps, 'The refresh credential is invalid, expired or revoked. Sign in again.');
  }
  const { principal } = outcome.session.access;
  audit(deps, 'token_refreshed', { user: principal.userId, role: principal.role, family: outcome.session.family, ip }, 'token refreshed');
  return sessionResponse(deps, outcome.session);
}

/**
 * POST /api/logout, with the refresh cookie (and its binding value), a bearer access token, or
 * both. Ends every session of the user behind them, kills their live access tokens and closes
 * their sockets. Limited per IP before any credential is looked at; a cookie counts only while
 * it could still refresh (a rotated, revoked or unbound one signs no one out).
 */
async function logout(context: Context): Promise<HttpResponse> {
  const { deps, auth, ip, request } = context;
  const limited = limitRefusal(await deps.limiters.logout(ip), 'Too many logout requests; try again later.');
  if (limited) return limited;
  const userIds = new Set<string>();
  const cookies = readRefreshCookies(request.headers.cookie);
  if (cookies.length > 0) {
    const userId = await auth.sessionUser(cookies, readBinding(request));
    if (userId !== undefined) userIds.add(userId);
  }
  const bearer = readBearer(request);
  if (bearer) {
    const principal = await auth.authenticate(bearer).catch(() => undefined);
    if (principal) userIds.add(principal.userId);
  }
  if (userIds.size === 0) return unauthorizedClearingCookie(deps, 'Nothing to sign out: no valid credential.');
  for (const userId of userIds) {
    await auth.revokeUser(userId);
    audit(deps, 'logout', { user: userId, ip }, 'logout');
    deps.onRevoked(userId);
  }
  return json(200, { ok: true }, { 'set-cookie': clearedRefreshCookie(deps.secureCookies) });
}

// ---- admin ------------------------------------------------------------------

/**
 * POST /api/admin/revoke {user}: ends every session and token of a user (account name or id),
 * and keeps them out: an account is blocked from signing in, an invite user's devices and
 * addresses from joining, until an admin lifts it (/api/admin/unblock). Blocked first, so no
 * sign-in slips in between.
 */
async function adminRevoke(context: Context): Promise<HttpResponse> {
  const { deps, auth, ip } = context;
  const admin = await requireAdmin(context);
  if (!admin.ok) return admin.response;
  const body = readJson(context.request, RevokeRequest, 'Expected {"user": account name or user id}.');
  if (!body.ok) return body.response;
  const userId = await auth.resolveUser(body.value.user);
  if (userId === undefined) return toHttpResponse(new NotFoundError('No such user.'));
  const blocked = isAccountId(userId)
    ? { account: (await deps.users.setBlocked(userId, true)) !== undefined }
    : await deps.blocks.block(userId).then(({ devices, addresses }) => ({ devices, addresses: addresses.length }));
  await auth.revokeUser(userId);
  audit(deps, 'revoked', { user: userId, by: admin.principal.userId, ip, blocked }, 'user revoked by an admin');
  deps.onRevoked(userId);
  const response: RevokeResponse = { user: userId };
  return json(200, response);
}

/** POST /api/admin/rotate-invite: a new invite code; the old one stops working at once. */
async function adminRotateInvite(context: Context): Promise<HttpResponse> {
  const { deps, ip } = context;
  const admin = await requireAdmin(context);
  if (!admin.ok) return admin.response;
  // A pinned code (--invite) is rotated too, and stays replaced across restarts until --invite
  // names another code (loadOrCreateInvite): the complete way to cut off an invite holder.
  const invite = await deps.invite.rotate();
  audit(deps, 'invite_rotated', { by: admin.principal.userId, ip, pinned: deps.invite.pinned }, 'invite rotated');
  const response: RotateInviteResponse = { invite };
  return json(200, response);
}

/**
 * POST /api/admin/unblock {user}: lifts the block a revocation put on an account (name or id)
 * or on an invite user's devices and addresses (user id). Unknown, or nothing blocked: 404.
 */
async function adminUnblock(context: Context): Promise<HttpResponse> {
  const { deps, ip } = context;
  const admin = await requireAdmin(context);
  if (!admin.ok) return admin.response;
  const body = readJson(context.request, RevokeRequest, 'Expected {"user": account name or user id}.');
  if (!body.ok) return body.response;
  const reference = body.value.user;
  let userId = (await deps.users.setBlocked(reference, false))?.id;
  if (userId === undefined && (await deps.blocks.unblock(reference))) userId = reference;
  if (userId === undefined) return toHttpResponse(new NotFoundError('No such account, and no blocked user with that id.'));
  audit(deps, 'unblocked', { user: userId, by: admin.principal.userId, ip }, 'block lifted by an admin');
  const response: RevokeResponse = { user: userId };
  return json(200, response);
}

async function requireAdmin(context: Context): Promise<{ ok: true; principal: Principal } | { ok: false; response: HttpResponse }> {
  const bearer = readBearer(context.request);
  const principal = bearer ? await context.auth.authenticate(bearer).catch(() => undefined) : undefined;
  if (!principal) {
    return { ok: false, response: toHttpResponse(new UnauthorizedError(), { 'www-authenticate': 'Bearer' }) };
  }
  if (principal.role !== Role.admin) {
    return { ok: false, response: toHttpResponse(new ForbiddenError('This needs an admin account.')) };
  }
  return { ok: true, principal };
}

// ---- helpers ----------------------------------------------------------------

/** The access token and the rotated refresh cookie of a login or refresh. */
function sessionResponse(deps: HttpDeps, session: IssuedSession): HttpResponse {
  const body: TokenResponse = { token: session.access.token, expiresAt: session.access.expiresAt, ...(session.binding === undefined ? {} : { refreshBinding: session.binding }) };
  const maxAge = (session.refresh.expiresAt - Date.now()) / 1000;
  return json(200, body, { 'set-cookie': refreshCookie(session.refresh.token, maxAge, deps.secureCookies) });
}

function unauthorizedClearingCookie(deps: HttpDeps, message: string): HttpResponse {
  return toHttpResponse(new UnauthorizedError(message), { 'set-cookie': clearedRefreshCookie(deps.secureCookies) });
}

/** 429 for a limit, 503 when the limiter itself failed (fail closed); undefined when allowed. */
function limitRefusal(decision: LimitDecision, message: string): HttpResponse | undefined {
  return decision.ok ? undefined : toHttpResponse(new LimitRefusedError(decision, message));
}

function useGet(): HttpResponse {
  return toHttpResponse(new BadRequestError('Use GET.', 405), { allow: 'GET, HEAD' });
}

function readJson<T>(request: HttpRequest, schema: z.ZodMiniType<T>, expected: string): { ok: true; value: T } | { ok: false; response: HttpResponse } {
  const type = request.headers['content-type'] ?? '';
  if (!type.toLowerCase().startsWith('application/json')) {
    return { ok: false, response: toHttpResponse(new BadRequestError('Send application/json.', 415)) };
  }
  let body: unknown;
  try {
    body = JSON.parse(request.body.toString('utf8'));
  } catch {
    return { ok: false, response: toHttpResponse(new BadRequestError('Body is not valid JSON.')) };
  }
  const parsed = schema.safeParse(body);
  if (!parsed.success) return { ok: false, response: toHttpResponse(new BadRequestError(expected)) };
  return { ok: true, value: parsed.data };
}

/** The session's binding value from its header; never logged. */
function readBinding(request: HttpRequest): string | undefined {
  const value = request.headers[REFRESH_BINDING_HEADER];
  return value && value.length <= 128 ? value : undefined;
}

function readBearer(request: HttpRequest): string | undefined {
  const match = /^Bearer\s+([A-Za-z0-9_.-]+)\s*$/i.exec(request.headers.authorization ?? '');
  return match?.[1];
}

/** Audit records: info level with an `event` field. Never a token, cookie, password or invite. */
function audit(deps: HttpDeps, event: string, fields: Record<string, unknown>, message: string): void {
  deps.logger.info({ event, ...fields }, message);
}

function serveStatic(files: ReadonlyMap<string, StaticFile>, request: HttpRequest): HttpResponse {
  const path = request.path === '/' ? '/index.html' : request.path;
  // Unknown non-asset paths get the app shell, so client-side routes survive a reload.
  const file = files.get(path) ?? (path.startsWith('/assets/') ? undefined : files.get('/index.html'));
  if (!file) {
    if (files.size === 0) {
      return text(503, 'The web client is not built. Run: npm run build:client');
    }
    return text(404, 'Not found.');
  }
  const headers: Record<string, string> = {
    'content-type': file.contentType,
    etag: file.etag,
    'cache-control': file.immutable ? 'public, max-age=31536000, immutable' : 'no-cache',
  };
  if (request.headers['if-none-match'] === file.etag) return { status: 304, headers, body: '' };
  return { status: 200, headers, body: request.method === 'HEAD' ? '' : file.body };
}

function json(status: number, value: unknown, extra: Record<string, string> = {}): HttpResponse {
  return {
    status,
    headers: { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', ...extra },
    body: JSON.stringify(value),
  };
}

function text(status: number, body: string): HttpResponse {
  return { status, headers: { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' }, body };
}

function withSecurityHeaders<T extends HttpResponse | HttpStreamResponse>(response: T): T {
  return { ...response, headers: { ...securityHeaders, ...response.headers } };
}
