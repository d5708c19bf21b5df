import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { decodeJwt, decodeProtectedHeader, SignJWT } from 'jose';
import { createTokenService, TokenClaims } from '../../server/auth/createTokenService.js';
import { loadOrCreateSigningKey, type SigningKey } from '../../server/auth/loadOrCreateSigningKey.js';
import { clearedRefreshCookie, readRefreshCookies, refreshCookie } from '../../server/auth/refreshCookie.js';
import { UnauthorizedError } from '../../server/ParleyError.js';

const dirs: string[] = [];
async function freshKey(): Promise<SigningKey> {
  const dir = await mkdtemp(join(tmpdir(), 'parley-refresh-'));
  dirs.push(dir);
  return loadOrCreateSigningKey(dir);
}
after(async () => {
  await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

const refreshClaims = (expiresAt: number) => ({ userId: 'u_a', name: 'A', role: 'user' as const, family: 'f_1', jti: 'j_1', expiresAt });

describe('access token claims: role and epoch', () => {
  test('access tokens carry role and ep; the principal carries the role', async () => {
    const key = await freshKey();
    const service = createTokenService({ key, ttlSeconds: 300, epochs: { epochOf: () => 7 } });
    const issued = await service.issueAccessToken({ userId: 'a_admin', name: 'Root', role: 'admin' });
    const claims = decodeJwt(issued.token);
    assert.equal(claims.role, 'admin');
    assert.equal(claims.ep, 7);
    assert.equal((await service.verifyAccessToken(issued.token)).role, 'admin');
    assert.equal((await service.issueAccessToken({ name: 'guest' })).principal.role, 'user');
  });

  test('a token whose ep is below the user’s current epoch is refused; other users are unaffected', async () => {
    const key = await freshKey();
    const epochs = new Map<string, number>();
    const service = createTokenService({ key, ttlSeconds: 300, epochs: { epochOf: (id) => epochs.get(id) ?? 0 } });
    const alice = await service.issueAccessToken({ userId: 'u_alice', name: 'Alice' });
    const bob = await service.issueAccessToken({ userId: 'u_bob', name: 'Bob' });
    epochs.set('u_alice', 1);
    await assert.rejects(service.verifyAccessToken(alice.token), UnauthorizedError);
    assert.equal((await service.verifyAccessToken(bob.token)).userId, 'u_bob');
    const fresh = await service.issueAccessToken({ userId: 'u_alice', name: 'Alice' });
    assert.equal((await service.verifyAccessToken(fresh.token)).userId, 'u_alice', 'a token issued after the bump works');
  });

  test('an access token without role or ep, or with a role that does not exist, is refused', async () => {
    const key = await freshKey();
    const service = createTokenService({ key, ttlSeconds: 300 });
    const iat = Math.floor(Date.now() / 1000);
    for (const payload of [{ name: 'X', ep: 0 }, { name: 'X', role: 'user' }, { name: 'X', role: 'root', ep: 0 }, { name: 'X', role: 'user', ep: -1 }, { name: 'X', role: 'user', ep: '0' }]) {
      const token = await new SignJWT(payload)
        .setProtectedHeader({ alg: 'EdDSA', typ: TokenClaims.accessType })
        .setSubject('u_x')
        .setIssuer(TokenClaims.issuer)
        .setAudience(TokenClaims.audience)
        .setIssuedAt(iat)
        .setExpirationTime(iat + 300)
        .sign(key.privateKey);
      await assert.rejects(service.verifyAccessToken(token), UnauthorizedError, JSON.stringify(payload));
    }
  });

  test('clock tolerance is 5 s: a token expired 3 s ago passes, 10 s ago does not', async () => {
    const key = await freshKey();
    const service = createTokenService({ key, ttlSeconds: 300 });
    const ago = (seconds: number) => createTokenService({ key, ttlSeconds: 60, now: () => Date.now() - (60 + seconds) * 1000 });
    await service.verifyAccessToken((await ago(3).issueAccessToken({ name: 'A' })).token);
    await assert.rejects(service.verifyAccessToken((await ago(10).issueAccessToken({ name: 'A' })).token), UnauthorizedError);
  });
});

describe('refresh credentials', () => {
  test('a refresh JWT has its own typ and aud, and the documented claims', async () => {
    const key = await freshKey();
    const service = createTokenService({ key, ttlSeconds: 300 });
    const expiresAt = (Math.floor(Date.now() / 1000) + 3600) * 1000;
    const token = await service.issueRefreshToken(refreshClaims(expiresAt));
    assert.equal(decodeProtectedHeader(token).typ, 'parley-refresh+jwt');
    assert.equal(decodeProtectedHeader(token).alg, 'EdDSA');
    const claims = decodeJwt(token);
    assert.equal(claims.aud, 'parley:refresh');
    assert.equal(claims.iss, 'parley');
    assert.deepEqual([claims.sub, claims.name, claims.role, claims.fam, claims.jti, claims.exp], ['u_a', 'A', 'user', 'f_1', 'j_1', expiresAt / 1000]);
    assert.deepEqual(await service.verifyRefreshToken(token), refreshClaims(expiresAt));
  });

  test('a refresh JWT is never accepted as an access token, nor an access token as a refresh JWT', async () => {
    const key = await freshKey();
    const service = createTokenService({ key, ttlSeconds: 300 });
    const refresh = await service.issueRefreshToken(refreshClaims(Date.now() + 3600_000));
    await assert.rejects(service.verifyAccessToken(refresh), UnauthorizedError);
    const access = await service.issueAccessToken({ name: 'A' });
    await assert.rejects(service.verifyRefreshToken(access.token), UnauthorizedError);
  });

  test('a refresh JWT with the refresh typ but the access audience (or the reverse) is refused by both', async () => {
    const key = await freshKey();
    const service = createTokenService({ key, ttlSeconds: 300 });
    const iat = Math.floor(Date.now() / 1000);
    const build = (typ: string, aud: string) =>
      new SignJWT({ name: 'A', role: 'user', ep: 0, fam: 'f_1' })
        .setProtectedHeader({ alg: 'EdDSA', typ })
        .setSubject('u_a')
        .setIssuer(TokenClaims.issuer)
        .setAudience(aud)
        .setIssuedAt(iat)
        .setExpirationTime(iat + 300)
        .setJti('j_1')
        .sign(key.privateKey);
    for (const token of [await build(TokenClaims.refreshType, TokenClaims.audience), await build(TokenClaims.accessType, TokenClaims.refreshAudience)]) {
      await assert.rejects(service.verifyAccessToken(token), UnauthorizedError);
      await assert.rejects(service.verifyRefreshToken(token), UnauthorizedError);
    }
  });

  test('an expired refresh JWT, or one from another key, is refused', async () => {
    const key = await freshKey();
    const service = createTokenService({ key, ttlSeconds: 300 });
    await assert.rejects(service.verifyRefreshToken(await service.issueRefreshToken(refreshClaims(Date.now() - 60_000))), UnauthorizedError);
    const other = createTokenService({ key: await freshKey(), ttlSeconds: 300 });
    await assert.rejects(service.verifyRefreshToken(await other.issueRefreshToken(refreshClaims(Date.now() + 60_000))), UnauthorizedError);
  });
});

describe('refresh cookie', () => {
  test('the cookie is HttpOnly, SameSite=Strict, Path=/api, with Max-Age, and Secure only under TLS', () => {
    assert.equal(refreshCookie('abc', 60.9, false), 'parley_refresh=abc; HttpOnly; SameSite=Strict; Path=/api; Max-Age=60');
    assert.equal(refreshCookie('abc', 60, true), 'parley_refresh=abc; HttpOnly; SameSite=Strict; Path=/api; Max-Age=60; Secure');
    assert.equal(clearedRefreshCookie(false), 'parley_refresh=; HttpOnly; SameSite=Strict; Path=/api; Max-Age=0');
  });

  test('reading the cookie: among others, joined with ";" or ",", absent, empty or repeated (every distinct value, in order)', () => {
    assert.deepEqual(readRefreshCookies('a=1; parley_refresh=x.y.z; b=2'), ['x.y.z']);
    assert.deepEqual(readRefreshCookies('a=1, parley_refresh=x.y.z'), ['x.y.z']);
    assert.deepEqual(readRefreshCookies(undefined), []);
    assert.deepEqual(readRefreshCookies('parley_refresh='), []);
    assert.deepEqual(readRefreshCookies('other_parley_refresh=x'), []);
    assert.deepEqual(readRefreshCookies('parley_refresh=a; parley_refresh=b; parley_refresh=a'), ['a', 'b']);
  });
});
