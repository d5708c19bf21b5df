import { KeyObject, verify } from 'node:crypto';

/** What a token must carry besides a good signature. Times are in whole seconds. */
export interface JwtExpectations {
  /** The JOSE `typ`, compared exactly. */
  readonly typ: string;
  readonly issuer: string;
  /** `aud` must be exactly this string (Parley never issues an array). */
  readonly audience: string;
  /** Claims that must be present (their types are the caller's to check, except the times below). */
  readonly requiredClaims: readonly string[];
  readonly clockToleranceSeconds: number;
  readonly nowSeconds: number;
}

/** A token refused for its form, its signature or its claims. The message never quotes the token. */
export class JwtRefusedError extends Error {
  override name = 'JwtRefusedError';
}

/** Far above any token Parley issues (about 400 characters); a longer string is refused unparsed. */
const MAX_TOKEN_CHARS = 8192;
const BASE64URL = /^[A-Za-z0-9_-]+$/;
const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Verifies a compact JWS signed with Ed25519 (`alg: EdDSA`) and returns its claims, synchronously:
 * `crypto.verify` takes tens of microseconds, so a WebSocket upgrade can be decided inside uWS's
 * upgrade callback, where its writes are corked (see uwsTransport.ts).
 *
 * The checks of jose's `jwtVerify` with the algorithm, `typ`, issuer, audience and required
 * claims pinned, and stricter where a token Parley issues never differs: `typ` and `aud` are
 * compared exactly; each segment must be canonical base64url (one encoding per token, so a
 * token cannot be re-spelled into another string that verifies); headers with `crit` or `b64`
 * are refused (extensions this verifier does not implement); header and claims must be UTF-8
 * JSON objects. Any `jwk`, `jku`, `x5u` or `kid` header is ignored: only `publicKey` counts.
 */
export function verifyEdDsaJwt(token: string, publicKey: KeyObject, expect: JwtExpectations): Record<string, unknown> {
  if (token.length > MAX_TOKEN_CHARS) throw new JwtRefusedError('token is too long');
  const parts = token.split('.');
  if (parts.length !== 3) throw new JwtRefusedError('not a compact JWS');
  const [headerPart, payloadPart, signaturePart] = parts as [string, string, string];

  const header = decodeJsonObject(headerPart, 'header');
  if (header.alg !== 'EdDSA') throw new JwtRefusedError('alg is not EdDSA');
  if (header.typ !== expect.typ) throw new JwtRefusedError('unexpected typ');
  if ('crit' in header || 'b64' in header) throw new JwtRefusedError('unsupported header extension');

  const signature = decodeSegment(signaturePart, 'signature');
  if (signature.length !== 64) throw new JwtRefusedError('signature has the wrong length');
  if (!verify(null, Buffer.from(`${headerPart}.${payloadPart}`, 'ascii'), publicKey, signature)) {
    throw new JwtRefusedError('signature does not verify');
  }

  const claims = decodeJsonObject(payloadPart, 'claims');
  for (const claim of expect.requiredClaims) {
    if (!Object.hasOwn(claims, claim)) throw new JwtRefusedError(`missing ${claim} claim`);
  }
  for (const time of ['iat', 'nbf', 'exp'] as const) {
    if (Object.hasOwn(claims, time) && !Number.isFinite(claims[time])) throw new JwtRefusedError(`${time} is not a number`);
  }
  if (claims.iss !== expect.issuer) throw new JwtRefusedError('unexpected issuer');
  if (claims.aud !== expect.audience) throw new JwtRefusedError('unexpected audience');
  if (typeof claims.exp === 'number' && claims.exp <= expect.nowSeconds - expect.clockToleranceSeconds) throw new JwtRefusedError('token expired');
  if (typeof claims.nbf === 'number' && claims.nbf > expect.nowSeconds + expect.clockToleranceSeconds) throw new JwtRefusedError('token not yet valid');
  return claims;
}

/** An Ed25519 public key as a KeyObject, from a KeyObject or a WebCrypto key (jose's). */
export function ed25519PublicKey(key: KeyObject | CryptoKey): KeyObject {
  const keyObject = key instanceof KeyObject ? key : KeyObject.from(key);
  if (keyObject.type !== 'public' || keyObject.asymmetricKeyType !== 'ed25519') throw new Error('expected an Ed25519 public key');
  return keyObject;
}

function decodeSegment(segment: string, what: string): Buffer {
  if (!BASE64URL.test(segment)) throw new JwtRefusedError(`${what} is not base64url`);
  const bytes = Buffer.from(segment, 'base64url');
  // Node's decoder ignores stray trailing bits; only the canonical spelling is accepted.
  if (bytes.toString('base64url') !== segment) throw new JwtRefusedError(`${what} is not canonical base64url`);
  return bytes;
}

function decodeJsonObject(segment: string, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(utf8.decode(decodeSegment(segment, what)));
  } catch (error) {
    if (error instanceof JwtRefusedError) throw error;
    throw new JwtRefusedError(`${what} is not UTF-8 JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new JwtRefusedError(`${what} is not a JSON object`);
  return value as Record<string, unknown>;
}
