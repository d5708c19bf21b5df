import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT, base64url, exportJWK } from 'jose';
import { createTokenService, TokenClaims } from '../../server/auth/createTokenService.js';
import { loadOrCreateSigningKey, SIGNING_KEY_FILE, type SigningKey } from '../../server/auth/loadOrCreateSigningKey.js';
import { loadOrCreateInvite, INVITE_FILE } from '../../server/auth/loadOrCreateInvite.js';
import { UnauthorizedError } from '../../server/ParleyError.js';

const dirs: string[] = [];
async function freshDataDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'parley-tokens-'));
  dirs.push(dir);
  return dir;
}
after(async () => {
  await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

async function freshKey(): Promise<SigningKey> {
  return loadOrCreateSigningKey(await freshDataDir());
}

/** Asserts the rejection every bad token must get: UnauthorizedError, code 'unauthorized', token not echoed. */
async function assertRefused(key: SigningKey, token: string): Promise<void> {
  const service = createTokenService({ key, ttlSeconds: 300 });
  await assert.rejects(service.verifyAccessToken(token), (error: unknown) => {
    assert.ok(error instanceof UnauthorizedError, `expected UnauthorizedError, got ${String(error)}`);
    assert.equal(error.code, 'unauthorized');
    assert.equal(error.httpStatus, 401);
    if (token.length > 0) assert.ok(!error.message.includes(token), 'the message must not contain the token');
    for (const part of token.split('.')) {
      if (part.length > 8) assert.ok(!error.message.includes(part), 'the message must not contain any part of the token');
    }
    assert.deepEqual(Object.keys(error.toWire()).sort(), ['code', 'message']);
    return true;
  });
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

/** A token with every claim right, signed by `key`, for tests to break one thing at a time. */
function validJwt(key: SigningKey, overrides: { header?: Record<string, unknown>; iss?: string; aud?: string; nbf?: number; exp?: number | null } = {}) {
  const iat = nowSeconds();
  let jwt = new SignJWT({ name: 'Mallory', role: 'user', ep: 0 })
    .setProtectedHeader({ alg: 'EdDSA', typ: TokenClaims.accessType, kid: key.kid, ...overrides.header })
    .setSubject('u_mallory')
    .setIssuer(overrides.iss ?? TokenClaims.issuer)
    .setAudience(overrides.aud ?? TokenClaims.audience)
    .setIssuedAt(iat);
  if (overrides.exp !== null) jwt = jwt.setExpirationTime(overrides.exp ?? iat + 300);
  if (overrides.nbf !== undefined) jwt = jwt.setNotBefore(overrides.nbf);
  return jwt;
}

function encodeJson(value: unknown): string {
  return base64url.encode(JSON.stringify(value));
}

describe('access tokens', () => {
  test('an issued token verifies back to the same principal, expiring ttl seconds after issue', async () => {
    const key = await freshKey();
    const fixedNow = 1_900_000_000_123;
    const service = createTokenService({ key, ttlSeconds: 300, now: () => fixedNow });
    const issued = await service.issueAccessToken({ userId: 'u_alice', name: 'Alice' });
    const expectedExpiry = (Math.floor(fixedNow / 1000) + 300) * 1000;
    assert.equal(issued.expiresAt, expectedExpiry);
    assert.deepEqual(issued.principal, { userId: 'u_alice', name: 'Alice', role: 'user', expiresAt: expectedExpiry });

    const principal = await service.verifyAccessToken(issued.token);
    assert.deepEqual(principal, { userId: 'u_alice', name: 'Alice', role: 'user', expiresAt: expectedExpiry });
  });

  test('a token issued without a userId gets a fresh u_ id that verifies back', async () => {
    const key = await freshKey();
    const service = createTokenService({ key, ttlSeconds: 60 });
    const first = await service.issueAccessToken({ name: 'Bob' });
    const second = await service.issueAccessToken({ name: 'Bob' });
    assert.match(first.principal.userId, /^u_[A-Za-z0-9_-]+$/);
    assert.notEqual(first.principal.userId, second.principal.userId);
    assert.equal((await service.verifyAccessToken(first.token)).userId, first.principal.userId);
  });

  test('an expired token is refused', async () => {
    const key = await freshKey();
    const past = Date.now() - 3600_000;
    const issuer = createTokenService({ key, ttlSeconds: 300, now: () => past });
    const { token } = await issuer.issueAccessToken({ name: 'Old' });
    await assertRefused(key, token);
  });

  test('an alg:none token is refused', async () => {
    const key = await freshKey();
    const iat = nowSeconds();
    const token = [
      encodeJson({ alg: 'none', typ: TokenClaims.accessType }),
      encodeJson({ sub: 'u_x', name: 'X', iss: TokenClaims.issuer, aud: TokenClaims.audience, iat, exp: iat + 300 }),
      '',
    ].join('.');
    await assertRefused(key, token);
  });

  test("an HS256 token signed with the public key's bytes is refused (algorithm confusion)", async () => {
    const key = await freshKey();
    const publicJwk = await exportJWK(key.publicKey);
    assert.ok(publicJwk.x);
    const secrets = [base64url.decode(publicJwk.x), new TextEncoder().encode(publicJwk.x), new TextEncoder().encode(JSON.stringify(publicJwk))];
    for (const secret of secrets) {
      const token = await validJwt(key, { header: { alg: 'HS256' } }).sign(secret);
      await assertRefused(key, token);
    }
  });

  test('a token without exp is refused even with a valid signature', async () => {
    const key = await freshKey();
    await assertRefused(key, await validJwt(key, { exp: null }).sign(key.privateKey));
  });

  test('a correctly built token verifies (control for the one-claim-wrong tests)', async () => {
    const key = await freshKey();
    const service = createTokenService({ key, ttlSeconds: 300 });
    const principal = await service.verifyAccessToken(await validJwt(key).sign(key.privateKey));
    assert.equal(principal.userId, 'u_mallory');
  });

  test('a token with the wrong audience is refused', async () => {
    const key = await freshKey();
    await assertRefused(key, await validJwt(key, { aud: 'parley:admin' }).sign(key.privateKey));
  });

  test('a token with the wrong issuer is refused', async () => {
    const key = await freshKey();
    await assertRefused(key, await validJwt(key, { iss: 'someone-else' }).sign(key.privateKey));
  });

  test('a token with the wrong typ, or none, is refused', async () => {
    const key = await freshKey();
    await assertRefused(key, await validJwt(key, { header: { typ: 'JWT' } }).sign(key.privateKey));
    await assertRefused(key, await validJwt(key, { header: { typ: 'parley-refresh+jwt' } }).sign(key.privateKey));
    await assertRefused(key, await validJwt(key, { header: { typ: undefined } }).sign(key.privateKey));
  });

  test('a token whose nbf is in the future is refused', async () => {
    const key = await freshKey();
    await assertRefused(key, await validJwt(key, { nbf: nowSeconds() + 3600 }).sign(key.privateKey));
  });

  test('a token with one signature byte flipped is refused', async () => {
    const key = await freshKey();
    const service = createTokenService({ key, ttlSeconds: 300 });
    const { token } = await service.issueAccessToken({ name: 'Eve' });
    const [header, payload, signature] = token.split('.') as [string, string, string];
    const bytes = base64url.decode(signature);
    for (const index of [0, bytes.length >> 1, bytes.length - 1]) {
      const tampered = Uint8Array.from(bytes);
      tampered[index] = (tampered[index] as number) ^ 0x01;
      await assertRefused(key, `${header}.${payload}.${base64url.encode(tampered)}`);
    }
  });

  test('a token with a tampered payload is refused', async () => {
    const key = await freshKey();
    const service = createTokenService({ key, ttlSeconds: 300 });
    const { token } = await service.issueAccessToken({ userId: 'u_eve', name: 'Eve' });
    const [header, payload, signature] = token.split('.') as [string, string, string];
    const claims = JSON.parse(new TextDecoder().decode(base64url.decode(payload))) as Record<string, unknown>;
    await assertRefused(key, `${header}.${encodeJson({ ...claims, sub: 'u_admin' })}.${signature}`);
  });

  test("a token from another server's key is refused", async () => {
    const ours = await freshKey();
    const theirs = await freshKey();
    const { token } = await createTokenService({ key: theirs, ttlSeconds: 300 }).issueAccessToken({ name: 'Stranger' });
    await assertRefused(ours, token);
  });

  test('garbage, empty and truncated tokens are refused', async () => {
    const key = await freshKey();
    const { token } = await createTokenService({ key, ttlSeconds: 300 }).issueAccessToken({ name: 'T' });
    for (const bad of ['', 'not-a-token', 'a.b.c', token.slice(0, token.lastIndexOf('.')), `${token}.extra`]) {
      await assertRefused(key, bad);
    }
  });

  test('a validly signed token without a string name claim is refused', async () => {
    const key = await freshKey();
    const iat = nowSeconds();
    const token = await new SignJWT({ name: 42 })
      .setProtectedHeader({ alg: 'EdDSA', typ: TokenClaims.accessType })
      .setSubject('u_x')
      .setIssuer(TokenClaims.issuer)
      .setAudience(TokenClaims.audience)
      .setIssuedAt(iat)
      .setExpirationTime(iat + 300)
      .sign(key.privateKey);
    await assertRefused(key, token);
  });
});

describe('signing key', () => {
  test('the key file is created with mode 0600', async () => {
    const dir = await freshDataDir();
    const key = await loadOrCreateSigningKey(dir);
    const info = await stat(join(dir, SIGNING_KEY_FILE));
    assert.equal(info.mode & 0o777, 0o600);
    assert.match(key.kid, /^[A-Za-z0-9_-]{8}$/);
  });

  test('the data dir is created when missing', async () => {
    const dir = join(await freshDataDir(), 'nested', 'data');
    await loadOrCreateSigningKey(dir);
    assert.ok((await stat(join(dir, SIGNING_KEY_FILE))).isFile());
  });

  test('a second call reloads the same key: same kid, and tokens from one verify with the other', async () => {
    const dir = await freshDataDir();
    const first = await loadOrCreateSigningKey(dir);
    const fileBefore = await readFile(join(dir, SIGNING_KEY_FILE), 'utf8');
    const second = await loadOrCreateSigningKey(dir);
    assert.equal(second.kid, first.kid);
    assert.deepEqual(await exportJWK(second.publicKey), await exportJWK(first.publicKey));
    assert.equal(await readFile(join(dir, SIGNING_KEY_FILE), 'utf8'), fileBefore, 'the file is not rewritten');

    const { token } = await createTokenService({ key: first, ttlSeconds: 60 }).issueAccessToken({ name: 'A' });
    assert.equal((await createTokenService({ key: second, ttlSeconds: 60 }).verifyAccessToken(token)).name, 'A');
  });

  test('a key file readable by group or others is refused with an error that says chmod', async () => {
    const dir = await freshDataDir();
    await loadOrCreateSigningKey(dir);
    const file = join(dir, SIGNING_KEY_FILE);
    for (const mode of [0o644, 0o640, 0o604]) {
      await chmod(file, mode);
      await assert.rejects(loadOrCreateSigningKey(dir), /chmod 600/);
    }
  });

  test(
    'two concurrent first-time loads of one data dir agree on a single key',
    async () => {
      const dir = await freshDataDir();
      const [first, second] = await Promise.all([loadOrCreateSigningKey(dir), loadOrCreateSigningKey(dir)]);
      assert.equal(first.kid, second.kid);
    },
  );

  test(
    'a temp file left by a crashed first start does not block creating the key',
    async () => {
      const dir = await freshDataDir();
      await writeFile(join(dir, `${SIGNING_KEY_FILE}.${process.pid}.tmp`), '{"partial":', { mode: 0o600 });
      const key = await loadOrCreateSigningKey(dir);
      assert.match(key.kid, /^[A-Za-z0-9_-]{8}$/);
    },
  );

  test('a key file that is not an Ed25519 private key is refused', async () => {
    const dir = await freshDataDir();
    const key = await loadOrCreateSigningKey(dir);
    const publicOnly = await exportJWK(key.publicKey);
    await writeFile(join(dir, SIGNING_KEY_FILE), JSON.stringify(publicOnly), { mode: 0o600 });
    await assert.rejects(loadOrCreateSigningKey(dir), /not an Ed25519 private key/);
  });
});

describe('invite', () => {
  test('a code is generated once and persisted: a second call returns the same code', async () => {
    const dir = await freshDataDir();
    const first = await loadOrCreateInvite(dir);
    const second = await loadOrCreateInvite(dir);
    assert.equal(second.code, first.code);
    assert.match(first.code, /^[A-Za-z0-9_-]{22}$/, '128 random bits, base64url');
    assert.equal((await readFile(join(dir, INVITE_FILE), 'utf8')).trim(), first.code);
  });

  test('two data dirs get different codes', async () => {
    const first = await loadOrCreateInvite(await freshDataDir());
    const second = await loadOrCreateInvite(await freshDataDir());
    assert.notEqual(first.code, second.code);
  });

  test(
    'two concurrent first-time loads of one data dir agree on a single code',
    async () => {
      const dir = await freshDataDir();
      const [first, second] = await Promise.all([loadOrCreateInvite(dir), loadOrCreateInvite(dir)]);
      assert.equal(first.code, second.code);
      assert.equal((await readFile(join(dir, INVITE_FILE), 'utf8')).trim(), first.code);
    },
  );

  test('the invite file is created with mode 0600', async () => {
    const dir = await freshDataDir();
    await loadOrCreateInvite(dir);
    assert.equal((await stat(join(dir, INVITE_FILE))).mode & 0o777, 0o600);
  });

  test('a pinned code wins over the stored one and is not written to disk', async () => {
    const dir = await freshDataDir();
    const stored = await loadOrCreateInvite(dir);
    const pinned = await loadOrCreateInvite(dir, 'pinned-code-123');
    assert.equal(pinned.code, 'pinned-code-123');
    assert.equal((await readFile(join(dir, INVITE_FILE), 'utf8')).trim(), stored.code);

    const emptyDir = await freshDataDir();
    await loadOrCreateInvite(emptyDir, 'pinned-code-123');
    await assert.rejects(stat(join(emptyDir, INVITE_FILE)), { code: 'ENOENT' });
  });

  test('matches() is true only for the exact code', async () => {
    const invite = await loadOrCreateInvite(await freshDataDir(), 'Correct-Horse-42');
    assert.equal(invite.matches('Correct-Horse-42'), true);
    for (const wrong of ['', 'correct-horse-42', 'Correct-Horse-4', 'Correct-Horse-420', ' Correct-Horse-42', 'Correct-Horse-42\n']) {
      assert.equal(invite.matches(wrong), false, JSON.stringify(wrong));
    }
  });
});
