import { normaliseOrigin } from './normaliseOrigin.js';

/** Why a request was refused: its Host (DNS rebinding) or its Origin (cross-site use). */
export const Refusal = { host: 'host', origin: 'origin' } as const;
export type Refusal = (typeof Refusal)[keyof typeof Refusal];

export interface OriginPolicyOptions {
  /** The port actually listened on. */
  readonly port: number;
  readonly tls: boolean;
  /** This machine's own names and addresses (see localHostNames). */
  readonly localNames: readonly string[];
  /** Extra Host names from the config; `name:port` pins another port (a reverse proxy on 443). */
  readonly allowedHosts: readonly string[];
  /** Extra exact origins from the config. */
  readonly allowedOrigins: readonly string[];
}

type Headers = Readonly<Record<string, string>>;

export interface OriginPolicy {
  /** Every accepted Host header value, for the startup log. */
  readonly hosts: readonly string[];
  /** Every accepted Origin, serialised. */
  readonly origins: readonly string[];
  /**
   * A WebSocket upgrade: the Host must be allowed, and the Origin must match the allowlist
   * exactly. A missing Origin is accepted only from a client that does not look like a browser.
   */
  checkUpgrade(headers: Headers): Refusal | undefined;
  /**
   * A plain HTTP request: the Host is always checked. On state-changing methods an Origin,
   * when present, must be allowed (CSRF); reads are left to the same-origin policy.
   */
  checkHttp(method: string, headers: Headers): Refusal | undefined;
}

export class OriginPolicyError extends Error {
  override name = 'OriginPolicyError';
  readonly code = 'invalid_config';
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * Who may talk to this server. Host values and origins are compared as whole strings against
 * sets built here, never by prefix, suffix or substring, so `app.example.evil.test` or
 * `localhost.evil.test` match nothing.
 */
export function createOriginPolicy(options: OriginPolicyOptions): OriginPolicy {
  const scheme = options.tls ? 'https' : 'http';
  const defaultPort = options.tls ? 443 : 80;
  const hosts = new Set<string>();
  const origins = new Set<string>();

  const allow = (name: string, port: number) => {
    const host = name.includes(':') ? `[${name}]` : name;
    hosts.add(`${host}:${port}`);
    // Clients omit the port when it is the scheme's default (browsers always do).
    if (port === defaultPort) hosts.add(host);
    const origin = normaliseOrigin(`${scheme}://${host}:${port}`);
    if (origin) origins.add(origin);
  };

  for (const name of options.localNames) allow(name.toLowerCase(), options.port);
  for (const entry of options.allowedHosts) {
    const parsed = parseHostEntry(entry);
    if (!parsed) throw new OriginPolicyError(`allowed host "${entry}" is not a host name or address, optionally with :port`);
    allow(parsed.name, parsed.port ?? options.port);
  }
  for (const entry of options.allowedOrigins) {
    const origin = normaliseOrigin(entry);
    if (!origin) throw new OriginPolicyError(`allowed origin "${entry}" is not an http(s) origin of the form scheme://host[:port]`);
    origins.add(origin);
  }

  const hostAllowed = (headers: Headers) => {
    const host = headers.host;
    return host !== undefined && hosts.has(host.toLowerCase());
  };
  const originAllowed = (origin: string) => {
    const normalised = normaliseOrigin(origin);
    return normalised !== undefined && origins.has(normalised);
  };

  return {
    hosts: [...hosts],
    origins: [...origins],
    checkUpgrade(headers) {
      if (!hostAllowed(headers)) return Refusal.host;
      const origin = headers.origin;
      if (origin === undefined) return looksLikeBrowser(headers) ? Refusal.origin : undefined;
      return originAllowed(origin) ? undefined : Refusal.origin;
    },
    checkHttp(method, headers) {
      if (!hostAllowed(headers)) return Refusal.host;
      if (SAFE_METHODS.has(method)) return undefined;
      const origin = headers.origin;
      return origin === undefined || originAllowed(origin) ? undefined : Refusal.origin;
    },
  };
}

/**
 * Browsers always send Origin on a WebSocket handshake, so a browser-like request without
 * one is refused. Clients that are not browsers (curl, scripts) may omit it: they can forge any
 * Origin anyway, so requiring one would stop nothing.
 */
function looksLikeBrowser(headers: Headers): boolean {
  if ((headers['user-agent'] ?? '').includes('Mozilla/')) return true;
  return Object.keys(headers).some((name) => name.startsWith('sec-fetch-'));
}

/** `name`, `name:port`, `[v6]`, `[v6]:port` or a bare IPv6 address, canonicalised by URL. */
function parseHostEntry(entry: string): { name: string; port: number | undefined } | undefined {
  const value = entry.trim().toLowerCase();
  let host = value;
  let port: string | undefined;
  const bracketed = /^(\[[^\]]*\])(?::([^:]*))?$/.exec(value);
  if (bracketed) {
    host = bracketed[1] as string;
    port = bracketed[2];
  } else if (value.split(':').length === 2) {
    [host, port] = value.split(':') as [string, string];
  } else if (value.includes(':')) {
    host = `[${value}]`;
  }
  if (port !== undefined && (!/^\d{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535)) return undefined;
  let url: URL;
  try {
    url = new URL(`http://${host}`);
  } catch {
    return undefined;
  }
  if (url.username || url.password || url.port || url.pathname !== '/' || url.search || url.hash) return undefined;
  return { name: url.hostname.replace(/^\[|\]$/g, ''), port: port === undefined ? undefined : Number(port) };
}
