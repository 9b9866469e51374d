/**
 * The HTTP API's request and response shapes as zod schemas: the request body of a change
 * is the model's own schema (model/change-request.ts), the answers mirror the workflow's
 * types (workflows/change.ts). The routes (api/routes.ts) validate requests with these
 * schemas and the OpenAPI document (`GET /openapi.json`) is generated from them, so the
 * document cannot describe a shape the API does not check.
 *
 * Answers are documented, not filtered: they are serialized as the workflow returns them
 * (a field added to the status shows up at once), and objects are open (`looseObject`).
 * The compile-time checks at the end keep the schemas and the TypeScript types in step.
 */
import { z } from 'zod';
import { changeRequestSchemaAt } from '../model/change-request';
import type { ApprovalAction } from '../model/approval-policy';
import type { ApprovalStatus } from '../workflows/approval';
import type { ChangePhase, ChangeStatus, NodeReport, OperatorAction } from '../workflows/change';

/** A change id: the request's `id`, part of workflow ids. */
export const changeIdSchema = z
  .string()
  .regex(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/, 'change id must be 1–63 lowercase letters, digits or "-"')
  .meta({ description: 'The change request\'s `id`.', example: 'first-change' });

/** Path parameters of `/v1/changes/:id…`. */
export const changeParamsSchema = z.object({ id: changeIdSchema });

const FILTER = /^[\w.@:-]{1,100}$/;
const filter = (what: string) => z.string().regex(FILTER, 'may hold only letters, digits, "_", "-", ".", "@", ":" (at most 100)').optional().meta({ description: what });

/** Query of `GET /v1/changes`: exact-match filters on fos1's search attributes. */
export const listQuerySchema = z
  .object({
    author: filter('Changes submitted by this principal (search attribute `Fos1Author`).'),
    status: filter('Changes in this phase (search attribute `Fos1Status`), e.g. `applied`, `rolled-back`.'),
    node: filter('Changes targeting this node (search attribute `Fos1TargetNodes`).'),
  })
  .strict();

/**
 * Body of `POST /v1/changes` and `/v1/changes/dry-run`: a change request. `author` may be
 * left out — it is always the authenticated principal (naming anyone else is refused, 403).
 */
export const changeBodySchema = changeRequestSchemaAt(Date.now).meta({ description: 'A change request (docs/change-workflow.md). `author` is set from the bearer token and may be left out.' });

/** Body of confirm and abort. */
export const operatorActionSchema = z
  .object({
    by: z.string().max(100).optional().meta({ description: 'Must be the authenticated principal if given.' }),
    reason: z.string().optional().meta({ description: 'Recorded in the audit trail (cut to 200 characters).' }),
  })
  .meta({ description: 'Who confirms or aborts (always the caller) and why.' });

/** Body of promote. */
export const promoteBodySchema = operatorActionSchema.extend({ full: z.boolean().optional().meta({ description: 'Skip every remaining bake and gate.' }) });

/** Body of extend-bake. */
export const extendBakeBodySchema = operatorActionSchema.extend({ seconds: z.number().int().min(1).max(86_400).meta({ description: 'Seconds to add to the current wave\'s bake.' }) });

const PHASES = [
  'validating',
  'rejected',
  'rolling-out',
  'waiting-for-node',
  'baking',
  'paused',
  'awaiting-confirmation',
  'reverting',
  'checking-gates',
  'planned',
  'aborted',
  'applied',
  'unchanged',
  'reverted',
  'rolled-back',
  'rollback-failed',
  // The approval gate (docs/approvals.md).
  'planning',
  'awaiting-approval',
  'waiting-for-window',
  'expired',
] as const satisfies readonly ChangePhase[];

const failureSummarySchema = z.looseObject({ type: z.string(), message: z.string() });

const nodeReportSchema = z.looseObject({
  outcome: z.enum(['pending', 'planned', 'unchanged', 'applied', 'not-applied', 'rolled-back', 'rollback-failed', 'restored', 'restore-failed']),
  diff: z.array(z.string()).meta({ description: 'The plan as diff lines: `+ added`, `- removed`, `~ changed`.' }),
  auditCount: z.number().int().optional(),
  error: failureSummarySchema.optional(),
  differences: z.array(z.string()).optional(),
});

const auditRecordSchema = z.looseObject({
  changeId: z.string(),
  actor: z.string(),
  actorVerified: z.boolean().optional(),
  node: z.string().optional(),
  step: z.string(),
  result: z.enum(['ok', 'failed', 'skipped']),
  startedAt: z.string(),
  durationMs: z.number(),
  detail: z.string().optional(),
});

/** Body of approve and reject (docs/approvals.md). */
export const approvalActionSchema = operatorActionSchema
  .extend({
    planDigest: z
      .string()
      .regex(/^sha256:[0-9a-f]{64}$/, 'must be "sha256:" and 64 hex digits (status.approval.planDigest)')
      .optional()
      .meta({ description: 'The plan reviewed (status.approval.planDigest); left out: the plan the change shows now.' }),
  })
  .meta({ description: 'Who votes (always the caller), for which plan, and why.' });

const approvalVoteSchema = z.looseObject({
  by: z.string(),
  decision: z.enum(['approve', 'reject']),
  planDigest: z.string(),
  reason: z.string().optional(),
  verified: z.boolean(),
  roles: z.array(z.string()),
  counts: z.boolean(),
  at: z.string(),
});

/** The approval a change awaits (or had): the `approval` of the status, and the answer of approve/reject. */
export const approvalStatusSchema = z
  .looseObject({
    state: z.enum(['pending', 'approved', 'rejected', 'expired', 'void']),
    rule: z.string(),
    required: z.number().int(),
    received: z.array(approvalVoteSchema),
    eligibleRoles: z.array(z.string()),
    excluded: z.array(z.string()),
    expiresAt: z.string(),
    planDigest: z.string(),
    plan: z.record(z.string(), z.array(z.string())),
  })
  .meta({ description: 'Who may approve (never the author), what was received, until when, and the plan (each node\'s diff) its digest names.' });

/** Answer of status, confirm and dry run: the workflow's `status` query. */
export const changeStatusSchema = z
  .looseObject({
    changeId: z.string().optional(),
    phase: z.enum(PHASES),
    message: z.string(),
    progress: z.looseObject({ nodesDone: z.number().int(), nodesTotal: z.number().int() }),
    confirmDeadline: z.string().optional().meta({ description: 'When an unconfirmed change reverts by itself, ISO 8601.' }),
    nodes: z.record(z.string(), nodeReportSchema),
    issues: z.array(z.looseObject({ field: z.string(), message: z.string() })).optional(),
    approval: approvalStatusSchema.optional(),
    window: z.looseObject({ waitingUntil: z.string(), why: z.string() }).optional().meta({ description: 'While the change waits for a maintenance window, the end of a freeze or its notBefore.' }),
    audit: z.array(auditRecordSchema),
  })
  .meta({ description: 'Where a change stands: phase, progress, each node\'s diff and outcome, the audit trail.' });

/** Answer of `POST /v1/changes`. */
export const submittedSchema = z.object({
  changeId: z.string(),
  workflowId: z.string(),
  runId: z.string(),
  status: z.string().meta({ description: 'Path of the change\'s status.' }),
});

/** Answer of `GET /v1/changes`: at most 100, newest first. */
export const changeListSchema = z.object({
  changes: z.array(
    z.looseObject({
      workflowId: z.string(),
      status: z.string().meta({ description: 'Temporal execution status: RUNNING, COMPLETED, FAILED, …' }),
      startTime: z.string(),
      closeTime: z.string().optional(),
      searchAttributes: z.record(z.string(), z.unknown()),
    }),
  ),
});

/** Answer of abort. */
export const abortedSchema = z.object({ aborted: z.literal(true) });

/** Every refusal and failure: a message saying what is wrong, and the issues of an invalid request. */
export const errorSchema = z
  .looseObject({
    error: z.string(),
    issues: z.array(z.object({ field: z.string(), message: z.string() })).optional(),
  })
  .meta({ description: 'What is wrong and, for an invalid request, each field with the rule it breaks.' });

// Compile-time checks: the schemas describe the workflow's types (both directions where
// they are closed sets), so a new phase or outcome fails `tsc` until it is documented here.
type Equal<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const phasesMatch: Equal<(typeof PHASES)[number], ChangePhase> = true;
const outcomesMatch: Equal<z.infer<typeof nodeReportSchema>['outcome'], NodeReport['outcome']> = true;
const statusAssignable: z.infer<typeof changeStatusSchema> extends ChangeStatus ? true : false = true;
const actionAssignable: z.infer<typeof operatorActionSchema> extends OperatorAction ? true : false = true;
const approvalAssignable: z.infer<typeof approvalStatusSchema> extends ApprovalStatus ? true : false = true;
const voteAssignable: z.infer<typeof approvalActionSchema> extends ApprovalAction ? true : false = true;
void [phasesMatch, outcomesMatch, statusAssignable, actionAssignable, approvalAssignable, voteAssignable];
