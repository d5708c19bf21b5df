import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';
import proxyaddr from 'proxy-addr';

/** Says whether an address (a TCP peer or an X-Forwarded-For hop) is a proxy Parley believes. */
export type TrustProxy = (address: string, hop: number) => boolean;

/** No proxy is believed: the client is always the TCP peer. */
export const trustNoProxy: TrustProxy = () => false;

type Headers = Readonly<Record<string, string | undefined>>;

/**
 * An entry of `--trust-proxy`: an IP address, a CIDR range (`10.0.1.0/24`), an address with a
 * netmask, or one of proxy-addr's names `loopback`, `linklocal`, `uniquelocal`.
 */
export function isTrustProxyEntry(entry: string): boolean {
  try {
    proxyaddr.compile(entry);
    return true;
  } catch {
    return false;
  }
}

/** Compiles `--trust-proxy` entries once; throws TypeError for an entry isTrustProxyEntry refuses. */
export function compileTrustProxy(entries: readonly string[]): TrustProxy {
  return entries.length === 0 ? trustNoProxy : proxyaddr.compile([...entries]);
}

/**
 * The client's address. When the TCP peer is a trusted proxy: the rightmost X-Forwarded-For
 * address that is not itself trusted, walking right to left through trusted hops (proxy-addr),
 * canonical (an IPv4-mapped IPv6 address becomes IPv4; IPv6 compressed, lower case), so one
 * client is one key whichever way a proxy writes it. Otherwise the peer, unchanged, and
 * X-Forwarded-For is not read: a client cannot claim another address. A forwarded entry that
 * is not an IP address gives the peer. Never throws.
 */
export function clientAddress(peer: string, headers: Headers, trust: TrustProxy): string {
  try {
    if (!trust(peer, 0)) return peer;
    // proxy-addr reads only the socket's remoteAddress and the X-Forwarded-For header.
    const request = { socket: { remoteAddress: peer }, headers: { 'x-forwarded-for': headers['x-forwarded-for'] } };
    const address = proxyaddr(request as unknown as IncomingMessage, trust);
    if (address === peer) return peer;
    // Strictly dotted or colon notation (ipaddr.js alone also takes forms such as `127.1`).
    return isIP(address) === 0 ? peer : ipaddr.process(address).toString();
  } catch {
    return peer;
  }
}

/**
 * True when the TCP peer is a trusted proxy whose X-Forwarded-Proto (its first value, as
 * Express reads it) is `https`: the client reached the proxy over TLS. Never from another peer.
 */
export function forwardedHttps(peer: string, headers: Headers, trust: TrustProxy): boolean {
  const proto = headers['x-forwarded-proto'];
  if (proto === undefined || !trust(peer, 0)) return false;
  return proto.split(',')[0]?.trim().toLowerCase() === 'https';
}
