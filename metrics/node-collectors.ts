/**
 * Metrics read from a node's pinned eBPF maps at scrape time (nothing is counted in fos1's own
 * memory, so they are right however many processes write the maps): entries and fill ratio of
 * the blocklist and rate-limit maps, and the datapath's own per-CPU counters — drops per reason
 * (`drop_stats`, read as the datapath gate reads it, bpf/drop-stats.ts), packets/bytes per rule
 * id (`rule_stats`, counted for allow, log and deny verdicts and rate-limit rules alike; the
 * `action` label comes from the zone maps) and, from the same counters, passes per reason (an
 * explicit allow/log rule or a zone's allow/log default; a verdict without a rule id is not
 * counted by the programs, so neither here). A map that is not pinned (the datapath not
 * loaded, no blocklist yet) is simply absent from the scrape.
 *
 * Reading the entry counts walks each map's keys: O(entries) syscalls per scrape, about a second
 * for a million-entry blocklist, so scrape a large node every 30 s or slower.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Counter, Gauge } from 'prom-client';
import { BLOCKHOST_V4_MAP, BLOCKHOST_V6_MAP, BLOCKLIST_V4_MAP, BLOCKLIST_V6_MAP } from '../bpf/blocklist-maps';
import { decodeZoneVerdict, encodeU32, sumCounters, type ZoneActionName } from '../bpf/datapath-codec';
import { DROP_STATS_MAP, openDropStats, readDropCounts } from '../bpf/drop-stats';
import { BpfMap } from '../bpf/map';
import { RATELIMIT_V4_MAP, RATELIMIT_V6_MAP } from '../bpf/ratelimit-maps';
import { registry } from './registry';

const BLOCKLIST_MAPS = [BLOCKLIST_V4_MAP, BLOCKLIST_V6_MAP, BLOCKHOST_V4_MAP, BLOCKHOST_V6_MAP];
const RATELIMIT_MAPS = [RATELIMIT_V4_MAP, RATELIMIT_V6_MAP];
/** Rule ids the datapath counts (`FOS1_MAX_RULES`). */
const MAX_RULES = 4096;
/** Zones of `zone_default` (`FOS1_MAX_ZONES`). */
const MAX_ZONES = 256;

/** Opens a pinned map for one read, or undefined when it is not pinned. */
function withPinned<T>(pinDir: string, name: string, read: (map: BpfMap) => T): T | undefined {
  const path = join(pinDir, name);
  if (!existsSync(path)) return undefined;
  const map = BpfMap.openPinned(path);
  try {
    return read(map);
  } finally {
    map.close();
  }
}

function countKeys(map: BpfMap): number {
  let n = 0;
  for (const _ of map.keys()) n++;
  return n;
}

/** The zone verdict carrying a rule id: its action, and whether it is an explicit rule or a zone's default. */
interface RuleVerdict {
  action: ZoneActionName;
  reason: 'zone-rule' | 'zone-default';
}

/** Rule id → the zone verdict that carries it (zone_policy first, then zone_default). */
function ruleVerdicts(pinDir: string): Map<number, RuleVerdict> {
  const verdicts = new Map<number, RuleVerdict>();
  withPinned(pinDir, 'zone_policy', (map) => {
    for (const [, value] of map.entries()) {
      const v = decodeZoneVerdict(value);
      if (v.ruleId !== 0) verdicts.set(v.ruleId, { action: v.action, reason: 'zone-rule' });
    }
  });
  withPinned(pinDir, 'zone_default', (map) => {
    for (let zone = 0; zone < MAX_ZONES; zone++) {
      const value = map.lookup(encodeU32(zone));
      if (!value) continue;
      const v = decodeZoneVerdict(value);
      if (v.ruleId !== 0 && !verdicts.has(v.ruleId)) verdicts.set(v.ruleId, { action: v.action, reason: 'zone-default' });
    }
  });
  return verdicts;
}

/** Node name → its pin folder, for every node this process serves. */
const nodes = new Map<string, string>();

/**
 * Adds a node whose maps are pinned under `pinDir` to this process's scrape (a node worker
 * serves one; `npm start`'s sandbox may serve several). Every map metric carries `node`.
 */
export function registerNodeMapMetrics(node: string, pinDir: string): void {
  const known = nodes.get(node);
  if (known !== undefined && known !== pinDir) throw new Error(`node ${node}: its map metrics are already read from ${known}, not ${pinDir}`);
  nodes.set(node, pinDir);
  if (nodes.size === 1 && known === undefined) createCollectors();
}

function createCollectors(): void {
  // Set by the entry gauges' collect (one walk per map), so registered after them: the registry
  // collects metrics in registration order.
  const fill = new Gauge({ name: 'fos1_bpf_map_fill_ratio', help: 'Entries over max_entries of a blocklist or rate-limit map, read from the pinned map at scrape', labelNames: ['node', 'map'] as const, registers: [] });
  const entries = (name: string, help: string, maps: string[]) =>
    new Gauge({
      name,
      help,
      labelNames: ['node', 'map'] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const [node, pinDir] of nodes) {
          for (const mapName of maps) {
            withPinned(pinDir, mapName, (map) => {
              const count = countKeys(map);
              this.set({ node, map: mapName }, count);
              fill.set({ node, map: mapName }, map.info.maxEntries > 0 ? count / map.info.maxEntries : 0);
            });
          }
        }
      },
    });
  entries('fos1_blocklist_entries', 'Entries in a blocklist map (LPM prefixes, single hosts), read from the pinned map at scrape', BLOCKLIST_MAPS);
  entries('fos1_ratelimit_entries', 'Entries in a rate-limit map, read from the pinned map at scrape', RATELIMIT_MAPS);
  registry.registerMetric(fill);

  new Counter({
    name: 'fos1_datapath_drops_total',
    help: "Packets the datapath dropped, by reason (the programs' per-CPU drop_stats counters, summed)",
    labelNames: ['node', 'reason'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const [node, pinDir] of nodes) {
        if (!existsSync(join(pinDir, DROP_STATS_MAP))) continue;
        // The gate's own reader (bpf/drop-stats.ts), layout checked: one way to read the counters.
        const map = openDropStats(pinDir);
        try {
          for (const [reason, packets] of Object.entries(readDropCounts(map))) this.inc({ node, reason }, Number(packets));
        } finally {
          map.close();
        }
      }
    },
  });
  // Set by the packets counter's collect (one read of rule_stats), registered after it.
  const passes = new Counter({
    name: 'fos1_datapath_passes_total',
    help: 'Packets the datapath let through on a zone verdict, by reason (zone-rule: an explicit allow or log rule; zone-default: the zone\'s allow or log default), summed from the per-CPU rule_stats counters',
    labelNames: ['node', 'reason'] as const,
    registers: [],
  });
  const ruleBytes = new Counter({ name: 'fos1_datapath_rule_bytes_total', help: 'Bytes the datapath counted under a rule id, by the action of the zone verdict carrying it (other: a rate-limit rule)', labelNames: ['node', 'rule_id', 'action'] as const, registers: [] });
  new Counter({
    name: 'fos1_datapath_rule_packets_total',
    help: 'Packets the datapath counted under a rule id (passed by allow and log verdicts, dropped by deny verdicts), by the action of the zone verdict carrying it (other: a rate-limit rule)',
    labelNames: ['node', 'rule_id', 'action'] as const,
    registers: [registry],
    collect() {
      this.reset();
      ruleBytes.reset();
      passes.reset();
      for (const [node, pinDir] of nodes) {
        withPinned(pinDir, 'rule_stats', (map) => {
          const verdicts = ruleVerdicts(pinDir);
          // Both reasons appear (at 0) once the datapath is loaded: a rate() has a series from the start.
          for (const reason of ['zone-rule', 'zone-default'] as const) passes.inc({ node, reason }, 0);
          for (let id = 1; id < MAX_RULES; id++) {
            const c = sumCounters(map.lookupPerCpu(encodeU32(id)));
            if (c.packets === 0n) continue;
            const verdict = verdicts.get(id);
            const labels = { node, rule_id: String(id), action: verdict?.action ?? 'other' };
            this.inc(labels, Number(c.packets));
            ruleBytes.inc(labels, Number(c.bytes));
            if (verdict && verdict.action !== 'deny') passes.inc({ node, reason: verdict.reason }, Number(c.packets));
          }
        });
      }
    },
  });
  registry.registerMetric(ruleBytes);
  registry.registerMetric(passes);
}
