/**
 * fos1's per-reason drop counters (`drop_stats`, a per-CPU array pinned with the datapath's
 * other maps): how many packets the programs dropped for each `FOS1_REASON_*`. Read without
 * loading the programs, so a node worker can sample them for a rollout's datapath gate.
 */
import { join } from 'node:path';
import { DROP_REASONS, type DropReasonName } from '../model/gates';
import { DATAPATH_LAYOUTS, encodeU32, sumCounters } from './datapath-codec';
import { BPF_MAP_TYPE_PERCPU_ARRAY, BpfMap } from './map';

/** Name of the pinned map. */
export const DROP_STATS_MAP = 'drop_stats';

/** Dropped packets per reason, all CPUs summed. */
export type DropCounts = Record<DropReasonName, bigint>;

/** Reads the counters from an open `drop_stats` map. */
export function readDropCounts(map: BpfMap): DropCounts {
  const counts = {} as DropCounts;
  // FOS1_REASON_* ids are 1-based, in DROP_REASONS order.
  DROP_REASONS.forEach((reason, i) => {
    counts[reason] = sumCounters(map.lookupPerCpu(encodeU32(i + 1))).packets;
  });
  return counts;
}

/**
 * Opens the pinned `drop_stats` of a node's pin folder, checking its layout. Throws
 * BpfNotFoundError when the datapath programs were never loaded there.
 */
export function openDropStats(pinDir: string): BpfMap {
  return BpfMap.openPinned(join(pinDir, DROP_STATS_MAP), {
    type: BPF_MAP_TYPE_PERCPU_ARRAY,
    keySize: 4,
    valueSize: DATAPATH_LAYOUTS.fos1_counter.size,
  });
}
