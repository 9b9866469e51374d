/** fos1's NAT rules (source NAT and port forwards in its nftables table) as a subsystem. */
import { planNat } from '../../model/plan';
import type { NatTable } from '../system/nat-table';
import { resolveTable, tableSubsystem } from './table';

export function createNatSubsystem(nat: NatTable) {
  return tableSubsystem({
    name: 'nat',
    read: async (reads) => (await reads.once('nft', () => nat.readState())).config,
    // NAT rules are ordered (first match wins): a change gives the whole config or none.
    resolve: (observed, intent) => resolveTable(observed, intent, (config: typeof observed) => config),
    plan: planNat,
    sync: (desired) => nat.sync(desired),
    describe: (observed) => `${observed.sourceNat.length + observed.portForwards.length} NAT rules`,
  });
}
