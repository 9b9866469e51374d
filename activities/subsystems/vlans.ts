/** fos1's 802.1Q VLAN sub-interfaces as a subsystem (KernelFeatureMissing on a kernel without them). */
import { planVlans } from '../../model/plan';
import type { LinkTable } from '../system/link-table';
import { readInterfaces, resolveInterfaces, restorable } from './interfaces';
import { tableSubsystem } from './table';

export function createVlansSubsystem(links: LinkTable) {
  return tableSubsystem({
    name: 'vlans',
    read: (reads) => readInterfaces(links, reads),
    resolve: resolveInterfaces,
    plan: planVlans,
    sync: (desired) => links.syncVlans(desired),
    restorable,
    describe: (observed) => `${observed.filter((i) => i.vlan).length} VLANs`,
  });
}
