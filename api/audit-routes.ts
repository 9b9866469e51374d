/**
 * The API's audit and revision routes (docs/audit.md, docs/revisions.md):
 *
 *   GET  /v1/audit                   the durable audit (?change=, ?node=, ?actor=, ?action=, ?from=, ?to=, ?limit=, ?after=)
 *   GET  /v1/audit/verify            checks the hash chain and the signed checkpoints; names the first record that does not match
 *   GET  /v1/revisions?node=         a node's revisions, newest first
 *   GET  /v1/revisions/diff          ?from=&to= (revision ids): the diff in fos1's words
 *   GET  /v1/revisions/:id           one revision, with its state
 *   POST /v1/revisions/:id/rollback  a new change whose desired state is the revision's ({ "id", "reason", "options" })
 *   POST /v1/revisions/rollback      a fleet rollback: every node a change committed on, back to that change's revisions, as one change ({ "change", … })
 *
 * The stores are the ones the cluster worker writes, opened read-only (workers/audit.ts):
 * the API holds no signing key. Reading needs `view`, a rollback `submit` (it is a change,
 * authored by the caller, through the change workflow like any other).
 */
import { z } from 'zod';
import { loadPublicKeys, RevisionIntegrityError, type AuditStore, type RevisionStore } from '../activities/audit-store';
import type { Principal } from '../auth/authenticator';
import { AuditInputError, validateAuditQuery } from '../model/audit-chain';
import { changeOptionsSchema } from '../model/change-request';
import { diffRevisionStates, fleetRollbackRequest, rollbackRequest, type Revision } from '../model/revision';
import { HttpError, type ApiRoute } from './routes';
import { errorSchema } from './schemas';

/** The stores the audit routes read, and the keys that verify checkpoints (read at each verify). */
export interface ApiAuditDeps {
  store: AuditStore;
  revisions: RevisionStore;
  publicKeyFiles: string[];
}

const refusals = {
  400: { description: 'The request is invalid: each field and the rule it breaks.', schema: errorSchema },
  401: { description: 'No valid bearer token.', schema: errorSchema },
  403: { description: 'The caller may not do this, or Host/Origin is foreign.', schema: errorSchema },
  503: { description: 'The API has no audit store configured.', schema: errorSchema },
} as const;

const text = (what: string) => z.string().min(1).max(253).optional().meta({ description: what });
const isoTime = (what: string) => z.iso.datetime({ offset: true, message: 'must be an ISO 8601 date-time with a timezone' }).optional().meta({ description: what });
const count = (what: string) => z.string().regex(/^\d{1,9}$/, 'must be a whole number').optional().meta({ description: what });

const auditQuerySchema = z
  .object({
    change: text('Records of this change (`api-authz`: the API\'s authorization refusals).'),
    node: text('Records of this node.'),
    actor: text('Records whose actor is this principal.'),
    action: text('Records of this step: `validate`, `routes`, `verify`, `confirm`, `revision`, `refused`, …'),
    from: isoTime('Records that started at or after this time.'),
    to: isoTime('Records that started before this time.'),
    limit: count('At most this many (default 1000, at most 10000).'),
    after: count('Only entries after this sequence number (paging: the `next` of the answer before).'),
  })
  .strict();
const revisionIdSchema = z.string().regex(/^[0-9a-f]{64}$/, 'must be a revision id: 64 lowercase hex digits (its sha256)');
const nodeSchema = z.string().regex(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/, 'must be a node name (lowercase letters, digits, "-")');
const rollbackBodySchema = z
  .object({
    id: z.string().regex(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/, 'must be 1–63 lowercase letters, digits or "-"').optional().meta({ description: 'The new change\'s id (default `rollback-<revision>-<time>`).' }),
    reason: z.string().min(1).max(1000).optional(),
    options: changeOptionsSchema.optional(),
  })
  .strict();
const fleetRollbackBodySchema = rollbackBodySchema.extend({
  change: z.string().regex(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/, 'must be a change id (1–63 lowercase letters, digits or "-")').meta({ description: 'The committed change whose revisions the fleet goes back to.' }),
});
const anyObject = z.looseObject({});

/** The audit and revision routes. `audit` absent: they answer 503. */
export function auditRoutes(audit: ApiAuditDeps | undefined, submit: (body: Record<string, unknown>, principal: Principal) => Promise<[number, unknown]>): ApiRoute[] {
  const stores = (): ApiAuditDeps => {
    if (!audit) throw new HttpError(503, 'the API has no audit store configured (FOS1_AUDIT_POSTGRES_URL or FOS1_AUDIT_DIR)');
    return audit;
  };
  const revision = async (id: string): Promise<Revision> => {
    let found: Revision | undefined;
    try {
      found = await stores().revisions.get(id);
    } catch (err) {
      if (err instanceof RevisionIntegrityError) throw new HttpError(409, err.message);
      throw err;
    }
    if (!found) throw new HttpError(404, `no revision ${id}`);
    return found;
  };
  const number = (v: string | undefined) => (v === undefined ? undefined : Number(v));

  return [
    {
      method: 'GET',
      url: '/v1/audit',
      operationId: 'queryAudit',
      summary: 'The durable audit: records by change, node, actor, action and time, in chain order.',
      permission: { resource: 'changes', verb: 'view' },
      querystring: auditQuerySchema,
      responses: { 200: { description: 'Matching entries (`seq`, `id`, `prevHash`, `hash`, `record`); `next` when the limit was reached.', schema: anyObject }, ...refusals },
      handle: async ({ query }) => {
        let q;
        try {
          q = validateAuditQuery({ changeId: query.change, node: query.node, actor: query.actor, step: query.action, from: query.from, to: query.to, limit: number(query.limit), afterSeq: number(query.after) });
        } catch (err) {
          if (err instanceof AuditInputError) throw new HttpError(400, err.message.replace('query.afterSeq', 'after').replace(/^query\./, ''));
          throw err;
        }
        const entries = await stores().store.query(q);
        return [200, { entries, ...(entries.length === q.limit ? { next: `after=${entries[entries.length - 1]!.seq}` } : {}) }];
      },
    },
    {
      method: 'GET',
      url: '/v1/audit/verify',
      operationId: 'verifyAudit',
      summary: 'Checks the hash chain and the signed checkpoints; names the first record that does not match.',
      permission: { resource: 'changes', verb: 'view' },
      responses: { 200: { description: 'The report: `ok`, `entries`, `validThrough`, `lastGoodCheckpoint`, `uncheckpointed`, `firstProblem`, `problems`.', schema: anyObject }, ...refusals },
      handle: async () => {
        const { store, publicKeyFiles } = stores();
        let keys;
        try {
          keys = loadPublicKeys(publicKeyFiles);
        } catch (err) {
          throw new HttpError(503, `cannot verify: ${(err as Error).message} (FOS1_AUDIT_PUBLIC_KEYS)`);
        }
        return [200, await store.verify(keys)];
      },
    },
    {
      method: 'GET',
      url: '/v1/revisions',
      operationId: 'listRevisions',
      summary: 'A node\'s revisions, newest first (at most 50), without their states.',
      permission: { resource: 'changes', verb: 'view' },
      querystring: z.object({ node: nodeSchema }).strict(),
      responses: { 200: { description: '`{ node, revisions }`.', schema: anyObject }, ...refusals },
      handle: async ({ query }) => {
        const node = String(query.node);
        const revisions = await stores().revisions.list(node);
        return [200, { node, revisions: revisions.map(({ state: _state, ...summary }) => summary) }];
      },
    },
    {
      method: 'GET',
      url: '/v1/revisions/diff',
      operationId: 'diffRevisions',
      summary: 'What a change from revision `from` to revision `to` does, in fos1\'s diff words.',
      permission: { resource: 'changes', verb: 'view' },
      querystring: z.object({ from: revisionIdSchema, to: revisionIdSchema }).strict(),
      responses: { 200: { description: '`{ from, to, nodes, diff }`.', schema: anyObject }, ...refusals, 404: { description: 'No such revision.', schema: errorSchema } },
      handle: async ({ query }) => {
        const from = await revision(String(query.from));
        const to = await revision(String(query.to));
        return [200, { from: from.id, to: to.id, nodes: [from.node, to.node], diff: diffRevisionStates(from.state, to.state) }];
      },
    },
    {
      method: 'GET',
      url: '/v1/revisions/:id',
      operationId: 'getRevision',
      summary: 'One revision, with its state.',
      permission: { resource: 'changes', verb: 'view' },
      params: z.object({ id: revisionIdSchema }),
      responses: { 200: { description: 'The revision.', schema: anyObject }, ...refusals, 404: { description: 'No such revision.', schema: errorSchema } },
      handle: async ({ params }) => [200, await revision(String(params.id))],
    },
    {
      method: 'POST',
      url: '/v1/revisions/rollback',
      operationId: 'rollbackFleetToChange',
      summary: 'Roll every node a committed change made a revision on back to that revision: one new change (authored by the caller) through one staged rollout.',
      permission: { resource: 'changes', verb: 'submit' },
      body: fleetRollbackBodySchema,
      responses: {
        202: { description: 'The rollback change started (`changeId`, `workflowId`, `revisions`, `nodes`).', schema: anyObject },
        ...refusals,
        409: { description: 'The change made no revision, its revisions hold different states, or one cannot be rolled back to (each reason); or the change id exists.', schema: errorSchema },
      },
      handle: async ({ body, principal }) => {
        const b = body as z.output<typeof fleetRollbackBodySchema>;
        let revisions: Revision[];
        try {
          revisions = await stores().revisions.forChange(b.change);
        } catch (err) {
          if (err instanceof RevisionIntegrityError) throw new HttpError(409, err.message);
          throw err;
        }
        const id = b.id ?? `rollback-${b.change.slice(0, 30)}-${Date.now().toString(36)}`;
        const plan = fleetRollbackRequest(b.change, revisions, { id, author: principal.name, ...(b.reason ? { reason: b.reason } : {}), now: Date.now() });
        if (!plan.ok) throw new HttpError(409, `cannot roll back to the revisions of change ${b.change}: ${plan.reasons.join('; ')}`, { reasons: plan.reasons });
        const [status, answer] = await submit({ ...plan.request, ...(b.options ? { options: b.options } : {}) } as Record<string, unknown>, principal);
        return [status, { ...(answer as object), revisions: revisions.map((r) => r.id), nodes: revisions.map((r) => r.node) }];
      },
    },
    {
      method: 'POST',
      url: '/v1/revisions/:id/rollback',
      operationId: 'rollbackToRevision',
      summary: 'Roll a node back to a revision: a new change (authored by the caller) whose desired state is the revision\'s.',
      permission: { resource: 'changes', verb: 'submit' },
      params: z.object({ id: revisionIdSchema }),
      body: rollbackBodySchema,
      responses: {
        202: { description: 'The rollback change started (`changeId`, `workflowId`, `revision`, `node`).', schema: anyObject },
        ...refusals,
        404: { description: 'No such revision.', schema: errorSchema },
        409: { description: 'The revision cannot be rolled back to (each reason), or the change id exists.', schema: errorSchema },
      },
      handle: async ({ params, body, principal }) => {
        const target = await revision(String(params.id));
        const b = (body ?? {}) as z.output<typeof rollbackBodySchema>;
        const id = b.id ?? `rollback-${target.id.slice(0, 12)}-${Date.now().toString(36)}`;
        const plan = rollbackRequest(target, { id, author: principal.name, ...(b.reason ? { reason: b.reason } : {}), now: Date.now() });
        if (!plan.ok) throw new HttpError(409, `cannot roll back to revision ${target.id}: ${plan.reasons.join('; ')}`, { reasons: plan.reasons });
        const [status, answer] = await submit({ ...plan.request, ...(b.options ? { options: b.options } : {}) } as Record<string, unknown>, principal);
        return [status, { ...(answer as object), revision: target.id, node: target.node }];
      },
    },
  ];
}
