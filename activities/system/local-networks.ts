/**
 * What a node counts as its local networks, read from the kernel the way its protected
 * addresses are (activities/system/protected-addresses.ts): `ip -json addr` (addresses with
 * their prefix length), the default routes of every table (which interfaces face the
 * outside) and fos1's zones (its nftables table). Read each time it is asked: addresses and
 * zones change, and a stale view would aim a DPI verdict at the wrong side of a flow.
 * model/local-networks.ts turns the view into prefixes and applies the remote-endpoint rule.
 */
import { localNetworksOf, type LocalNetworks, type LocalNetworksOptions, type NodeNetworkView } from '../../model/local-networks';
import type { IpRunner } from './ip-runner';
import type { NatTable } from './nat-table';

/** Where a node's network view comes from. */
export interface LocalNetworkSources {
  ip: IpRunner;
  /** fos1's nftables table (its zones); without it the node is read as having no zones. */
  nat?: Pick<NatTable, 'readZones'>;
}

interface AddrJson {
  ifname?: string;
  addr_info?: { local?: string; prefixlen?: number; scope?: string }[];
}
interface RouteJson {
  dev?: string;
  nexthops?: { dev?: string }[];
}

/** Reads the node's interfaces, default-route interfaces and zones. */
export async function readNodeNetworkView(sources: LocalNetworkSources): Promise<NodeNetworkView> {
  const addrs = JSON.parse((await sources.ip.run(['-json', 'addr', 'show'])) || '[]') as AddrJson[];
  const defaults = [
    ...(JSON.parse((await sources.ip.run(['-4', '-json', 'route', 'show', 'table', 'all', 'exact', '0.0.0.0/0'])) || '[]') as RouteJson[]),
    ...(JSON.parse((await sources.ip.run(['-6', '-json', 'route', 'show', 'table', 'all', 'exact', '::/0'])) || '[]') as RouteJson[]),
  ];
  const interfaces = addrs
    .filter((a) => a.ifname !== undefined)
    .map((a) => ({
      name: a.ifname!,
      // Host- and link-scope addresses (loopback, fe80::) name no network a flow is routed from.
      addresses: (a.addr_info ?? []).filter((i) => i.local !== undefined && i.prefixlen !== undefined && i.scope !== 'host' && i.scope !== 'link').map((i) => `${i.local}/${i.prefixlen}`),
    }));
  const defaultRouteInterfaces = [...new Set(defaults.flatMap((r) => [r.dev, ...(r.nexthops ?? []).map((n) => n.dev)]).filter((d): d is string => d !== undefined))];
  const zones = sources.nat ? (await sources.nat.readZones()).map((z) => ({ name: z.name, interfaces: z.interfaces, prefixes: z.prefixes })) : [];
  return { interfaces, zones, defaultRouteInterfaces };
}

/** Reads the view and applies model/local-networks.ts's rule. */
export async function readLocalNetworks(sources: LocalNetworkSources, options: LocalNetworksOptions = {}): Promise<LocalNetworks> {
  return localNetworksOf(await readNodeNetworkView(sources), options);
}
