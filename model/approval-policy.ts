/**
 * The approval policy: which changes need whose approval, and when changes may apply.
 *
 * It lives in a file the cluster worker names with FOS1_APPROVAL_POLICY_FILE (YAML or
 * JSON, docs/approvals.md); the change workflow reads it through a local activity, so the
 * policy a change was judged by is recorded in its history and a replay sees the same one.
 *
 *   rules:       first match wins (order them strictest first); a rule matches when every
 *                criterion it names holds: target node names (globs), target labels (when
 *                the inventory supplies them), subsystems touched, size of the diff, the
 *                author's roles, automation or human. `approvals: 0` says "no approval".
 *                No rule matches → no approval needed.
 *   windows:     weekly maintenance windows (model/change-window.ts); none = any time.
 *   freezes:     absolute intervals in which nothing applies.
 *   automation:  which authors are automation (the IDS enforcer), and whether windows and
 *                freezes hold them (by default not: a block must not wait for Saturday).
 *
 * The approver is never the author, whatever the policy says. Pure code: the workflow
 * sandbox imports this file.
 */
import { z } from 'zod';
import { durationMsSchema } from './change-request';
import { freezeSchema, maintenanceWindowSchema } from './change-window';
import { canonicalJson } from './identity';
import { formatPath } from './issue-path';
import { sha256Hex } from './sha256';
import { SUBSYSTEM_ORDER, type Subsystem } from './subsystem';

/** The author the enforcement workflow writes its changes as. */
export const ENFORCER_AUTHOR = 'fos1-enforcer';

const GLOB = /^[a-z0-9*?]([-a-z0-9*?]{0,62})$/;

/** What a rule matches on; every criterion given must hold. */
export const ruleMatchSchema = z
  .object({
    /** Any target's name matches one of these globs (`*` any run of characters, `?` one). */
    nodes: z.array(z.string().regex(GLOB, 'must be a node name or a glob of one ("edge-*")')).min(1).optional(),
    /** Any target carries every one of these labels (known only when the inventory supplies labels). */
    labels: z.record(z.string(), z.string()).optional(),
    /** The change touches any of these subsystems. */
    subsystems: z.array(z.enum(SUBSYSTEM_ORDER)).min(1).optional(),
    /** The diff (lines over every node) has at least this many operations. */
    minOperations: z.number().int().min(0).optional(),
    /** …at most this many (automation "within caps"). */
    maxOperations: z.number().int().min(0).optional(),
    /** The author (verified) holds any of these roles. */
    authorRoles: z.array(z.string().min(1)).min(1).optional(),
    /** true: only automation's changes; false: only humans'. */
    automation: z.boolean().optional(),
  })
  .strict();

/** One rule: what it matches, and what a matching change needs. */
export const approvalRuleSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, 'must be 1–63 letters, digits, "_", "-", "."'),
    match: ruleMatchSchema.prefault({}),
    /** Distinct approvers needed (never the author); 0 = no approval. */
    approvals: z.number().int().min(0).max(10),
    /** The role every approver must hold (verified identity). */
    approverRole: z.string().min(1).default('approver'),
    /** How long the request stays open; unanswered by then, the change ends with nothing applied. */
    expiresAfter: durationMsSchema.default(24 * 3_600_000),
  })
  .strict();

export const approvalPolicySchema = z
  .object({
    rules: z.array(approvalRuleSchema).max(100).default([]),
    windows: z.array(maintenanceWindowSchema).max(50).default([]),
    freezes: z.array(freezeSchema).max(100).default([]),
    /**
     * Count approvals sent straight through Temporal (the Web UI, `temporal workflow
     * update`), which carry no verified identity. Off by default: only API approvals count.
     */
    allowUnverifiedApprovals: z.boolean().default(false),
    /** The role that lets an author override windows and freezes (`options.override`). */
    emergencyRole: z.string().min(1).default('emergency'),
    automation: z
      .object({
        authors: z.array(z.string().min(1)).default([ENFORCER_AUTHOR]),
        /** Whether maintenance windows and freezes hold automation's changes too. */
        respectWindows: z.boolean().default(false),
      })
      .strict()
      .prefault({}),
  })
  .strict()
  .superRefine((p, ctx) => {
    const seen = new Set<string>();
    p.rules.forEach((r, i) => {
      if (seen.has(r.name)) ctx.addIssue({ code: 'custom', path: ['rules', i, 'name'], message: `names rule "${r.name}" twice` });
      seen.add(r.name);
    });
  });

export type ApprovalPolicy = z.output<typeof approvalPolicySchema>;
export type ApprovalRule = z.output<typeof approvalRuleSchema>;

/** The policy when none is configured: no approvals, no windows. */
export const EMPTY_POLICY: ApprovalPolicy = approvalPolicySchema.parse({});

/** Parses a policy document; the error lists every `field: rule`. */
export function parseApprovalPolicy(doc: unknown): { ok: true; policy: ApprovalPolicy } | { ok: false; issues: string[] } {
  const parsed = approvalPolicySchema.safeParse(doc ?? {});
  if (parsed.success) return { ok: true, policy: parsed.data };
  return { ok: false, issues: parsed.error.issues.map((i) => `${formatPath(i.path) || '(policy)'}: ${i.message}`) };
}

/** What the policy judges a change by. */
export interface ChangeFacts {
  targets: string[];
  /** Inventory labels per target, when known. */
  labels?: Record<string, Record<string, string>>;
  subsystems: Subsystem[];
  /** Operations (diff lines) over every node; undefined before planning. */
  operations?: number;
  /** The author's verified roles (none when self-asserted). */
  authorRoles: string[];
  automation: boolean;
}

/** Whether `name` matches glob `pattern` (`*`, `?`). */
export function globMatch(pattern: string, name: string): boolean {
  const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\-]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
  return re.test(name);
}

/** Whether a rule's criteria hold for a change. */
export function ruleMatches(rule: ApprovalRule, facts: ChangeFacts): boolean {
  const m = rule.match;
  if (m.automation !== undefined && m.automation !== facts.automation) return false;
  if (m.nodes && !facts.targets.some((t) => m.nodes?.some((g) => globMatch(g, t)))) return false;
  if (m.labels) {
    const wanted = Object.entries(m.labels);
    if (!facts.targets.some((t) => wanted.every(([k, v]) => facts.labels?.[t]?.[k] === v))) return false;
  }
  if (m.subsystems && !facts.subsystems.some((s) => m.subsystems?.includes(s))) return false;
  if (m.minOperations !== undefined && (facts.operations ?? 0) < m.minOperations) return false;
  if (m.maxOperations !== undefined && (facts.operations ?? Number.POSITIVE_INFINITY) > m.maxOperations) return false;
  if (m.authorRoles && !facts.authorRoles.some((r) => m.authorRoles?.includes(r))) return false;
  return true;
}

/** The first rule that matches, or undefined (no approval needed). */
export function matchingRule(policy: ApprovalPolicy, facts: ChangeFacts): ApprovalRule | undefined {
  return policy.rules.find((r) => ruleMatches(r, facts));
}

/**
 * Whether the change must be planned before it is judged: only when some rule asks for an
 * approval (the size of the diff and the digest an approval names come from the plan). A
 * policy that never asks for one (the dev default) costs no extra round trip.
 */
export function needsPlan(policy: ApprovalPolicy): boolean {
  return policy.rules.some((r) => r.approvals > 0);
}

/** One approval or rejection as the change records it. */
export interface ApprovalVote {
  by: string;
  decision: 'approve' | 'reject';
  /** The plan digest the voter saw. */
  planDigest: string;
  reason?: string;
  /** True when the API vouched for `by` (signed assertion verified on the worker). */
  verified: boolean;
  roles: string[];
  /** Whether it counts toward the rule (verified or allowed unverified, holding the role). */
  counts: boolean;
  at: string;
}

/** The digest of one node's diff, as a wave reports it (workflows/rollout-wave.ts): hex SHA-256 of its canonical JSON. */
export function nodeDiffDigest(diff: string[]): string {
  return sha256Hex(canonicalJson(diff));
}

/**
 * `sha256:<hex>` over the canonical JSON of every node's diff and the rollout strategy: what
 * an approval names. Computed inside the workflow with the pure SHA-256 (model/sha256.ts).
 */
export function planDigest(plan: { nodes: Record<string, string[]>; strategy?: unknown }): string {
  return `sha256:${sha256Hex(canonicalJson({ nodes: plan.nodes, strategy: plan.strategy ?? null }))}`;
}

/** What an approver sends (the `approve` / `reject` updates; the API fills `by` and `assertion`). */
export interface ApprovalAction {
  /** Who approves: the API sets the authenticated principal; from the Web UI it is self-asserted. */
  by?: string;
  reason?: string;
  /** The digest of the plan the approver reviewed (status.approval.planDigest); required. */
  planDigest?: string;
  /** The API's signed identity assertion over {@link approvalAssertionSubject}. */
  assertion?: unknown;
}

/**
 * The document an approval's identity assertion is signed over, shaped like a change request
 * (`id`, `author`) so the one assertion format and verifier (auth/identity-assertion.ts)
 * serve both: the principal must be `by`, and the digest covers the decision, the plan
 * digest and the reason, so an assertion for one vote cannot be replayed as another.
 */
export function approvalAssertionSubject(changeId: string, by: string, decision: 'approve' | 'reject', action: { planDigest?: string; reason?: string }): Record<string, unknown> {
  return { id: changeId, author: by, approval: { decision, planDigest: action.planDigest ?? null, reason: action.reason ?? null } };
}
