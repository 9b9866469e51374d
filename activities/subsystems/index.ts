/**
 * The registry of a node's subsystems: one entry per file in this folder. The node
 * activities (activities/node-activities.ts) dispatch the contract's verbs by name, so
 * the node workflow drives every subsystem through one loop. Adding a subsystem: write
 * its file, add it here, and give it its place in SUBSYSTEM_ORDER (model/subsystem.ts);
 * see docs/adding-a-subsystem.md.
 */
import type { BlocklistMaps } from '../../bpf/blocklist-maps';
import type { RateLimitMaps } from '../../bpf/ratelimit-maps';
import type { IntentOf, PreparedOf, ReadScope, Subsystem, SubsystemContract } from '../../model/subsystem';
import type { BlocklistStore } from '../blocklist-sync';
import type { LinkTable } from '../system/link-table';
import type { NatTable } from '../system/nat-table';
import type { RouteTable } from '../system/route-table';
import type { RuleTable } from '../system/rule-table';
import type { Logger } from 'pino';
import { createAddressesSubsystem } from './addresses';
import { createBlocklistSubsystem } from './blocklist';
import { createLinksSubsystem } from './links';
import { createNatSubsystem } from './nat';
import { createRateLimitsSubsystem } from './ratelimits';
import { createRoutesSubsystem } from './routes';
import { createRulesSubsystem } from './rules';
import { createVlansSubsystem } from './vlans';
import { onceScope } from './table';
import { createZonesSubsystem } from './zones';
import { createZoneMapsSubsystem, type ZoneMapStore } from './zonemaps';

/** What the subsystems act on. */
export interface SubsystemDeps {
  routes: RouteTable;
  links: LinkTable;
  rules: RuleTable;
  nat: NatTable;
  /** The node's rate-limit maps, opened on first use. */
  rateLimits: () => RateLimitMaps;
  /** The node's eBPF zone maps, opened on first use. */
  zoneMaps: () => ZoneMapStore;
  /** The node's blocklist maps, opened on first use. */
  blocklist: () => BlocklistMaps;
  blocklistStore: BlocklistStore;
  logger?: Logger;
}

/** Every subsystem of a node, by name. */
export type Subsystems = { [S in Subsystem]: SubsystemContract<S> };

/** Builds every subsystem of a node. */
export function createSubsystems(deps: SubsystemDeps): Subsystems {
  return {
    links: createLinksSubsystem(deps.links),
    vlans: createVlansSubsystem(deps.links),
    addresses: createAddressesSubsystem(deps.links),
    routes: createRoutesSubsystem(deps.routes),
    rules: createRulesSubsystem(deps.rules),
    zonemaps: createZoneMapsSubsystem(deps.zoneMaps, deps.nat),
    zones: createZonesSubsystem(deps.nat),
    nat: createNatSubsystem(deps.nat),
    ratelimits: createRateLimitsSubsystem(deps.rateLimits),
    blocklist: createBlocklistSubsystem({ maps: deps.blocklist, store: deps.blocklistStore, ...(deps.logger ? { logger: deps.logger } : {}) }),
  };
}

/**
 * The node's answer to one intent: read, plan, and (see {@link SubsystemContract.snapshot})
 * the snapshot a rollback restores.
 */
export async function prepareSubsystem<S extends Subsystem>(impl: SubsystemContract<S>, intent: IntentOf<S>, options: { dryRun: boolean; reads?: ReadScope }): Promise<PreparedOf<S>> {
  const observed = await impl.read(intent, options.reads ?? onceScope());
  const { plan, expected } = await impl.plan(observed, intent);
  const snapshot = await impl.snapshot(observed, intent, options.dryRun);
  return { plan, expected, ...(snapshot ? { snapshot } : {}), summary: impl.describe(observed, snapshot) };
}
