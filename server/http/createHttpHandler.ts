import type { Logger } from 'pino';
import { ErrorCode } from '../../shared/errorCodes.js';
import { TokenRequest, type TokenResponse } from '../../shared/protocol.js';
import type { TokenService } from '../auth/createTokenService.js';
import type { Invite } from '../auth/loadOrCreateInvite.js';
import type { HttpHandler, HttpRequest, HttpResponse } from '../transport/Transport.js';
import type { StaticFile } from './loadStaticFiles.js';
import { securityHeaders } from './securityHeaders.js';

export interface HttpDeps {
  readonly tokens: TokenService;
  readonly invite: Invite;
  readonly staticFiles: ReadonlyMap<string, StaticFile>;
  readonly logger: Logger;
  /** Readiness for /api/health: the model is loaded and new work is accepted. */
  readonly isReady: () => boolean;
}

/** Every HTTP route: the token endpoint, a health probe and the built client. */
export function createHttpHandler(deps: HttpDeps): HttpHandler {
  return async (request) => {
    try {
      return withSecurityHeaders(await route(deps, request));
    } catch (error) {
      deps.logger.error({ err: error, method: request.method, path: request.path }, 'http handler failed');
      return withSecurityHeaders(json(500, { code: ErrorCode.internal, message: 'Internal error.' }));
    }
  };
}

async function route(deps: HttpDeps, request: HttpRequest): Promise<HttpResponse> {
  if (request.path === '/api/token') {
    if (request.method !== 'POST') return json(405, { code: ErrorCode.badRequest, message: 'Use POST.' }, { allow: 'POST' });
    return issueToken(deps, request);
  }
  if (request.path === '/api/health') {
    const ready = deps.isReady();
    return json(ready ? 200 : 503, { status: ready ? 'ok' : 'unavailable' });
  }
  if (request.path.startsWith('/api/')) return json(404, { code: ErrorCode.notFound, message: 'No such endpoint.' });
  if (request.method !== 'GET' && request.method !== 'HEAD') {
    return json(405, { code: ErrorCode.badRequest, message: 'Use GET.' }, { allow: 'GET, HEAD' });
  }
  return serveStatic(deps.staticFiles, request);
}

async function issueToken(deps: HttpDeps, request: HttpRequest): Promise<HttpResponse> {
  const type = request.headers['content-type'] ?? '';
  if (!type.toLowerCase().startsWith('application/json')) {
    return json(415, { code: ErrorCode.badRequest, message: 'Send application/json.' });
  }
  let body: unknown;
  try {
    body = JSON.parse(request.body.toString('utf8'));
  } catch {
    return json(400, { code: ErrorCode.badRequest, message: 'Body is not valid JSON.' });
  }
  const parsed = TokenRequest.safeParse(body);
  if (!parsed.success) {
    return json(400, { code: ErrorCode.badRequest, message: 'Expected {"invite": string, "name": string (1-64 characters)}.' });
  }
  if (!deps.invite.matches(parsed.data.invite)) {
    deps.logger.info({ event: 'login_failed', ip: request.remoteAddress }, 'wrong invite code');
    return json(401, { code: ErrorCode.unauthorized, message: 'Wrong invite code.' });
  }
  const issued = await deps.tokens.issueAccessToken({ name: parsed.data.name.trim() || 'guest' });
  deps.logger.info({ event: 'login', user: issued.principal.userId, ip: request.remoteAddress }, 'token issued');
  const response: TokenResponse = { token: issued.token, expiresAt: issued.expiresAt };
  return json(200, response);
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

function withSecurityHeaders(response: HttpResponse): HttpResponse {
  return { ...response, headers: { ...securityHeaders, ...response.headers } };
}
