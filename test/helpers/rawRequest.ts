import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';

export interface RawResponse {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

/**
 * One HTTP(S) request through node:http, which (unlike fetch) may set any Host header and
 * sends no Origin, User-Agent or Sec-Fetch-* unless given. `ca` trusts a test certificate;
 * `servername` is the name the certificate is checked against when Host is something else.
 * `localAddress` sends from another address of this machine (e.g. 127.0.0.2: a second device).
 */
export function rawRequest(
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: string | Buffer; ca?: Buffer; servername?: string; localAddress?: string } = {},
): Promise<RawResponse> {
  const request = url.startsWith('https:') ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    // node:https checks the certificate against the Host header unless `servername` is given.
    const tls = options.servername === undefined ? {} : { servername: options.servername };
    const req = request(url, { method: options.method ?? 'GET', headers: options.headers, ca: options.ca, localAddress: options.localAddress, agent: false, ...tls }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(options.body);
  });
}
