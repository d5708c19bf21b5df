import { networkInterfaces } from 'node:os';

/**
 * The link people on the LAN open. The invite rides in the URL fragment, which browsers never
 * send to a server, so it cannot land in any access log.
 */
export function joinLink(host: string, port: number, invite: string, options: { tls?: boolean } = {}): string {
  const scheme = options.tls ? 'https' : 'http';
  return `${scheme}://${formatHost(lanAddress(host))}:${port}/#invite=${encodeURIComponent(invite)}`;
}

/** The address others reach this machine at: the bound address, or the first LAN IPv4. */
export function lanAddress(host: string): string {
  if (host !== '0.0.0.0' && host !== '::') return host;
  for (const addresses of Object.values(networkInterfaces())) {
    for (const address of addresses ?? []) {
      if (address.family === 'IPv4' && !address.internal) return address.address;
    }
  }
  return '127.0.0.1';
}

function formatHost(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}
