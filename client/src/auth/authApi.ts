import { ErrorCode } from '../../../shared/errorCodes.js';
import { REFRESH_BINDING_HEADER, TokenResponse } from '../../../shared/protocol.js';
import { formatWait } from '../util/describeError.js';
import { deviceId } from './deviceId.js';

/** A refused or failed auth request, with a message for people. */
export class AuthError extends Error {
  override name = 'AuthError';
  constructor(
    message: string,
    /** HTTP status; 0 when the server could not be reached. */
    readonly status: number,
    readonly code: string,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

/** A token, and how far the server's clock is ahead of this device's (from the `Date` header). */
export interface Issued {
  /** The access token and its expiry (never the binding: this is what tabs share and keep in memory). */
  readonly token: TokenResponse;
  readonly clockSkewMs: number | undefined;
  /** On a sign-in: the session's binding value, to keep and send with every refresh and logout. */
  readonly binding?: string;
}

/** POST /api/token: join with the invite. The response also sets the refresh cookie. */
export async function requestToken(invite: string, name: string): Promise<Issued> {
  const device = deviceId();
  return tokenRequest('/api/token', { invite, name, ...(device === undefined ? {} : { device }) });
}

/**
 * POST /api/token/refresh: the cookie and the session's binding value (the cookie alone
 * refreshes nothing: another port of this host could have set it); rotates the cookie.
 */
export async function refreshToken(binding: string | undefined): Promise<Issued> {
  return tokenRequest('/api/token/refresh', undefined, binding);
}

/** POST /api/logout: revokes the cookie and every live token of the user; their sockets close with 4403. */
export async function logout(token: string | undefined, binding: string | undefined): Promise<void> {
  const headers: Record<string, string> = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (binding) headers[REFRESH_BINDING_HEADER] = binding;
  try {
    await fetch('/api/logout', { method: 'POST', credentials: 'same-origin', headers });
  } catch {
    // Signing out locally still happens; the cookie expires on its own.
  }
}

async function tokenRequest(path: string, body?: unknown, binding?: string): Promise<Issued> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (binding) headers[REFRESH_BINDING_HEADER] = binding;
  let response: Response;
  try {
    response = await fetch(path, {
      method: 'POST',
      credentials: 'same-origin',
      cache: 'no-store',
      headers,
      body: body === undefined ? null : JSON.stringify(body),
    });
  } catch {
    throw new AuthError('Cannot reach the Parley server.', 0, 'unreachable');
  }
  let payload: unknown;
  try {
    payload = await response.json();
  } catch {
    payload = undefined;
  }
  if (response.ok) {
    const parsed = TokenResponse.safeParse(payload);
    const serverDate = Date.parse(response.headers.get('date') ?? '');
    if (parsed.success) {
      const { refreshBinding, ...token } = parsed.data;
      return { token, clockSkewMs: Number.isNaN(serverDate) ? undefined : serverDate - Date.now(), ...(refreshBinding === undefined ? {} : { binding: refreshBinding }) };
    }
    throw new AuthError('The server sent an unexpected answer.', response.status, ErrorCode.internal);
  }
  const error = (payload ?? {}) as { code?: unknown; message?: unknown; retryAfterMs?: unknown };
  const code = typeof error.code === 'string' ? error.code : `http_${response.status}`;
  const retryAfterMs = typeof error.retryAfterMs === 'number' ? error.retryAfterMs : undefined;
  throw new AuthError(messageFor(response.status, code, retryAfterMs, error.message), response.status, code, retryAfterMs);
}

function messageFor(status: number, code: string, retryAfterMs: number | undefined, serverMessage: unknown): string {
  if (code === ErrorCode.rateLimited || status === 429) {
    return `Too many attempts. Try again in ${formatWait(retryAfterMs ?? 60_000)}.`;
  }
  if (status === 401) return typeof serverMessage === 'string' && serverMessage ? serverMessage : 'Not signed in.';
  // 403s: a refused origin, or a device, address or account an admin blocked; the server says which.
  if (status === 403) return typeof serverMessage === 'string' && serverMessage ? serverMessage : 'This server does not accept requests from this address.';
  if (status === 404) return 'This server does not support that.';
  if (status === 400) return 'Pick a name of 1 to 64 characters.';
  return typeof serverMessage === 'string' && serverMessage ? serverMessage : `The server answered ${status}.`;
}
