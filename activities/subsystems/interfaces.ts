/**
 * What the links, VLANs and addresses subsystems share: the interface table (`ip link`
 * and `ip addr`, read once per prepare or check for all three) and how a change resolves
 * against it.
 */
import type { InterfaceConfig, ObservedInterface } from '../../model/node-state';
import { patchInterfaces, restorableInterfaces } from '../../model/plan';
import type { ReadScope, SubsystemTypes } from '../../model/subsystem';
import type { LinkTable } from '../system/link-table';
import { resolveTable } from './table';

/** Reads every interface (once per scope). */
export const readInterfaces = (links: LinkTable, reads: ReadScope): Promise<ObservedInterface[]> => reads.once('interfaces', () => links.read());

/** The interfaces a change wants. */
export const resolveInterfaces = (observed: ObservedInterface[], intent: SubsystemTypes['links']['intent']): (ObservedInterface | InterfaceConfig)[] =>
  resolveTable<ObservedInterface[], InterfaceConfig[], Parameters<typeof patchInterfaces>[1] & object>(observed, intent, patchInterfaces);

/** A restore brings back fos1's VLANs and every interface still present (see restorableInterfaces). */
export const restorable = (snapshot: (ObservedInterface | InterfaceConfig)[], present: ObservedInterface[]) => restorableInterfaces(snapshot, present);
