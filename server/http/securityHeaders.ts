/**
 * Sent on every HTTP response. The CSP allows only same-origin scripts, styles, images and
 * WebSocket connections; no inline script or style is needed by the client.
 */
export const securityHeaders: Readonly<Record<string, string>> = Object.freeze({
  'content-security-policy': [
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
  ].join('; '),
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'permissions-policy': 'camera=(), microphone=(), geolocation=()',
});

/** One year; only sent over TLS, where the browser honours it. */
export const strictTransportSecurity = 'max-age=31536000';

/** The headers every response carries: the set above, plus HSTS when serving TLS. */
export function securityHeadersFor(options: { tls: boolean }): Readonly<Record<string, string>> {
  return Object.freeze(options.tls ? { ...securityHeaders, 'strict-transport-security': strictTransportSecurity } : { ...securityHeaders });
}
