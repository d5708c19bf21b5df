import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { TlsFiles } from './Transport.js';

export class TlsFilesError extends Error {
  override name = 'TlsFilesError';
  readonly code = 'invalid_tls_files';
}

/**
 * Reads and checks the PEM pair before a transport gets the file names, so a wrong path, a
 * file that is not PEM, an encrypted key or a key that does not belong to the certificate is
 * reported by name (uWS only says "App construction failed"). Returns what the startup log shows.
 */
export async function checkTlsFiles(files: TlsFiles): Promise<{ subjectAltName: string; validTo: string }> {
  const read = async (path: string, what: string) => {
    try {
      return await readFile(path);
    } catch (error) {
      throw new TlsFilesError(`cannot read the TLS ${what} ${path}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`);
    }
  };
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(await read(files.certFile, 'certificate'));
  } catch (error) {
    if (error instanceof TlsFilesError) throw error;
    throw new TlsFilesError(`${files.certFile} is not a PEM certificate`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(await read(files.keyFile, 'key'));
  } catch (error) {
    if (error instanceof TlsFilesError) throw error;
    throw new TlsFilesError(`${files.keyFile} is not an unencrypted PEM private key`);
  }
  if (!certificate.checkPrivateKey(key)) {
    throw new TlsFilesError(`the key ${files.keyFile} does not belong to the certificate ${files.certFile}`);
  }
  return { subjectAltName: certificate.subjectAltName ?? '', validTo: certificate.validTo };
}
