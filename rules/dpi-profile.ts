/**
 * DPIProfile (`security.fos1.io/v1alpha1`, deploy/crds/security.fos1.io_dpiprofiles.yaml) →
 * rules of the ingest's rule set. Pure: the ingest's DPIProfile controller
 * (ingest/dpi-profile-controller.ts) calls it, and its unit tests do.
 *
 * Each listed application becomes one rule on nDPI flows whose protocol (master, app or the
 * whole `TLS.Google`) is that name and whose confidence is at least `minConfidence`:
 *
 * | `action` | decision |
 * | --- | --- |
 * | `block` | block the flow's **remote** endpoint for `blockFor` (default 1h) |
 * | `rate-limit` | rate-limit the remote endpoint to `rateLimitKbps` as packets: ⌊kbps × 1000 / 8 / 1500⌋ pps (at least 1) — full-size packets, so never more than the bandwidth given — for `blockFor` (default 1h) |
 * | `log` | notify |
 * | `allow` | allow (ends evaluation: no rule below it acts on the flow) |
 *
 * Priorities put a profile above the base rule set (file rules are 1–100): listed
 * applications at 600 + 10 × strength (allow 600 … block 640, so where two profiles disagree
 * about one protocol the stronger action wins), `defaultAction` (every other classified flow)
 * at 500 + strength. `defaultAction: allow` adds no rule: unlisted flows go on to the base set.
 */
import { z } from 'zod';
import { actionStrength, type EnforcementAction } from '../model/enforcement-decision';
import { durationMsSchema, type ValidationIssue } from '../model/change-request';
import { formatPath } from '../model/issue-path';
import { DEFAULT_QUARANTINE_LABEL } from '../model/quarantine';
import { shortHash } from '../model/short-hash';
import type { RuleSpec } from './rule-set';

const ACTION: Record<'allow' | 'log' | 'block' | 'rate-limit', EnforcementAction> = { allow: 'allow', log: 'notify', block: 'block', 'rate-limit': 'rate-limit' };
const CONFIDENCE = { low: 1, medium: 2, high: 3 } as const;
/** Bytes of a full-size Ethernet packet: kbps → pps for fos1's packet-rate limiter. */
const FULL_PACKET_BYTES = 1500;

const applicationSchema = z
  .object({
    protocol: z.string().min(1).max(64).regex(/^[A-Za-z0-9_.-]+$/, 'must be an nDPI protocol name (letters, digits, "_", ".", "-"), e.g. BitTorrent'),
    action: z.enum(['allow', 'log', 'block', 'rate-limit']),
    rateLimitKbps: z.number().int().min(1).max(100_000_000).optional(),
    blockFor: z
      .string()
      .regex(/^[0-9]+(s|m|h)$/, 'must be a duration like "30s", "10m" or "2h"')
      .transform((d): string | number => d)
      .pipe(durationMsSchema)
      .optional(),
  })
  .strict()
  .superRefine((a, ctx) => {
    if (a.action === 'rate-limit' && a.rateLimitKbps === undefined) ctx.addIssue({ code: 'custom', path: ['rateLimitKbps'], message: 'a rate-limit application needs rateLimitKbps' });
    if (a.action !== 'rate-limit' && a.rateLimitKbps !== undefined) ctx.addIssue({ code: 'custom', path: ['rateLimitKbps'], message: `applies to action rate-limit only (this one is ${a.action})` });
    if ((a.action === 'allow' || a.action === 'log') && a.blockFor !== undefined) ctx.addIssue({ code: 'custom', path: ['blockFor'], message: `applies to actions block and rate-limit only (this one is ${a.action})` });
  });

/** A DPIProfile's spec as the CRD defines it (defaults applied). */
export const dpiProfileSpecSchema = z
  .object({
    zone: z.string().max(63).regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'must be a zone name').optional(),
    defaultAction: z.enum(['allow', 'log', 'block']).default('allow'),
    applications: z.array(applicationSchema).max(256).default([]),
    minConfidence: z.enum(['low', 'medium', 'high']).default('medium'),
  })
  .strict()
  .superRefine((spec, ctx) => {
    const seen = new Map<string, number>();
    spec.applications.forEach((a, i) => {
      const j = seen.get(a.protocol);
      if (j !== undefined) ctx.addIssue({ code: 'custom', path: ['applications', i, 'protocol'], message: `${a.protocol} is listed twice (also at spec.applications[${j}]); one action per protocol` });
      else seen.set(a.protocol, i);
    });
  });

export type DpiProfileSpec = z.output<typeof dpiProfileSpecSchema>;

/** The profile's identity in rule names and descriptions. */
export interface DpiProfileRef {
  namespace: string;
  name: string;
}

/** Rules for one profile, or every problem as `field: rule` (fields from `spec.`). */
export type DpiTranslation = { ok: true; rules: RuleSpec[] } | { ok: false; issues: ValidationIssue[] };

/** Name prefix of every rule a profile makes: `dpi-<hash of namespace/name>-`. */
export function dpiRulePrefix(ref: DpiProfileRef): string {
  return `dpi-${shortHash(`${ref.namespace}/${ref.name}`)}-`;
}

/** Translates a profile's spec into rules (validated like the CRD, and more: duplicates, misplaced fields). */
export function translateDpiProfile(ref: DpiProfileRef, spec: unknown): DpiTranslation {
  const parsed = dpiProfileSpecSchema.safeParse(spec ?? {});
  if (!parsed.success) return { ok: false, issues: parsed.error.issues.map((i) => ({ field: formatPath(['spec', ...i.path]), message: i.message })) };
  const p = parsed.data;
  const prefix = dpiRulePrefix(ref);
  const who = `DPIProfile ${ref.namespace}/${ref.name}`;
  const confidence = { fact: 'ndpi_confidence_level', operator: 'greaterThanInclusive', value: CONFIDENCE[p.minConfidence] };
  const rules: RuleSpec[] = p.applications.map((a, i) => {
    const action = ACTION[a.action];
    const slug = a.protocol.toLowerCase().replace(/[^a-z0-9]+/g, '-');
    return {
      name: `${prefix}${i}-${slug}`.slice(0, 63).replace(/-+$/, ''),
      description: `${who}: spec.applications[${i}] ${a.protocol} → ${a.action}`,
      priority: 600 + 10 * actionStrength(action),
      eventTypes: ['ndpi'],
      conditions: {
        all: [
          {
            any: [
              { fact: 'ndpi_master_protocol', operator: 'equal', value: a.protocol },
              { fact: 'ndpi_app_protocol', operator: 'equal', value: a.protocol },
              { fact: 'ndpi_protocol', operator: 'equal', value: a.protocol },
            ],
          },
          confidence,
        ],
      },
      decision: decisionFor(action, a.blockFor, a.rateLimitKbps),
    };
  });
  if (p.defaultAction !== 'allow') {
    const action = ACTION[p.defaultAction];
    rules.push({
      name: `${prefix}default`,
      description: `${who}: spec.defaultAction ${p.defaultAction} (every other classified flow)`,
      priority: 500 + actionStrength(action),
      eventTypes: ['ndpi'],
      conditions: { all: [{ fact: 'ndpi_protocol', operator: 'notIn', value: ['Unknown'] }, confidence] },
      decision: decisionFor(action, undefined, undefined),
    });
  }
  return { ok: true, rules };
}

function decisionFor(action: EnforcementAction, durationMs: number | undefined, kbps: number | undefined): RuleSpec['decision'] {
  const enforcing = action === 'block' || action === 'rate-limit';
  const decision: RuleSpec['decision'] = {
    action,
    // Enforcing actions aim at the flow's remote endpoint (model/local-networks.ts); the
    // others only log, and name the source.
    target: enforcing ? 'remote' : 'src_ip',
    prefixLengthV4: 32,
    prefixLengthV6: 128,
    duration: durationMs ?? 3_600_000,
    escalation: { factor: 2, maxDuration: 7 * 24 * 3_600_000 },
    memory: 24 * 3_600_000,
    quarantineLabel: DEFAULT_QUARANTINE_LABEL,
  };
  if (action === 'rate-limit' && kbps !== undefined) decision.rateLimitPps = Math.max(1, Math.floor((kbps * 1000) / 8 / FULL_PACKET_BYTES));
  return decision;
}
