/**
 * Suricata EVE JSON → {@link VerdictFacts}.
 *
 * The field types follow Suricata's own EVE schema (etc/schema.json: `timestamp` and
 * `event_type` required; `src_ip`/`dest_ip` strings, ports integers, `alert.signature_id`
 * and `alert.severity` integers). The schema is applied only to the fields rules use,
 * never to the whole record: Suricata 4.x–6.x wrote records (DNS v1 answers, older
 * stats counters) that the 8.x schema's `additionalProperties: false` rejects, and a
 * sensor upgrade must not silence the IDS. A line is refused only when a field a rule
 * needs is missing or malformed; the reason says which.
 */
import { z } from 'zod';
import { formatIp, parseIp } from '../model/ip';
import type { VerdictFacts } from './facts';

const port = z.number().int().min(0).max(65535);
// Addresses are checked (and canonicalised) after the schema, through a cache: the
// same few thousand addresses recur in every busy stream.
const ip = z.string();

/** The EVE fields fos1 reads, typed as in Suricata's schema. Unknown fields are ignored. */
export const eveRecordSchema = z.object({
  timestamp: z.string().refine((s) => !Number.isNaN(Date.parse(s)), 'must be a timestamp (e.g. 2018-07-05T19:01:09.820683+0200)'),
  event_type: z.string().min(1, 'must name the event type'),
  src_ip: ip.optional(),
  src_port: port.optional(),
  dest_ip: ip.optional(),
  dest_port: port.optional(),
  proto: z.string().optional(),
  app_proto: z.string().optional(),
  in_iface: z.string().optional(),
  // An unsigned 64-bit integer in the schema; past 2^53 JSON.parse hands over an inexact
  // double (which zod's int() refuses), so only the sign is checked and the digits are
  // taken from the text.
  flow_id: z.number().nonnegative().optional(),
});

/** The alert object; required for `event_type: "alert"`, whose rules key on it. */
export const eveAlertSchema = z.object({
  action: z.string().optional(),
  signature_id: z.number().int().nonnegative(),
  signature: z.string().optional(),
  category: z.string().optional(),
  severity: z.number().int().min(1).max(255),
});

/** Result of parsing one line. */
export type EveParseResult = { ok: true; facts: VerdictFacts } | { ok: false; reason: string };

// The flow id as written, before JSON.parse rounds it to a double.
const FLOW_ID_TEXT = /"flow_id"\s*:\s*(\d+)/;

/**
 * Parses one EVE line. Never throws: a bad line comes back with the reason, naming
 * the field and the rule (`alert.severity: expected number`).
 */
export function parseEveLine(line: string): EveParseResult {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch (err) {
    return { ok: false, reason: `not JSON: ${err instanceof Error ? err.message : String(err)}` };
  }
  return parseEveRecord(raw, line);
}

/** Parses an already decoded EVE record; `line` (optional) recovers the exact flow id. */
export function parseEveRecord(raw: unknown, line?: string): EveParseResult {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return { ok: false, reason: 'not a JSON object' };
  const parsed = eveRecordSchema.safeParse(raw);
  if (!parsed.success) return { ok: false, reason: describe(parsed.error) };
  const r = parsed.data;
  const facts: VerdictFacts = {
    source: 'suricata',
    event_type: r.event_type,
    timestamp: r.timestamp,
    time_ms: Date.parse(normaliseOffset(r.timestamp)),
  };
  if (r.src_ip !== undefined) {
    const src = canonicalAddress(r.src_ip);
    if (src === null) return { ok: false, reason: `src_ip: "${r.src_ip}" is not an IPv4 or IPv6 address` };
    facts.src_ip = src;
  }
  if (r.src_port !== undefined) facts.src_port = r.src_port;
  if (r.dest_ip !== undefined) {
    const dest = canonicalAddress(r.dest_ip);
    if (dest === null) return { ok: false, reason: `dest_ip: "${r.dest_ip}" is not an IPv4 or IPv6 address` };
    facts.dest_ip = dest;
  }
  if (r.dest_port !== undefined) facts.dest_port = r.dest_port;
  if (r.proto !== undefined) facts.proto = r.proto;
  if (r.app_proto !== undefined) facts.app_proto = r.app_proto;
  if (r.in_iface !== undefined) facts.in_iface = r.in_iface;
  if (r.flow_id !== undefined) facts.flow_id = (line && FLOW_ID_TEXT.exec(line)?.[1]) || String(r.flow_id);

  if (r.event_type === 'alert') {
    const alert = eveAlertSchema.safeParse((raw as { alert?: unknown }).alert);
    if (!alert.success) return { ok: false, reason: describe(alert.error, 'alert') };
    const a = alert.data;
    facts.signature_id = a.signature_id;
    facts.severity = a.severity;
    if (a.signature !== undefined) facts.signature = a.signature;
    if (a.category !== undefined) facts.category = a.category;
    if (a.action !== undefined) facts.action = a.action;
  }
  return { ok: true, facts };
}

const ADDRESS_CACHE_LIMIT = 131_072;
const addressCache = new Map<string, string | null>();

/** Canonical text of an address (EVE writes IPv6 uncompressed), or null; memoised. */
function canonicalAddress(text: string): string | null {
  const hit = addressCache.get(text);
  if (hit !== undefined) return hit;
  const ipAddress = parseIp(text);
  const canonical = ipAddress ? formatIp(ipAddress.family, ipAddress.bytes) : null;
  // A bounded cache: dropping it all at the limit is simpler than LRU and costs one refill.
  if (addressCache.size >= ADDRESS_CACHE_LIMIT) addressCache.clear();
  addressCache.set(text, canonical);
  return canonical;
}

/**
 * Suricata writes offsets as `+0200` (no colon); Date.parse accepts that in V8, but the
 * ISO form is what the spec guarantees, so add the colon.
 */
function normaliseOffset(timestamp: string): string {
  return timestamp.replace(/([+-]\d\d)(\d\d)$/, '$1:$2');
}

function describe(error: z.ZodError, prefix?: string): string {
  return error.issues
    .map((i) => {
      const path = [prefix, ...i.path.map(String)].filter((p) => p !== undefined && p !== '').join('.');
      return `${path || '(record)'}: ${i.message}`;
    })
    .join('; ');
}
