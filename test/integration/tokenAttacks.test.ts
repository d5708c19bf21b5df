import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { base64url, exportJWK, SignJWT } from 'jose';
import { loadOrCreateSigningKey } from '../../server/auth/loadOrCreateSigningKey.js';
import type { LlamaEngine } from '../../server/engine/LlamaEngine.js';
import { bearerUpgradeStatus } from '../helpers/upgradeStatus.js';
import { loadTinyEngine, startTestServer, TRANSPORTS, type TestServer } from '../helpers/startTestServer.js';


const now = () => Math.floor(Date.now() / 1000);
const encode = (value: unknown) => base64url.encode(JSON.stringify(value));

for (const transport of TRANSPORTS) {
  describe(`forged and malformed tokens over ${transport}`, () => {
    let engine: LlamaEngine;
    let server: TestServer;
    /** Signs claims with the server's own key: only the named defect makes a token invalid. */
    let sign: (claims: Record<string, unknown>, header?: Record<string, unknown>) => Promise<string>;
    let publicKeyBytes: Uint8Array;
    const valid = () => ({ sub: 'u_attack', name: 'x', role: 'user', ep: 0, iss: 'parley', aud: 'parley:ws', iat: now(), exp: now() + 300 });

    before(async () => {
      engine = await loadTinyEngine({ slots: 1, contextSize: 256 });
      server = await startTestServer(transport, engine, { upgradesPerMinute: 1000 });
      const key = await loadOrCreateSigningKey(server.dataDir);
      publicKeyBytes = base64url.decode((await exportJWK(key.publicKey)).x as string);
      sign = (claims, header = {}) => new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', typ: 'parley-access+jwt', ...header }).sign(key.privateKey);
    });
    after(async () => {
      await server.stop();
      await engine.dispose();
    });

    test('the baseline forged-by-the-test token is valid, so each defect below is what gets refused', async () => {
      assert.equal(await bearerUpgradeStatus(server.wsUrl, await sign(valid())), 101);
    });

    test('alg none is refused before the upgrade', async () => {
      const token = `${encode({ alg: 'none', typ: 'parley-access+jwt' })}.${encode(valid())}.`;
      assert.equal(await bearerUpgradeStatus(server.wsUrl, token), 401);
    });

    test('HS256 signed with the server public key (algorithm confusion) is refused', async () => {
      const token = await new SignJWT(valid()).setProtectedHeader({ alg: 'HS256', typ: 'parley-access+jwt' }).sign(publicKeyBytes);
      assert.equal(await bearerUpgradeStatus(server.wsUrl, token), 401);
    });

    test('a jwk header naming an attacker key is ignored: the signature must verify with the server key', async () => {
      const { generateKeyPair } = await import('jose');
      const attacker = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
      const token = await new SignJWT(valid())
        .setProtectedHeader({ alg: 'EdDSA', typ: 'parley-access+jwt', jwk: await exportJWK(attacker.publicKey), kid: 'attacker', jku: 'https://attacker.test/jwks' })
        .sign(attacker.privateKey);
      assert.equal(await bearerUpgradeStatus(server.wsUrl, token), 401);
    });

    const defects: Array<[string, () => Record<string, unknown>, Record<string, unknown>?]> = [
      ['a token without exp', () => ({ ...valid(), exp: undefined })],
      ['an expired token', () => ({ ...valid(), iat: now() - 600, exp: now() - 60 })],
      ['nbf in the future', () => ({ ...valid(), nbf: now() + 120 })],
      ['the wrong audience', () => ({ ...valid(), aud: 'parley:refresh' })],
      ['the wrong issuer', () => ({ ...valid(), iss: 'someone-else' })],
      ['the wrong typ (a refresh credential)', valid, { typ: 'parley-refresh+jwt' }],
      ['a token without sub', () => ({ ...valid(), sub: undefined })],
    ];
    for (const [name, claims, header] of defects) {
      test(`${name} is refused before the upgrade`, async () => {
        const body = Object.fromEntries(Object.entries(claims()).filter(([, value]) => value !== undefined));
        assert.equal(await bearerUpgradeStatus(server.wsUrl, await sign(body, header)), 401);
      });
    }

    test('one flipped signature byte is refused', async () => {
      const token = await sign(valid());
      const [h, p, s] = token.split('.') as [string, string, string];
      const bytes = base64url.decode(s);
      bytes[10] = (bytes[10] as number) ^ 0x01;
      assert.equal(await bearerUpgradeStatus(server.wsUrl, `${h}.${p}.${base64url.encode(bytes)}`), 401);
    });
  });
}
