/**
 * nDPI flow verdicts → {@link VerdictFacts}.
 *
 * Parses the per-flow lines `ndpiReader -v 2` prints (nDPI 4.2, Debian's libndpi-bin):
 *
 *   \t1\tTCP 192.168.1.3:52915 <-> 198.100.146.9:60163 [proto: 37/BitTorrent][…][cat: Download/7]…[Risk: ** A **** B **][Risk Score: 50]…
 *
 * The reader prints no per-flow timestamp, so the caller supplies the observation time.
 */
import { formatIp, parseIp } from '../model/ip';
import type { VerdictFacts } from './facts';

const FLOW_LINE = /^\s*\d+\s+(\S+)\s+(\S+)\s+<->\s+(\S+)\s+(.*)$/;
const ENDPOINT = /^\[?([0-9A-Fa-f.:]+?)\]?:(\d+)$/;

/** Result of parsing one line of ndpiReader output; `skip` for lines that are not flows. */
export type NdpiParseResult = { ok: true; facts: VerdictFacts } | { ok: false; reason: string } | { skip: true };

/** Parses one line of `ndpiReader -v 2` output. Never throws. */
export function parseNdpiFlowLine(line: string, observedAtMs: number): NdpiParseResult {
  const m = FLOW_LINE.exec(line);
  if (!m || !line.includes('[proto:')) return { skip: true };
  const [, proto, srcText, destText, rest] = m as unknown as [string, string, string, string, string];
  const src = endpoint(srcText);
  const dest = endpoint(destText);
  if (!src) return { ok: false, reason: `source endpoint "${srcText}" is not address:port` };
  if (!dest) return { ok: false, reason: `destination endpoint "${destText}" is not address:port` };
  const fields = bracketFields(rest);
  const protoField = fields.get('proto');
  if (!protoField) return { ok: false, reason: 'flow has no [proto: …] field' };
  // "37/BitTorrent", "91.126/TLS.Google": numeric ids, then master.app names.
  const protocol = protoField.slice(protoField.indexOf('/') + 1);
  const [master, app] = protocol.split('.', 2) as [string, string | undefined];
  const facts: VerdictFacts = {
    source: 'ndpi',
    event_type: 'ndpi',
    timestamp: new Date(observedAtMs).toISOString(),
    time_ms: observedAtMs,
    proto,
    src_ip: src.ip,
    src_port: src.port,
    dest_ip: dest.ip,
    dest_port: dest.port,
    ndpi_protocol: protocol,
    ndpi_master_protocol: master,
    ndpi_app_protocol: app ?? master,
    app_proto: (app ?? master).toLowerCase(),
  };
  const cat = fields.get('cat');
  if (cat) facts.ndpi_category = cat.replace(/\/\d+$/, '');
  const risk = fields.get('Risk');
  facts.ndpi_risks = risk
    ? risk
        .split('**')
        .map((r) => r.trim())
        .filter((r) => r !== '')
    : [];
  const score = fields.get('Risk Score');
  facts.ndpi_risk_score = score && /^\d+$/.test(score) ? Number(score) : 0;
  const confidence = fields.get('Confidence');
  facts.ndpi_confidence_level = confidenceLevel(confidence);
  if (confidence) facts.ndpi_confidence = confidence;
  return { ok: true, facts };
}

/**
 * nDPI's confidence (ndpi_confidence_t) as a level a DPIProfile's `minConfidence` compares
 * with: `high` 3 for a match by inspection (`DPI`, `nBPF`), `medium` 2 for inspection of
 * part of the flow or a cached verdict (`DPI (partial)`, `DPI (cache)`, `DPI (aggressive)`…),
 * `low` 1 for a guess (`Match by port`, `Match by IP`) or none printed.
 */
export function confidenceLevel(confidence: string | undefined): number {
  if (confidence === 'DPI' || confidence === 'nBPF') return 3;
  if (confidence?.startsWith('DPI')) return 2;
  return 1;
}

function endpoint(text: string): { ip: string; port: number } | null {
  const m = ENDPOINT.exec(text);
  if (!m) return null;
  const ip = parseIp(m[1]!);
  const port = Number(m[2]);
  if (!ip || port > 65535) return null;
  return { ip: formatIp(ip.family, ip.bytes), port };
}

/** `[key: value][Flag][key: value]` → key → value (flags map to ""). */
function bracketFields(text: string): Map<string, string> {
  const out = new Map<string, string>();
  let depth = 0;
  let start = -1;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === '[') {
      if (depth === 0) start = i + 1;
      depth++;
    } else if (ch === ']' && depth > 0) {
      depth--;
      if (depth === 0) {
        const body = text.slice(start, i);
        const colon = body.indexOf(': ');
        if (colon === -1) out.set(body, '');
        else out.set(body.slice(0, colon), body.slice(colon + 2));
      }
    }
  }
  return out;
}
