/** fos1's zones (named sets in its nftables table) as a subsystem. */
import { patchZones, planZones } from '../../model/plan';
import type { NatTable } from '../system/nat-table';
import { resolveTable, tableSubsystem } from './table';

export function createZonesSubsystem(nat: NatTable) {
  return tableSubsystem({
    name: 'zones',
    // Zones and NAT share fos1's nft table: one listing per prepare or check.
    read: async (reads) => (await reads.once('nft', () => nat.readState())).zones,
    resolve: (observed, intent) => resolveTable(observed, intent, patchZones),
    plan: planZones,
    sync: (desired) => nat.syncZones(desired),
    describe: (observed) => `${observed.length} zones`,
  });
}
