import { mkdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { exportJWK, generateKeyPair, importJWK, type CryptoKey, type JWK } from 'jose';
import { createFileOnce } from './createFileOnce.js';

export interface SigningKey {
  readonly privateKey: CryptoKey;
  readonly publicKey: CryptoKey;
  /** Key id: a short fingerprint, so logs can say which key signed without revealing it. */
  readonly kid: string;
}

export const SIGNING_KEY_FILE = 'signing-key.jwk.json';

/**
 * Loads the server's Ed25519 signing key from the data dir, creating it (mode 0600) on first
 * start. There is no built-in default key: every installation signs with its own.
 * A key file readable by group or others is refused, because anyone who reads it can mint tokens.
 *
 * `sharedFile` (`--signing-key`) is the key every gateway of a cluster shares: it must exist (a
 * gateway that made its own would sign tokens no other gateway accepts), so it is never created.
 */
export async function loadOrCreateSigningKey(dataDir: string, sharedFile?: string): Promise<SigningKey> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const file = sharedFile ?? join(dataDir, SIGNING_KEY_FILE);
  if (sharedFile !== undefined && !(await exists(sharedFile))) {
    throw new Error(`--signing-key ${sharedFile} does not exist: copy ${SIGNING_KEY_FILE} from one gateway's data dir (made on its first start) to every gateway, mode 0600`);
  }
  if (!(await exists(file))) {
    const pair = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
    // If another process created the key meanwhile, its key wins and is read below.
    await createFileOnce(file, JSON.stringify(await exportJWK(pair.privateKey)));
  }
  const info = await stat(file);
  if (process.platform !== 'win32' && (info.mode & 0o077) !== 0) {
    throw new Error(`${file} is readable by other users (mode ${(info.mode & 0o777).toString(8)}); run: chmod 600 ${file}`);
  }
  const jwk = JSON.parse(await readFile(file, 'utf8')) as JWK;
  if (jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || typeof jwk.d !== 'string' || typeof jwk.x !== 'string') {
    throw new Error(`${file} is not an Ed25519 private key`);
  }
  const privateKey = (await importJWK(jwk, 'EdDSA')) as CryptoKey;
  const publicKey = (await importJWK({ kty: 'OKP', crv: 'Ed25519', x: jwk.x }, 'EdDSA')) as CryptoKey;
  return { privateKey, publicKey, kid: jwk.x.slice(0, 8) };
}

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
}
