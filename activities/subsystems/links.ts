/** MTU and admin state of the interfaces a change names, as a subsystem. */
import { planLinks } from '../../model/plan';
import type { LinkTable } from '../system/link-table';
import { readInterfaces, resolveInterfaces, restorable } from './interfaces';
import { tableSubsystem } from './table';

export function createLinksSubsystem(links: LinkTable) {
  return tableSubsystem({
    name: 'links',
    read: (reads) => readInterfaces(links, reads),
    resolve: resolveInterfaces,
    plan: planLinks,
    // `restore`: a foreign interface that vanished since the snapshot is skipped, not an error.
    sync: (desired, { restore }) => links.syncLinks(desired, { restore }),
    restorable,
    describe: (observed) => `${observed.length} interfaces`,
  });
}
