/** The addresses of the interfaces whose address list a change gives, as a subsystem. */
import { planAddresses } from '../../model/plan';
import type { LinkTable } from '../system/link-table';
import { readInterfaces, resolveInterfaces, restorable } from './interfaces';
import { tableSubsystem } from './table';

export function createAddressesSubsystem(links: LinkTable) {
  return tableSubsystem({
    name: 'addresses',
    read: (reads) => readInterfaces(links, reads),
    resolve: resolveInterfaces,
    plan: planAddresses,
    sync: (desired, { restore }) => links.syncAddresses(desired, { restore }),
    restorable,
    describe: (observed) => `${observed.reduce((n, i) => n + i.addresses.length, 0)} addresses`,
  });
}
