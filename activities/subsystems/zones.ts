/** fos1's zones (named sets in its nftables table) as a subsystem. */
import { FailureType, failure } from '../../model/failures';
import { patchZonesAndMembers, planZones, ZoneMembershipError, type ZonesPatch } from '../../model/plan';
import type { Zone } from '../../model/node-state';
import type { NatTable } from '../system/nat-table';
import { resolveTable, tableSubsystem } from './table';

export function createZonesSubsystem(nat: NatTable) {
  return tableSubsystem({
    name: 'zones',
    // Zones and NAT share fos1's nft table: one listing per prepare or check.
    read: async (reads) => (await reads.once('nft', () => nat.readState())).zones,
    resolve: (observed, intent) => resolveTable(observed, intent, resolveZonesPatch),
    plan: planZones,
    sync: (desired) => nat.syncZones(desired),
    describe: (observed) => `${observed.length} zones`,
  });
}

/** The zones after a patch (whole zones, then membership), a membership error as its failure type. */
export function resolveZonesPatch(observed: readonly Zone[], part: ZonesPatch): Zone[] {
  try {
    return patchZonesAndMembers(observed, part);
  } catch (err) {
    throw zoneMembershipFailure(err);
  }
}

/** A {@link ZoneMembershipError} as the failure the change reports (`ZoneNotFound`, `ZoneMembershipConflict`); anything else as it is. */
export function zoneMembershipFailure(err: unknown): unknown {
  if (!(err instanceof ZoneMembershipError)) return err;
  return failure(err.reason === 'not-found' ? FailureType.ZoneNotFound : FailureType.ZoneMembershipConflict, err.message);
}
