/**
 * What a rule decides about a verdict, and the arithmetic of repeat offences.
 *
 * Pure code: the enforcement workflow imports it (no Node built-ins here).
 */
import { formatCidr, parseIp, type Cidr } from './ip';

/** Enforcement actions, weakest first: a stronger verdict about a target supersedes a weaker one. */
export const ENFORCEMENT_ACTIONS = ['allow', 'notify', 'rate-limit', 'quarantine', 'block'] as const;
export type EnforcementAction = (typeof ENFORCEMENT_ACTIONS)[number];

/** Orders actions by strength (allow 0 … block 4). */
export function actionStrength(action: EnforcementAction): number {
  return ENFORCEMENT_ACTIONS.indexOf(action);
}

/**
 * How repeat offences lengthen a block, after fail2ban's `bantime.increment`
 * (bantime × factor^(n-1), capped by `bantime.maxtime`) and CrowdSec's `duration_expr`.
 */
export interface Escalation {
  /** Multiplier per earlier offence that the target's workflow still remembers. */
  factor: number;
  /** Upper bound of an escalated duration, ms. */
  maxDurationMs: number;
}

/** The part of a verdict's event kept with a decision, for audit and the enforcement workflow. */
export interface DecisionEvidence {
  source: 'suricata' | 'ndpi';
  eventType: string;
  timestamp: string;
  signatureId?: number;
  signature?: string;
  flowId?: string;
  srcIp?: string;
  destIp?: string;
  appProto?: string;
}

/** One rule's decision about one verdict. */
export interface Decision {
  /** Name of the rule that decided. */
  rule: string;
  action: EnforcementAction;
  /** Canonical prefix the action applies to (`198.51.100.7/32`). */
  target: string;
  /** Base duration of the action, ms (before escalation). */
  durationMs: number;
  escalation: Escalation;
  /** How long the target's workflow remembers an offence after its action lifts, ms. */
  memoryMs: number;
  /** Packets per second, for `rate-limit`. */
  rateLimitPps?: number;
  /** Endpoint label for `quarantine` (becomes a Cilium policy selector). */
  quarantineLabel?: string;
  /** One line for people: the rule's description and the event that triggered it. */
  reason: string;
  evidence: DecisionEvidence;
  /**
   * The coordinator's admission of this block under the caps, asked for by the ingest
   * bridge before it signals (absent: the enforcement workflow asks itself).
   */
  admission?: Admission;
}

/** A block admitted by the enforcement coordinator, held for it until `expiresAt`. */
export interface Admission {
  token: string;
  /** ISO 8601. */
  expiresAt: string;
}

/**
 * Duration of the `offence`-th block (1 = first): `base × factor^(offence-1)`, capped.
 * A first offence is never shortened by the cap below its base duration.
 */
export function escalatedDuration(baseMs: number, escalation: Escalation, offence: number): number {
  const n = Math.max(1, Math.floor(offence));
  const scaled = baseMs * Math.pow(escalation.factor, n - 1);
  return Math.max(baseMs, Math.min(scaled, escalation.maxDurationMs));
}

/**
 * The prefix of `prefixLength` bits that contains `address` (host bits cleared), or
 * null when `address` is not an IP address. `prefixLength` above the family's width
 * is clamped (a /128 asked for an IPv4 address means /32).
 */
export function prefixOf(address: string, prefixLength: number): string | null {
  const ip = parseIp(address);
  if (!ip) return null;
  const width = ip.family === 4 ? 32 : 128;
  const length = Math.max(0, Math.min(width, prefixLength));
  const bytes = new Uint8Array(ip.bytes.length);
  for (let i = 0; i < bytes.length; i++) {
    const bits = Math.max(0, Math.min(8, length - i * 8));
    bytes[i] = (ip.bytes[i] ?? 0) & ((0xff << (8 - bits)) & 0xff);
  }
  const cidr: Cidr = { family: ip.family, bytes, prefixLength: length };
  return formatCidr(cidr);
}

/**
 * Workflow id of the enforcement workflow for a target: stable, so every verdict about
 * one prefix reaches one workflow. `/` and `:` are kept readable as `_` and `-`.
 */
export function enforcementWorkflowId(target: string): string {
  return `enforce-${target.replace(/\//g, '_').replace(/:/g, '-')}`;
}
