import { hostname, networkInterfaces } from 'node:os';

/**
 * The names and addresses by which this machine is legitimately reached: loopback names,
 * every interface address, the hostname and its mDNS `.local` form, and the bound address
 * when it is a specific one. Lower case; IPv6 without brackets or zone id. Read once at
 * startup: an address that appears later (a new DHCP lease) needs a restart or --allowed-host.
 */
export function localHostNames(bindHost: string): string[] {
  const names = new Set<string>(['localhost', '127.0.0.1', '::1']);
  for (const addresses of Object.values(networkInterfaces())) {
    for (const address of addresses ?? []) names.add(address.address.toLowerCase().split('%')[0] as string);
  }
  const machine = hostname().toLowerCase();
  if (machine) {
    names.add(machine);
    if (!machine.endsWith('.local')) names.add(`${machine}.local`);
  }
  if (bindHost !== '0.0.0.0' && bindHost !== '::') names.add(bindHost.toLowerCase().replace(/^\[|\]$/g, ''));
  return [...names];
}
