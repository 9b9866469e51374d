/**
 * The API's routes as one table: method, path, the permission each needs, the zod schemas
 * of its request and answers (api/schemas.ts), and its handler. api/server.ts registers
 * them on Fastify; the OpenAPI document is generated from the same registrations.
 *
 *   POST /v1/changes               submit a change request (202; 400 with the issues)
 *   POST /v1/changes/dry-run       plan only; answers with each node's diff
 *   GET  /v1/changes               list changes (?author=, ?status=, ?node=) via search attributes
 *   GET  /v1/changes/:id           status and progress (the workflow's `status` query)
 *   POST /v1/changes/:id/confirm   confirm a commit-confirmed change ({ "reason" })
 *   POST /v1/changes/:id/abort     abort: applied nodes are restored ({ "reason" })
 *   POST /v1/changes/:id/approve   approve the pending plan ({ "planDigest", "reason" }; docs/approvals.md)
 *   POST /v1/changes/:id/reject    reject it: the change ends with nothing applied
 *   POST /v1/changes/:id/pause     pause a staged rollout ({ "reason" })
 *   POST /v1/changes/:id/resume    resume it (a paused gate is measured again)
 *   POST /v1/changes/:id/promote   next wave now ({ "full": true }: skip every remaining bake and gate)
 *   POST /v1/changes/:id/extend-bake  add { "seconds" } to the current wave's bake
 *   GET  /openapi.json             the OpenAPI 3.1 document (any authenticated caller)
 *   GET  /v1/audit…, /v1/revisions…  the durable audit and the revisions (api/audit-routes.ts)
 */
import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import { WorkflowIdReusePolicy, type UpdateDefinition } from '@temporalio/common';
import type { Logger } from 'pino';
import type { z } from 'zod';
import type { Permission, Principal } from '../auth/authenticator';
import { signIdentity } from '../auth/identity-assertion';
import { approvalAssertionSubject } from '../model/approval-policy';
import { formatIssues, validateChangeRequest } from '../model/change-request';
import { summariseFailure } from '../model/failures';
import { CLUSTER_TASK_QUEUE, changeWorkflowId } from '../model/naming';
import { approveUpdate, rejectUpdate } from '../workflows/approval';
import { auditRoutes, type ApiAuditDeps } from './audit-routes';
import { abortSignal, changeWorkflow, confirmUpdate, extendBakeUpdate, pauseUpdate, promoteUpdate, resumeUpdate, statusQuery, type ChangeStatus } from '../workflows/change';
import {
  abortedSchema,
  approvalActionSchema,
  approvalStatusSchema,
  changeBodySchema,
  changeListSchema,
  changeParamsSchema,
  changeStatusSchema,
  errorSchema,
  extendBakeBodySchema,
  listQuerySchema,
  operatorActionSchema,
  promoteBodySchema,
  submittedSchema,
} from './schemas';

/** An answer with a status other than 2xx, carrying `{ error, ...body }`. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly body: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

/** What a handler gets: the validated parts of the request and the caller. */
export interface RouteRequest {
  params: Record<string, string>;
  query: Record<string, string | undefined>;
  body: unknown;
  principal: Principal;
}

/** One route of the API. */
export interface ApiRoute {
  method: 'GET' | 'POST';
  /** Fastify path syntax (`/v1/changes/:id`). */
  url: string;
  operationId: string;
  summary: string;
  /** What the caller needs on `changes.fos1.io`; undefined: any authenticated caller. */
  permission: Permission | undefined;
  params?: z.ZodType;
  querystring?: z.ZodType;
  body?: z.ZodType;
  /** Message of the 400 for a body that fails its schema (the issues follow). */
  invalidBody?: string;
  /** Body fields the caller may leave out although the schema requires them: the API fills them in before validation. */
  filledIn?: string[];
  /** Runs before validation: fills in what the API decides (the author), refuses what it must not accept (403). */
  prepareBody?: (body: unknown, principal: Principal) => unknown;
  /** Answers by status; the document lists them, the server serializes what the handler returns. */
  responses: Record<number, { description: string; schema: z.ZodType }>;
  handle: (request: RouteRequest) => Promise<[number, unknown]>;
}

/** What the routes need. */
export interface RouteDeps {
  client: Client;
  logger: Logger;
  /** Key to sign identity assertions with; without it changes are recorded self-asserted. */
  identityKey?: Buffer;
  /** The audit and revision stores, read-only (api/audit-routes.ts); without them those routes answer 503. */
  audit?: ApiAuditDeps;
}

const refusals = {
  400: { description: 'The request is invalid: each field and the rule it breaks.', schema: errorSchema },
  401: { description: 'No valid bearer token.', schema: errorSchema },
  403: { description: 'The caller may not do this, or Host/Origin is foreign.', schema: errorSchema },
} as const;
const notFound = { 404: { description: 'No change with this id.', schema: errorSchema } } as const;

/** The API's routes; see the module comment. `/openapi.json` is added by the server. */
export function apiRoutes(deps: RouteDeps): ApiRoute[] {
  const { client, logger, identityKey } = deps;
  /** The workflow's arguments: the request with its author, and the assertion when the API has a key. */
  const workflowArgs = (body: Record<string, unknown>, principal: Principal): [unknown] | [unknown, unknown] =>
    identityKey ? [body, signIdentity(identityKey, { principal: principal.name, roles: principal.roles }, String(body.id), body)] : [body];

  return [
    {
      method: 'POST',
      url: '/v1/changes/dry-run',
      operationId: 'planChange',
      summary: 'Plan a change without applying it: each node\'s diff.',
      permission: { resource: 'changes', verb: 'submit' },
      body: changeBodySchema,
      invalidBody: 'invalid change request',
      filledIn: ['author'],
      prepareBody: (raw, principal) => {
        const body = authored(raw, principal);
        return { ...body, options: { ...((body.options as object) ?? {}), dryRun: true } };
      },
      responses: { 200: { description: 'The plan: phase `planned` and each node\'s diff.', schema: changeStatusSchema }, ...refusals },
      handle: async ({ body, principal }) => {
        const b = body as Record<string, unknown>;
        const handle = await client.workflow.start(changeWorkflow, { taskQueue: CLUSTER_TASK_QUEUE, workflowId: `${changeWorkflowId(String(b.id))}-dry-run-${Date.now()}`, args: workflowArgs(b, principal) });
        return [200, await handle.result()];
      },
    },
    {
      method: 'POST',
      url: '/v1/changes',
      operationId: 'submitChange',
      summary: 'Submit a change request; it runs as a workflow.',
      permission: { resource: 'changes', verb: 'submit' },
      body: changeBodySchema,
      invalidBody: 'invalid change request',
      filledIn: ['author'],
      prepareBody: authored,
      responses: {
        202: { description: 'Accepted: the change workflow started.', schema: submittedSchema },
        ...refusals,
        409: { description: 'A change with this id exists (ids are single-use).', schema: errorSchema },
      },
      handle: async ({ body, principal }) => submit(body as Record<string, unknown>, principal),
    },
    {
      method: 'GET',
      url: '/v1/changes',
      operationId: 'listChanges',
      summary: 'List changes (at most 100), filtered by author, phase or node.',
      permission: { resource: 'changes', verb: 'view' },
      querystring: listQuerySchema,
      responses: { 200: { description: 'The matching changes.', schema: changeListSchema }, ...refusals },
      handle: async ({ query }) => {
        const clauses = ["WorkflowType = 'changeWorkflow'"];
        const filters: [string, string][] = [
          ['author', 'Fos1Author'],
          ['status', 'Fos1Status'],
          ['node', 'Fos1TargetNodes'],
        ];
        // The schema allows only characters that cannot end the quoted literal.
        for (const [param, attribute] of filters) if (query[param] !== undefined) clauses.push(`${attribute} = '${query[param]}'`);
        const changes = [];
        for await (const wf of client.workflow.list({ query: clauses.join(' AND ') })) {
          changes.push({ workflowId: wf.workflowId, status: wf.status.name, startTime: wf.startTime, closeTime: wf.closeTime, searchAttributes: wf.searchAttributes });
          if (changes.length >= 100) break;
        }
        return [200, { changes }];
      },
    },
    {
      method: 'GET',
      url: '/v1/changes/:id',
      operationId: 'getChange',
      summary: 'Status and progress of a change (the workflow\'s `status` query).',
      permission: { resource: 'changes', verb: 'view' },
      params: changeParamsSchema,
      responses: { 200: { description: 'The change\'s status.', schema: changeStatusSchema }, ...refusals, ...notFound },
      handle: async ({ params }) => [200, await client.workflow.getHandle(changeWorkflowId(String(params.id))).query(statusQuery)],
    },
    {
      method: 'POST',
      url: '/v1/changes/:id/confirm',
      operationId: 'confirmChange',
      summary: 'Confirm a commit-confirmed change that is awaiting confirmation.',
      permission: { resource: 'changes', verb: 'confirm' },
      params: changeParamsSchema,
      body: operatorActionSchema,
      prepareBody: checkActor,
      responses: {
        200: { description: 'Confirmed: the change\'s status.', schema: changeStatusSchema },
        ...refusals,
        ...notFound,
        409: { description: 'Nothing to confirm: the change is not awaiting confirmation.', schema: errorSchema },
      },
      handle: async ({ params, body, principal }) => {
        const handle = client.workflow.getHandle(changeWorkflowId(String(params.id)));
        try {
          return [200, await handle.executeUpdate(confirmUpdate, { args: [operatorAction(body, principal)] })];
        } catch (err) {
          // A finished change rejects updates as "not found"; tell it apart from a missing one.
          const status = await handle.query(statusQuery).catch(() => undefined);
          if (status) throw new HttpError(409, `nothing to confirm: the change is ${status.phase}`);
          // The query can fail on a loaded worker; a change that exists but has ended is still a 409.
          if (await hasEnded(handle)) throw new HttpError(409, 'nothing to confirm: the change has ended');
          if (err instanceof WorkflowNotFoundError) throw err;
          throw new HttpError(409, err instanceof Error ? err.message : String(err));
        }
      },
    },
    {
      method: 'POST',
      url: '/v1/changes/:id/abort',
      operationId: 'abortChange',
      summary: 'Abort a change: nodes that applied it are restored.',
      permission: { resource: 'changes', verb: 'abort' },
      params: changeParamsSchema,
      body: operatorActionSchema,
      prepareBody: checkActor,
      responses: { 202: { description: 'The abort was sent to the change.', schema: abortedSchema }, ...refusals, ...notFound },
      handle: async ({ params, body, principal }) => {
        await client.workflow.getHandle(changeWorkflowId(String(params.id))).signal(abortSignal, operatorAction(body, principal));
        return [202, { aborted: true }];
      },
    },
    approvalVote('approve', 'approveChange', 'Approve the plan awaiting approval (the author never may).'),
    approvalVote('reject', 'rejectChange', 'Reject the plan awaiting approval: the change ends with nothing applied.'),
    rolloutControl('pause', 'pauseChange', 'Pause a staged rollout (its bake clock and gates stop).', pauseUpdate, 'pause', operatorActionSchema),
    rolloutControl('resume', 'resumeChange', 'Resume a paused rollout (a paused gate is measured again).', resumeUpdate, 'pause', operatorActionSchema),
    rolloutControl('promote', 'promoteChange', 'Start the next wave now; with `full`, skip every remaining bake and gate.', promoteUpdate, 'promote', promoteBodySchema),
    rolloutControl('extend-bake', 'extendBake', 'Add `seconds` to the current wave\'s bake.', extendBakeUpdate, 'pause', extendBakeBodySchema),
    // A rollback to a revision is a change the API builds: validated with the same model, then submitted.
    ...auditRoutes(deps.audit, async (body, principal) => {
      const validation = validateChangeRequest(body, Date.now());
      if (!validation.ok) throw new HttpError(400, `invalid change request:\n${formatIssues(validation.issues)}`, { issues: validation.issues });
      return submit(body, principal);
    }),
  ];

  /** Starts the change workflow for a request (validated), authored by the principal. */
  async function submit(b: Record<string, unknown>, principal: Principal): Promise<[number, unknown]> {
    const changeId = String(b.id);
    const workflowId = changeWorkflowId(changeId);
    try {
      // Change ids are single-use: a finished change keeps its id in the audit history.
      const handle = await client.workflow.start(changeWorkflow, {
        taskQueue: CLUSTER_TASK_QUEUE,
        workflowId,
        args: workflowArgs(b, principal),
        workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
      });
      logger.info({ changeId, author: principal.name, workflowId, signed: identityKey !== undefined }, 'change submitted');
      return [202, { changeId, workflowId, runId: handle.firstExecutionRunId, status: `/v1/changes/${changeId}` }];
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError) throw new HttpError(409, `a change with id "${changeId}" already exists; change ids are single-use`);
      throw err;
    }
  }

  /**
   * POST /v1/changes/:id/approve|reject (docs/approvals.md): a vote for the plan named by
   * `planDigest` (default: the plan the change shows now), signed for the workflow so it
   * counts as the caller's verified vote. 403 for the author's own vote, 409 when nothing
   * awaits approval or the workflow refuses the vote (wrong digest, missing role).
   */
  function approvalVote(decision: 'approve' | 'reject', operationId: string, summary: string): ApiRoute {
    return {
      method: 'POST',
      url: `/v1/changes/:id/${decision}`,
      operationId,
      summary,
      permission: { resource: 'changes', verb: 'approve' },
      params: changeParamsSchema,
      body: approvalActionSchema,
      prepareBody: checkActor,
      responses: {
        200: { description: 'The vote was recorded: the approval as it stands now.', schema: approvalStatusSchema },
        ...refusals,
        ...notFound,
        409: { description: 'Nothing awaits approval, or the vote was refused (the reason says why).', schema: errorSchema },
      },
      handle: async ({ params, body, principal }) => {
        const changeId = String(params.id);
        const action = operatorAction(body, principal);
        const handle = client.workflow.getHandle(changeWorkflowId(changeId));
        const current = await handle.query(statusQuery);
        if (current.approval?.state !== 'pending') {
          throw new HttpError(409, `nothing to ${decision}: change ${changeId} is ${current.phase}${current.approval ? ` (approval ${current.approval.state})` : ', and awaits no approval'}`);
        }
        // Without a digest the caller approves the plan the change shows now.
        const given = (body as { planDigest?: string } | null)?.planDigest;
        const vote = { ...action, planDigest: given ?? current.approval.planDigest };
        const assertion = identityKey ? signIdentity(identityKey, { principal: principal.name, roles: principal.roles }, changeId, approvalAssertionSubject(changeId, principal.name, decision, vote)) : undefined;
        try {
          const approval = await handle.executeUpdate(decision === 'approve' ? approveUpdate : rejectUpdate, { args: [{ ...vote, ...(assertion ? { assertion } : {}) }] });
          logger.info({ changeId, by: principal.name, decision, planDigest: vote.planDigest }, `change ${decision === 'approve' ? 'approved' : 'rejected'}`);
          return [200, approval];
        } catch (err) {
          // A change that closed meanwhile rejects updates as "not found"; it still answers queries.
          const status = err instanceof WorkflowNotFoundError ? await handle.query(statusQuery).catch(() => undefined) : undefined;
          if (status) throw new HttpError(409, `nothing to ${decision}: the change is ${status.phase}`);
          if (err instanceof WorkflowNotFoundError) throw err;
          const why = summariseFailure(err);
          // The author voting on their own change is forbidden, not a conflict.
          throw new HttpError(why.type === 'SelfApprovalRefused' ? 403 : 409, why.message, { type: why.type });
        }
      },
    };
  }

  /**
   * POST /v1/changes/:id/<path>: a rollout control, sent as the workflow's update (whose
   * validator refuses the wrong phase: 409 with its reason). `by` is the principal.
   */
  function rolloutControl<A extends object>(
    path: string,
    operationId: string,
    summary: string,
    update: UpdateDefinition<ChangeStatus, [A]>,
    verb: 'pause' | 'promote',
    body: z.ZodType,
  ): ApiRoute {
    return {
      method: 'POST',
      url: `/v1/changes/:id/${path}`,
      operationId,
      summary,
      permission: { resource: 'changes', verb },
      params: changeParamsSchema,
      body,
      prepareBody: checkActor,
      responses: {
        200: { description: 'Done: the change\'s status.', schema: changeStatusSchema },
        ...refusals,
        ...notFound,
        409: { description: 'Refused in the change\'s current phase (the reason says why).', schema: errorSchema },
      },
      handle: async ({ params, body: b, principal }) => {
        const extra = (b ?? {}) as { full?: boolean; seconds?: number };
        const action = { ...(extra.full === true ? { full: true } : {}), ...(extra.seconds !== undefined ? { seconds: extra.seconds } : {}), ...operatorAction(b, principal) } as unknown as A;
        const handle = client.workflow.getHandle(changeWorkflowId(String(params.id)));
        try {
          return [200, await handle.executeUpdate(update, { args: [action] })];
        } catch (err) {
          // A finished change rejects updates as "not found"; tell it apart from a missing one.
          const status = await handle.query(statusQuery).catch(() => undefined);
          const reason = (err as { cause?: { message?: string } }).cause?.message;
          if (status && !reason) throw new HttpError(409, `nothing to ${path}: the change is ${status.phase}`);
          if (err instanceof WorkflowNotFoundError) throw err;
          throw new HttpError(409, reason ?? (err instanceof Error ? err.message : String(err)));
        }
      },
    };
  }
}

/** The change request with `author` set to the principal; a body naming anyone else is refused. */
function authored(body: unknown, principal: Principal): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new HttpError(400, 'invalid change request', { issues: [{ field: '', message: 'must be a JSON object' }] });
  const b = body as Record<string, unknown>;
  if (b.author !== undefined && b.author !== principal.name) {
    throw new HttpError(403, `"author" must be the authenticated principal "${principal.name}" (or left out): a change cannot be submitted in someone else's name`);
  }
  return { ...b, author: principal.name };
}

/** Refuses a `by` naming someone other than the caller (before the schema, so it is a 403). */
function checkActor(body: unknown, principal: Principal): unknown {
  const b = (body ?? {}) as Record<string, unknown>;
  if (b.by !== undefined && b.by !== principal.name) {
    throw new HttpError(403, `"by" must be the authenticated principal "${principal.name}" (or left out): nobody confirms, aborts, steers or approves in someone else's name`);
  }
  return body;
}

/** Whether the change's workflow exists and has closed (for telling "ended" from "no such change"). */
async function hasEnded(handle: { describe(): Promise<{ status: { name: string } }> }): Promise<boolean> {
  try {
    return (await handle.describe()).status.name !== 'RUNNING';
  } catch {
    return false; // unknown: the caller answers as for a change it cannot find
  }
}

function operatorAction(body: unknown, principal: Principal): { by: string; reason?: string } {
  const reason = (body as { reason?: string } | null)?.reason?.slice(0, 200);
  return { by: principal.name, ...(reason ? { reason } : {}) };
}
