import { createHash, timingSafeEqual } from 'node:crypto';
import { BlockList, isIP } from 'node:net';
import { ErrorCode } from '../../shared/errorCodes.js';
import type { TokenService } from '../auth/createTokenService.js';
import { Role } from '../auth/Principal.js';
import { ParleyError, UnauthorizedError } from '../ParleyError.js';

/** Why a /metrics request was let in. */
export const MetricsAccess = {
  /** The peer is this machine. */
  loopback: 'loopback',
  /** `Authorization: Bearer <metricsToken>`. */
  metricsToken: 'metrics_token',
  /** `Authorization: Bearer <access token>` of an admin account. */
  admin: 'admin',
} as const;
export type MetricsAccess = (typeof MetricsAccess)[keyof typeof MetricsAccess];

/** A refusal carries the error to answer with: 401 (no or bad credential) or 403 (not an admin). */
export type MetricsDecision = { readonly ok: true; readonly via: MetricsAccess } | { readonly ok: false; readonly error: ParleyError };

export interface MetricsRequest {
  /** The TCP peer as the transport reports it (uWS writes IPv6 in full: `0000:…:0001`). */
  readonly remoteAddress: string;
  /** The raw `Authorization` header, if any. */
  readonly authorization: string | undefined;
}

export interface MetricsAuthorizerDeps {
  readonly tokens: Pick<TokenService, 'verifyAccessToken'>;
  /** The configured scrape secret; undefined means no such secret is accepted. */
  readonly metricsToken: string | undefined;
}

/**
 * 127.0.0.0/8 and ::1. BlockList also matches IPv4-mapped IPv6 (`::ffff:127.0.0.1`, as a
 * dual-stack listener reports IPv4 peers) against the IPv4 rule, and parses uWS's expanded form.
 */
const loopback = new BlockList();
loopback.addSubnet('127.0.0.0', 8, 'ipv4');
loopback.addAddress('::1', 'ipv6');

export function isLoopback(address: string): boolean {
  const family = isIP(address);
  if (family === 0) return false;
  return loopback.check(address, family === 6 ? 'ipv6' : 'ipv4');
}

/**
 * Who may read /metrics: anyone on this machine, a scraper holding the metrics token, or an
 * admin's access token. The address is the TCP peer, or the client a `--trust-proxy` proxy
 * names (transport/clientAddress.ts), never a header from anyone else, so it cannot be claimed
 * over the network; a reverse proxy on this machine that is not in --trust-proxy makes every
 * request loopback, and must then keep /metrics to itself.
 *
 * The token is compared as SHA-256 digests with timingSafeEqual: both sides are 32 bytes
 * whatever was sent, so neither the length nor a matching prefix shows in the timing.
 * Nothing here logs or echoes a credential.
 */
export async function authorizeMetrics(request: MetricsRequest, deps: MetricsAuthorizerDeps): Promise<MetricsDecision> {
  if (isLoopback(request.remoteAddress)) return { ok: true, via: MetricsAccess.loopback };
  const credential = readBearerCredential(request.authorization);
  if (credential === undefined) {
    return { ok: false, error: new UnauthorizedError('Metrics need the metrics token or an admin access token.') };
  }
  if (deps.metricsToken !== undefined && sameSecret(credential, deps.metricsToken)) {
    return { ok: true, via: MetricsAccess.metricsToken };
  }
  let role: Role;
  try {
    role = (await deps.tokens.verifyAccessToken(credential)).role;
  } catch (error) {
    if (!(error instanceof UnauthorizedError)) throw error;
    return { ok: false, error: new UnauthorizedError('The metrics token or access token is invalid or expired.') };
  }
  if (role !== Role.admin) {
    return { ok: false, error: new ParleyError(ErrorCode.forbidden, 'Reading metrics needs an admin account.', { httpStatus: 403 }) };
  }
  return { ok: true, via: MetricsAccess.admin };
}

/**
 * The credential of `Bearer <credential>` (scheme case-insensitive), surrounding spaces
 * trimmed. Any characters are kept: a configured metrics token need not be a b64token.
 */
function readBearerCredential(header: string | undefined): string | undefined {
  const match = /^bearer +(.*)$/i.exec(header ?? '');
  const credential = match?.[1]?.trim();
  return credential ? credential : undefined;
}

function sameSecret(presented: string, expected: string): boolean {
  return timingSafeEqual(sha256(presented), sha256(expected));
}

function sha256(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}
