/**
 * The facts rules see: one flat object per verdict, the same shape for Suricata EVE
 * events and nDPI flows, so one rule set can combine both.
 */

/** Facts of one verdict. Names follow EVE (`src_ip`, `app_proto`, `alert.*` flattened). */
export interface VerdictFacts {
  source: 'suricata' | 'ndpi';
  /** EVE `event_type` (`alert`, `dns`, …); `ndpi` for nDPI flows. */
  event_type: string;
  /** As written by the sensor. */
  timestamp: string;
  /** `timestamp` in ms since the epoch: the clock of sliding windows (replays stay deterministic). */
  time_ms: number;
  src_ip?: string;
  src_port?: number;
  dest_ip?: string;
  dest_port?: number;
  proto?: string;
  app_proto?: string;
  /** Kept as text: Suricata's flow ids are 64-bit and do not survive a JS number. */
  flow_id?: string;
  in_iface?: string;
  // alert.*
  signature_id?: number;
  signature?: string;
  category?: string;
  /** Suricata severity: 1 is the most severe. */
  severity?: number;
  /** What Suricata did: `allowed` (IDS) or `blocked` (inline IPS). */
  action?: string;
  // nDPI
  ndpi_protocol?: string;
  ndpi_master_protocol?: string;
  ndpi_app_protocol?: string;
  ndpi_category?: string;
  ndpi_risks?: string[];
  ndpi_risk_score?: number;
  /** nDPI's confidence text (`DPI`, `DPI (cache)`, `Match by port`, …). */
  ndpi_confidence?: string;
  /** The confidence as a level: 1 low (a guess by port or IP), 2 medium (DPI partial, cached, aggressive), 3 high (DPI). */
  ndpi_confidence_level?: number;
}

/** Fact names a rule set may use in conditions (checked at load time). */
export const FACT_NAMES: readonly (keyof VerdictFacts | 'window')[] = [
  'source',
  'event_type',
  'timestamp',
  'time_ms',
  'src_ip',
  'src_port',
  'dest_ip',
  'dest_port',
  'proto',
  'app_proto',
  'flow_id',
  'in_iface',
  'signature_id',
  'signature',
  'category',
  'severity',
  'action',
  'ndpi_protocol',
  'ndpi_master_protocol',
  'ndpi_app_protocol',
  'ndpi_category',
  'ndpi_risks',
  'ndpi_risk_score',
  'ndpi_confidence',
  'ndpi_confidence_level',
  'window',
];
