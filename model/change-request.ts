/**
 * A change request: who wants which nodes to look like what, and how carefully.
 *
 * The change workflow takes exactly one JSON object of this shape (the Temporal Web
 * UI's start form sends a single payload), so the same document works from the UI,
 * `temporal workflow start --input`, the HTTP API and the CRD controllers.
 */
import { z } from 'zod';
import { clusterPolicySchema } from './cluster-policy';
import { labelSelectorSchema } from './inventory';
import { issuesOf, type ValidationIssue } from './issue-path';
import { authorSchema, changeIdSchema, nodeNameSchema, nodePatchSchema } from './node-change-input';
import { nodeStateSchema } from './node-state';
import { DEFAULT_BAKE_SECONDS, MAX_BAKE_SECONDS, planWaves, rolloutStrategySchema, usesSelectors } from './rollout-strategy';

// The node workflow's input and the node patch live in model/node-change-input.ts (a small
// module graph for node workers); they are part of the change request, so exported here too.
export {
  NODE_NAME,
  nodeChangeInputSchema,
  nodePatchSchema,
  routeRefSchema,
  validateNodeChangeInput,
  zoneMembershipSchema,
  zoneMembersPatchSchema,
  type NodeChangeInputParsed,
  type NodePatch,
} from './node-change-input';
export { formatIssues, issuesOf, type ValidationIssue } from './issue-path';

/** Durations as Temporal writes them: `90s`, `5m`, `1h`, `250ms`; or a number of milliseconds. */
const DURATION = /^(\d+)(ms|s|m|h)$/;
const DURATION_UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

export const durationMsSchema = z
  .union([z.number().int().positive(), z.string().regex(DURATION, 'must be a duration like "90s", "5m", "1h" or "500ms"')])
  .transform((d) => {
    if (typeof d === 'number') return d;
    const [, amount, unit] = DURATION.exec(d) ?? [];
    return Number(amount) * (DURATION_UNIT_MS[unit ?? 'ms'] ?? 1);
  })
  .pipe(z.number().min(1000, 'must be at least 1s').max(7 * 24 * 3_600_000, 'must be at most 7 days'));

export const changeOptionsSchema = z
  .object({
    /** Validate, snapshot and plan, then stop: the result carries the plan as a diff. */
    dryRun: z.boolean().default(false),
    /**
     * Commit-confirmed: after the change is applied and verified on every node, wait this
     * long for a `confirm`; without one, roll every node back to its snapshot.
     */
    confirmTimeout: durationMsSchema.optional(),
    /**
     * One change at a time per node: how long to wait for a node that another change holds
     * (applying, or awaiting its confirmation) before giving up with NodeBusy.
     */
    lockTimeout: durationMsSchema.default(15 * 60_000),
    /** Bake of the default strategy's canary and middle wave (used when the request gives no `strategy`), seconds. */
    defaultBakeSeconds: z.number().int('must be a whole number').min(0, 'must be 0 or more').max(MAX_BAKE_SECONDS, `must be at most ${MAX_BAKE_SECONDS} (7 days)`).default(DEFAULT_BAKE_SECONDS),
    /** Apply no earlier than this (ISO 8601); until then the change waits (phase `waiting-for-window`). */
    notBefore: z.string().datetime({ offset: true, message: 'must be an ISO 8601 time, e.g. "2026-12-05T02:00:00Z"' }).optional(),
    /**
     * Emergency override of the policy's maintenance windows and freezes (docs/approvals.md):
     * needs the policy's emergency role on the author's verified identity, and is audited.
     */
    override: z.object({ reason: z.string().min(1, 'must say why the override is needed').max(500) }).strict().optional(),
  })
  .strict();

export const changeRequestSchema = z
  .object({
    id: changeIdSchema,
    author: authorSchema,
    reason: z.string().min(1, 'must say why the change is made').max(1000),
    targets: z
      .array(nodeNameSchema)
      .min(1, 'must name at least one node')
      .max(1000)
      .refine((t) => new Set(t).size === t.length, 'must not name a node twice')
      .optional(),
    /** Instead of `targets`: every inventory node whose labels match (Kubernetes label selector semantics), in inventory order. */
    targetSelector: labelSelectorSchema.optional(),
    /** How the change rolls out across its targets (waves, bakes, gates); see model/rollout-strategy.ts. Default: canary, bake, then the rest in waves. */
    strategy: rolloutStrategySchema.optional(),
    desired: nodeStateSchema.optional(),
    patch: nodePatchSchema.optional(),
    /**
     * Cluster-scoped policy beside the node state (model/cluster-policy.ts): fos1 rules and
     * native Cilium documents, validated against the cluster before any node is touched and
     * rolled back with the nodes (docs/change-workflow.md).
     */
    clusterPolicy: clusterPolicySchema.optional(),
    options: changeOptionsSchema.prefault({}),
  })
  .strict()
  .superRefine((req, ctx) => {
    // A cluster-only change (docs/change-workflow.md): clusterPolicy and no node part at all.
    if (isClusterOnly(req)) return;
    for (const issue of nodePartIssues(req)) ctx.addIssue({ code: 'custom', path: [issue.field], message: issue.message });
  });

/**
 * Whether a request is a cluster-only change: it carries `clusterPolicy` and no node part
 * (no `targets`, `targetSelector`, `desired` or `patch`). It runs through the same change
 * workflow (identity, approval, dry-run, apply, verify, rollback, audit) with 0 nodes.
 */
export function isClusterOnly(req: { targets?: unknown; targetSelector?: unknown; desired?: unknown; patch?: unknown; clusterPolicy?: unknown }): boolean {
  return req.clusterPolicy !== undefined && req.targets === undefined && req.targetSelector === undefined && req.desired === undefined && req.patch === undefined;
}

/**
 * The node part's rules: exactly one of `desired`/`patch`, exactly one of
 * `targets`/`targetSelector`. A request without a node part is only valid with `clusterPolicy`
 * ({@link isClusterOnly}); the message says so when none of them is given.
 */
export function nodePartIssues(req: { targets?: unknown; targetSelector?: unknown; desired?: unknown; patch?: unknown }): ValidationIssue[] {
  const issues: ValidationIssue[] = [];
  const none = req.targets === undefined && req.targetSelector === undefined && req.desired === undefined && req.patch === undefined;
  const orCluster = none ? ', or only "clusterPolicy" (a cluster-only change)' : '';
  if ((req.desired === undefined) === (req.patch === undefined)) {
    issues.push({ field: 'desired', message: `give exactly one of "desired" (full state) or "patch"${orCluster}` });
  }
  if ((req.targets === undefined) === (req.targetSelector === undefined)) {
    issues.push({ field: 'targets', message: `give exactly one of "targets" (node names) or "targetSelector" (labels over the inventory)${orCluster}` });
  }
  return issues;
}

export type ChangeRequest = z.output<typeof changeRequestSchema>;
export type ChangeRequestInput = z.input<typeof changeRequestSchema>;

/** Result of {@link validateChangeRequest}. */
export type ValidationResult = { ok: true; request: ChangeRequest } | { ok: false; issues: ValidationIssue[] };

/**
 * The change request schema with the checks that need a clock: blocks and rate limits
 * whose `expiresAt` is not after `now()` are refused (an expired block would be removed at
 * once). The HTTP API validates request bodies with `changeRequestSchemaAt(Date.now)`; the
 * workflow goes through {@link validateChangeRequest} with its deterministic clock.
 */
export function changeRequestSchemaAt(now: () => number) {
  return changeRequestSchema.superRefine((request, ctx) => {
    const at = now();
    const checkExpiry = (entries: { expiresAt?: string }[], path: string[]) =>
      entries.forEach((e, i) => {
        if (e.expiresAt !== undefined && Date.parse(e.expiresAt) <= at) {
          ctx.addIssue({ code: 'custom', path: [...path, i, 'expiresAt'], message: `is in the past (${e.expiresAt}); an expired block would be removed at once` });
        }
      });
    checkExpiry(request.desired?.blocklist ?? [], ['desired', 'blocklist']);
    checkExpiry(request.patch?.blocklist.upsert ?? [], ['patch', 'blocklist', 'upsert']);
    checkExpiry(request.desired?.rateLimits ?? [], ['desired', 'rateLimits']);
    checkExpiry(request.patch?.rateLimits.upsert ?? [], ['patch', 'rateLimits', 'upsert']);
  });
}

/**
 * Validates a change request. `now` (ms since epoch) is the caller's clock — the
 * workflow's deterministic one inside a workflow — used to refuse blocks that
 * would already have expired.
 */
export function validateChangeRequest(input: unknown, now: number): ValidationResult {
  const parsed = changeRequestSchemaAt(() => now).safeParse(input);
  if (!parsed.success) return { ok: false, issues: issuesOf(parsed.error) };
  // With named targets and no label selectors the waves are known now: report a strategy
  // that leaves a node out or names a stranger before anything runs.
  const { targets, strategy } = parsed.data;
  if (targets && strategy && !usesSelectors(strategy)) {
    const plan = planWaves(strategy, targets.map((name) => ({ name, labels: {} })));
    if (!plan.ok) return { ok: false, issues: plan.issues.map(({ field, message }) => ({ field, message })) };
  }
  return { ok: true, request: parsed.data };
}

