/**
 * The refresh credential travels only in this cookie: HttpOnly (page scripts cannot read it),
 * SameSite=Strict (other sites' requests do not carry it), Path=/api (static files do not get
 * it), and Secure when Parley serves TLS.
 */
export const REFRESH_COOKIE = 'parley_refresh';
export const REFRESH_COOKIE_PATH = '/api';

export function refreshCookie(value: string, maxAgeSeconds: number, secure: boolean): string {
  const attributes = [`${REFRESH_COOKIE}=${value}`, 'HttpOnly', 'SameSite=Strict', `Path=${REFRESH_COOKIE_PATH}`, `Max-Age=${Math.max(0, Math.floor(maxAgeSeconds))}`];
  if (secure) attributes.push('Secure');
  return attributes.join('; ');
}

/** A Set-Cookie value that makes the browser drop the refresh cookie. */
export function clearedRefreshCookie(secure: boolean): string {
  return refreshCookie('', 0, secure);
}

/**
 * Every value of the refresh cookie in a Cookie header, each once, in order; empty when none.
 * Transports may join repeated headers with ", ", so both separators are accepted; a JWT
 * contains neither. A browser sends more than one when another port of this host set its own
 * (cookies ignore ports); the session's binding then decides which is ours (createAuthService).
 */
export function readRefreshCookies(header: string | undefined): string[] {
  if (!header) return [];
  const values = header
    .split(/[;,]/)
    .map((part) => part.trim())
    .filter((part) => part.startsWith(`${REFRESH_COOKIE}=`))
    .map((part) => part.slice(REFRESH_COOKIE.length + 1))
    .filter((value) => value !== '');
  return [...new Set(values)];
}
