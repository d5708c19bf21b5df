import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, test } from 'node:test';
import { SignJWT, base64url, generateKeyPair, jwtVerify, type CryptoKey } from 'jose';
import { TokenClaims } from '../../server/auth/createTokenService.js';
import { ed25519PublicKey, JwtRefusedError, verifyEdDsaJwt, type JwtExpectations } from '../../server/auth/verifyEdDsaJwt.js';

const REQUIRED = ['exp', 'iat', 'sub', 'iss', 'aud', 'role', 'ep'];
const NOW = 1_900_000_000;

const expectations: JwtExpectations = {
  typ: TokenClaims.accessType,
  issuer: TokenClaims.issuer,
  audience: TokenClaims.audience,
  requiredClaims: REQUIRED,
  clockToleranceSeconds: TokenClaims.clockToleranceSeconds,
  nowSeconds: NOW,
};

const encode = (value: unknown) => base64url.encode(JSON.stringify(value));
const claims = (overrides: Record<string, unknown> = {}) => ({
  sub: 'u_alice',
  name: 'Alice',
  role: 'user',
  ep: 0,
  iss: TokenClaims.issuer,
  aud: TokenClaims.audience,
  iat: NOW,
  exp: NOW + 300,
  jti: 'j1',
  ...overrides,
});
const header = (overrides: Record<string, unknown> = {}) => ({ alg: 'EdDSA', typ: TokenClaims.accessType, ...overrides });

/** Signs any header and claims with `key`, exactly as given (jose's builder would normalise them). */
async function sign(key: CryptoKey, head: Record<string, unknown>, body: unknown): Promise<string> {
  const signingInput = `${encode(head)}.${typeof body === 'string' ? base64url.encode(body) : encode(body)}`;
  const signature = new Uint8Array(await crypto.subtle.sign('Ed25519', key, new TextEncoder().encode(signingInput)));
  return `${signingInput}.${base64url.encode(signature)}`;
}

/** What jose's jwtVerify says with the options createTokenService used before, at the same time. */
async function joseAccepts(token: string, publicKey: CryptoKey): Promise<boolean> {
  try {
    await jwtVerify(token, publicKey, {
      algorithms: ['EdDSA'],
      issuer: expectations.issuer,
      audience: expectations.audience,
      typ: expectations.typ,
      requiredClaims: REQUIRED,
      clockTolerance: expectations.clockToleranceSeconds,
      currentDate: new Date(NOW * 1000),
    });
    return true;
  } catch {
    return false;
  }
}

function syncAccepts(token: string, publicKey: CryptoKey): boolean {
  try {
    verifyEdDsaJwt(token, ed25519PublicKey(publicKey), expectations);
    return true;
  } catch (error) {
    assert.ok(error instanceof JwtRefusedError, `a refusal is a JwtRefusedError, not ${String(error)}`);
    assert.ok(token.length < 20 || !error.message.includes(token), 'the message never quotes the token');
    return false;
  }
}

describe('verifyEdDsaJwt (the synchronous access-token check)', async () => {
  const server = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
  const attacker = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
  const good = await sign(server.privateKey, header(), claims());
  const [goodHeader, goodPayload, goodSignature] = good.split('.') as [string, string, string];
  const signatureBytes = base64url.decode(goodSignature);
  const flipped = (index: number) => {
    const bytes = Uint8Array.from(signatureBytes);
    bytes[index] = (bytes[index] as number) ^ 0x01;
    return `${goodHeader}.${goodPayload}.${base64url.encode(bytes)}`;
  };
  const hs256 = await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256', typ: TokenClaims.accessType }).sign(new TextEncoder().encode('secret'));
  const withoutClaim = (name: string) => {
    const body: Record<string, unknown> = claims();
    delete body[name];
    return sign(server.privateKey, header(), body);
  };

  /** Tokens both verifiers must refuse: each breaks one thing. */
  const refusedByBoth: Record<string, string | Promise<string>> = {
    'alg none': `${encode(header({ alg: 'none' }))}.${goodPayload}.`,
    'HS256 (algorithm confusion)': hs256,
    'signed by another key': sign(attacker.privateKey, header(), claims()),
    'another key named in a jwk header': sign(attacker.privateKey, header({ jwk: { kty: 'OKP', crv: 'Ed25519', x: 'AAAA' } }), claims()),
    'first signature byte flipped': flipped(0),
    'last signature byte flipped': flipped(63),
    'payload swapped under a good signature': `${goodHeader}.${encode(claims({ sub: 'u_admin' }))}.${goodSignature}`,
    'wrong typ': sign(server.privateKey, header({ typ: 'JWT' }), claims()),
    'refresh typ': sign(server.privateKey, header({ typ: TokenClaims.refreshType }), claims()),
    'no typ': sign(server.privateKey, { alg: 'EdDSA' }, claims()),
    'wrong issuer': sign(server.privateKey, header(), claims({ iss: 'someone-else' })),
    'wrong audience': sign(server.privateKey, header(), claims({ aud: TokenClaims.refreshAudience })),
    'expired past the tolerance': sign(server.privateKey, header(), claims({ exp: NOW - TokenClaims.clockToleranceSeconds })),
    'nbf past the tolerance': sign(server.privateKey, header(), claims({ nbf: NOW + TokenClaims.clockToleranceSeconds + 1 })),
    'exp as a string': sign(server.privateKey, header(), claims({ exp: String(NOW + 300) })),
    'iat as a string': sign(server.privateKey, header(), claims({ iat: String(NOW) })),
    'no exp': withoutClaim('exp'),
    'no iat': withoutClaim('iat'),
    'no sub': withoutClaim('sub'),
    'no ep': withoutClaim('ep'),
    'no role': withoutClaim('role'),
    'an unknown crit header': sign(server.privateKey, header({ crit: ['exp'], exp: 1 }), claims()),
    'b64 false': sign(server.privateKey, header({ b64: false, crit: ['b64'] }), claims()),
    'claims that are an array': sign(server.privateKey, header(), [claims()]),
    'claims that are not JSON': sign(server.privateKey, header(), 'not json'),
    'two segments': `${goodHeader}.${goodPayload}`,
    'four segments': `${good}.x`,
    empty: '',
    'a space inside': `${good.slice(0, 10)} ${good.slice(10)}`,
  };
  /** Tokens jose accepts and this verifier refuses: spellings Parley never issues. */
  const refusedOnlyHere: Record<string, string | Promise<string>> = {
    'typ in other case': sign(server.privateKey, header({ typ: TokenClaims.accessType.toUpperCase() }), claims()),
    'typ with application/': sign(server.privateKey, header({ typ: `application/${TokenClaims.accessType}` }), claims()),
    'aud as an array': sign(server.privateKey, header(), claims({ aud: [TokenClaims.audience, 'other'] })),
    'base64 padding on the signature': `${good}==`.replace(/=+$/, '=='),
    'a non-canonical last signature character': `${good.slice(0, -1)}${String.fromCharCode(good.charCodeAt(good.length - 1) + 1)}`,
  };

  test('a good token passes both, with the same claims', async () => {
    assert.equal(await joseAccepts(good, server.publicKey), true);
    assert.deepEqual(verifyEdDsaJwt(good, ed25519PublicKey(server.publicKey), expectations), claims());
    // Within the clock tolerance on both ends, as with jose.
    const edge = await sign(server.privateKey, header(), claims({ exp: NOW - TokenClaims.clockToleranceSeconds + 1, nbf: NOW + TokenClaims.clockToleranceSeconds }));
    assert.equal(await joseAccepts(edge, server.publicKey), true);
    assert.equal(syncAccepts(edge, server.publicKey), true);
  });

  for (const [name, token] of Object.entries(refusedByBoth)) {
    test(`refused, as by jose: ${name}`, async () => {
      const value = await token;
      assert.equal(await joseAccepts(value, server.publicKey), false, 'jose refuses it (the case is a real defect)');
      assert.equal(syncAccepts(value, server.publicKey), false);
    });
  }

  for (const [name, token] of Object.entries(refusedOnlyHere)) {
    test(`refused, stricter than jose: ${name}`, async () => {
      const value = await token;
      if (name.startsWith('typ') || name.startsWith('aud')) assert.equal(await joseAccepts(value, server.publicKey), true, 'jose takes this spelling');
      assert.equal(syncAccepts(value, server.publicKey), false);
    });
  }

  test('a token over 8 KiB is refused unparsed', async () => {
    const big = await sign(server.privateKey, header(), claims({ pad: 'x'.repeat(9000) }));
    assert.equal(syncAccepts(big, server.publicKey), false);
  });

  test('only an Ed25519 public key is taken', () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 });
    assert.throws(() => ed25519PublicKey(rsa.publicKey));
    assert.throws(() => ed25519PublicKey(generateKeyPairSync('ed25519').privateKey));
    assert.equal(ed25519PublicKey(generateKeyPairSync('ed25519').publicKey).asymmetricKeyType, 'ed25519');
  });
});
