/**
 * What a node must never block automatically: its own addresses, the gateways its routes
 * go through and the DNS servers it resolves with. The node worker reports them (the
 * `reportProtectedAddresses` node activity) and the enforcement workflow adds them to the
 * guard's default allow-list (model/enforcement-guard.ts effectiveGuardConfig).
 *
 * Read from the kernel (`ip -json addr`, `ip -json route show table all`, in the node's
 * namespace) and from the resolver configuration file, each time it is asked: addresses
 * come and go (DHCP, failover), and a stale list would protect the wrong ones.
 */
import { readFile } from 'node:fs/promises';
import { formatCidr, parseIp } from '../../model/ip';
import type { NodeProtectedAddresses } from '../../model/enforcement-guard';
import type { IpRunner } from './ip-runner';

/** Where a node's protected addresses come from. */
export interface ProtectedAddressSources {
  ip: IpRunner;
  /** resolv.conf of the node (its `nameserver` lines); /etc/resolv.conf by default. */
  resolvConf?: string;
}

interface AddrJson {
  addr_info?: { local?: string }[];
}
interface RouteJson {
  gateway?: string;
  via?: { host?: string };
  nexthops?: { gateway?: string }[];
}

/** Reads the node's addresses, gateways and DNS servers (each a host prefix, deduplicated). */
export async function readProtectedAddresses(node: string, sources: ProtectedAddressSources): Promise<NodeProtectedAddresses> {
  const addrs = JSON.parse((await sources.ip.run(['-json', 'addr', 'show'])) || '[]') as AddrJson[];
  const routes = [
    ...(JSON.parse((await sources.ip.run(['-4', '-json', 'route', 'show', 'table', 'all'])) || '[]') as RouteJson[]),
    ...(JSON.parse((await sources.ip.run(['-6', '-json', 'route', 'show', 'table', 'all'])) || '[]') as RouteJson[]),
  ];
  const addresses = hostPrefixes(addrs.flatMap((a) => (a.addr_info ?? []).map((i) => i.local)));
  const gateways = hostPrefixes(routes.flatMap((r) => [r.gateway, r.via?.host, ...(r.nexthops ?? []).map((n) => n.gateway)]));
  return { node, addresses, gateways, dnsServers: hostPrefixes(await nameservers(sources.resolvConf ?? '/etc/resolv.conf')) };
}

/** `nameserver` addresses of a resolv.conf; none when it does not exist. */
async function nameservers(file: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  // An address with a zone (`fe80::1%eth0`) protects the address itself.
  return text.split('\n').flatMap((line) => /^\s*nameserver\s+(\S+)/.exec(line)?.[1]?.split('%')[0] ?? []);
}

function hostPrefixes(values: readonly (string | undefined)[]): string[] {
  const out = new Set<string>();
  for (const v of values) {
    const ip = v === undefined ? null : parseIp(v);
    if (ip) out.add(formatCidr({ family: ip.family, bytes: ip.bytes, prefixLength: ip.family === 4 ? 32 : 128 }));
  }
  return [...out];
}
