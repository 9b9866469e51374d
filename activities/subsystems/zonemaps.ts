/**
 * A change's zones in fos1's eBPF datapath (the pinned zone maps, bpf/zone-maps.ts): zone
 * membership (ifindex → zone id, the interfaces named in each zone, resolved on the node
 * when written) and zone-to-zone policy (zone pair → verdict, each zone's default). The
 * same zones also become nftables sets (activities/subsystems/zones.ts) for NAT and
 * firewall rules; this subsystem is what the packets meet first.
 *
 * Small state (at most a few thousand entries), so it travels by value: the snapshot is
 * the maps as read, a restore converges back to it, and the check is the planner from
 * the read-back to the expected state (any operation left is a difference).
 */
import { ZoneInterfaceMissingError } from '../../bpf/zone-maps';
import { FailureType, failure } from '../../model/failures';
import type { Zone } from '../../model/node-state';
import { type CheckOf, type IntentOf, type ReadScope, type StateCheck, type SubsystemContract, countLines } from '../../model/subsystem';
import {
  type ZoneMapOperation,
  type ZoneMapState,
  type ZoneName,
  ZoneMapResolveError,
  describeZoneMaps,
  patchZoneMaps,
  planZoneMaps,
  renderZoneMapOperation,
  withZoneMembers,
  zoneMapsOf,
} from '../../model/zone-maps';
import { zonesTouchedByMembers } from '../../model/plan';
import { resolveZonesPatch } from './zones';
import type { NatTable } from '../system/nat-table';

/** The zone maps as the subsystem uses them (bpf/zone-maps.ts `ZoneMaps`; the fake node's in tests). */
export interface ZoneMapStore {
  read(): ZoneMapState;
  /** All or nothing: one revert record per map write, undone newest first if one fails. */
  apply(ops: readonly ZoneMapOperation[]): void;
}

/** What planning reads: the maps, and (patches) the node's nft zones, which removals and membership are by. */
interface ZoneMapsRead {
  maps: ZoneMapState;
  known: ZoneName[];
  zones: Zone[];
}

type Intent = IntentOf<'zonemaps'>;

/** Builds the subsystem around the node's zone maps (opened lazily) and its nft zone sets (names). */
export function createZoneMapsSubsystem(maps: () => ZoneMapStore, nat: NatTable): SubsystemContract<'zonemaps', ZoneMapsRead> {
  const read = async (intent: Intent, reads: ReadScope): Promise<ZoneMapsRead> => {
    const current = maps().read();
    // Zones and NAT share one nft listing per activity call; a patch needs the names.
    const zones = intent.mode === 'patch' ? (await reads.once('nft', () => nat.readState())).zones : [];
    return { maps: current, known: zones.map((z: Zone) => ({ name: z.name, id: z.id })), zones };
  };
  const resolve = (observed: ZoneMapsRead, intent: Intent): ZoneMapState => {
    try {
      if (intent.mode === 'replace') return zoneMapsOf(intent.desired);
      if (intent.mode === 'patch') {
        const upsert = intent.patch.upsert ?? [];
        const remove = intent.patch.remove ?? [];
        const patched = patchZoneMaps(observed.maps, observed.known, { upsert, remove });
        const members = intent.patch.members;
        if (!members) return patched;
        // Membership resolves against the node's zones as the nft subsystem resolves it (one rule, one error).
        return withZoneMembers(patched, resolveZonesPatch(observed.zones, intent.patch), zonesTouchedByMembers(members));
      }
      return observed.maps;
    } catch (err) {
      if (err instanceof ZoneMapResolveError) throw failure(FailureType.ZoneApplyFailed, `eBPF zone maps: ${err.message}`);
      throw err;
    }
  };
  const execute = (ops: ZoneMapOperation[]): string[] => {
    try {
      maps().apply(ops);
    } catch (err) {
      if (err instanceof ZoneInterfaceMissingError) throw failure(FailureType.ZoneApplyFailed, `eBPF zone maps: ${err.message}`);
      throw err;
    }
    return ops.map(renderZoneMapOperation);
  };
  const asCheck = (check: StateCheck<ZoneMapState>) => check as CheckOf<'zonemaps'>;

  return {
    name: 'zonemaps',
    read,
    async plan(observed, intent) {
      const desired = resolve(observed, intent);
      const operations = planZoneMaps(observed.maps, desired).map(renderZoneMapOperation);
      return { plan: { operations, counts: countLines(operations) }, expected: asCheck({ kind: 'state', state: desired }) };
    },
    // By value, read anyway: a dry run gets it too.
    snapshot: async (observed) => ({ check: asCheck({ kind: 'state', state: observed.maps, restore: true }) }),
    describe: (observed) => describeZoneMaps(observed.maps),
    async apply(intent) {
      if (intent.mode === 'keep') return { operations: [] };
      const observed = await read(intent, { once: (_key, fn) => fn() });
      return { operations: execute(planZoneMaps(observed.maps, resolve(observed, intent))) };
    },
    check: async (check) => planZoneMaps(maps().read(), check.state).map((op) => `missing change: ${renderZoneMapOperation(op)}`),
    restore: async (snapshot) => ({ operations: execute(planZoneMaps(maps().read(), snapshot.check.state)) }),
  };
}
