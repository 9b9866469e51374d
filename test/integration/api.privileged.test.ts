/**
 * The HTTP API against a real Temporal dev server and a real node (netns + pinned maps).
 * Every call authenticates with a bearer token from a token-file authenticator; the API
 * signs identity assertions that the cluster worker verifies with the same key.
 * Privileged: needs root, netns, bpffs and the built Temporal CLI.
 */
import { randomBytes } from 'node:crypto';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { signIdentity } from '../../auth/identity-assertion';
import { SearchAttributes, CLUSTER_TASK_QUEUE } from '../../model/naming';
import { changeWorkflow } from '../../workflows/change';
import type { TestPrincipals } from '../helpers/api-tokens';
import { changeFailure } from '../helpers/change-client';
import { DEFAULT_ROUTE_PROTOCOL } from '../../activities/system/route-table';
import { describePrivileged } from '../helpers/capabilities';
import { LAN_GATEWAY_V4, type TestNamespace } from '../helpers/netns';
import { startTestApi, type TestApi } from '../helpers/test-api';
import { startTestNode, type TestNode } from '../helpers/test-node';

const NODE = 'api-node';
const IDENTITY_KEY = randomBytes(32);
const PRINCIPALS = { carol: ['admin'], frank: ['operator'], dave: ['operator'], erin: ['operator'], vic: ['viewer'] } satisfies TestPrincipals;

describePrivileged('HTTP API (privileged)', ['root', 'netns', 'bpffs', 'temporal-cli'], () => {
  let node: TestNode;
  let api: TestApi<typeof PRINCIPALS>;
  let env: TestWorkflowEnvironment;
  let ns: TestNamespace;
  let base: string;

  beforeAll(async () => {
    node = await startTestNode({ node: NODE, nsPrefix: 'fos1api', pinPrefix: 'fos1-test-api', workers: { identityKey: IDENTITY_KEY } });
    ({ env } = node);
    ns = node.ns!;
    api = await startTestApi(env.client, PRINCIPALS, { identityKey: IDENTITY_KEY });
    base = api.base;
  });

  afterAll(async () => {
    await api?.close();
    await node?.stop();
  });

  const id = () => `api-${randomBytes(3).toString('hex')}`;
  const change = (changeId: string, extra: object = {}) => ({
    id: changeId,
    reason: 'api test',
    targets: [NODE],
    patch: { routes: { upsert: [{ destination: '10.90.0.0/24', gateway: LAN_GATEWAY_V4 }] } },
    ...extra,
  });
  async function call(method: string, path: string, body?: unknown, as: keyof typeof PRINCIPALS | null = 'carol', headers: Record<string, string> = {}): Promise<{ status: number; json: Record<string, unknown>; headers: Headers }> {
    const res = await fetch(base + path, {
      method,
      headers: { ...(as ? { authorization: `Bearer ${api.tokens[as]}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
      ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
    });
    return { status: res.status, json: (await res.json()) as Record<string, unknown>, headers: res.headers };
  }
  /** Workflows whose id starts with `change-<id>` (any run, open or closed). */
  async function workflowsOf(changeId: string): Promise<string[]> {
    const ids: string[] = [];
    for await (const wf of env.client.workflow.list({ query: `WorkflowId STARTS_WITH 'change-${changeId}'` })) ids.push(wf.workflowId);
    return ids;
  }
  async function waitForPhase(changeId: string, phase: string): Promise<Record<string, unknown>> {
    // A minute: a change now checks pollers, loads the approval policy and verifies its author
    // before the node applies, which on a loaded 2-core machine takes more than a few seconds.
    for (const deadline = Date.now() + 60_000; Date.now() < deadline; ) {
      const { status, json } = await call('GET', `/v1/changes/${changeId}`);
      if (status === 200 && json.phase === phase) return json;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`change ${changeId} never reached ${phase}`);
  }

  test('a bad request is refused with 400, naming the field and the rule, and starts no workflow', async () => {
    const changeId = id();
    const { status, json } = await call('POST', '/v1/changes', change(changeId, { targets: ['Bad_Node'] }));
    expect(status).toBe(400);
    expect(json.issues).toEqual([expect.objectContaining({ field: 'targets[0]', message: expect.stringContaining('DNS-1123') })]);
    expect((await call('GET', `/v1/changes/${changeId}`)).status).toBe(404);
  });

  test('a change is accepted (202), applies, and a second submit of the same id is a conflict (409)', async () => {
    const changeId = id();
    const submitted = await call('POST', '/v1/changes', change(changeId));
    expect(submitted.status).toBe(202);
    expect(submitted.json).toMatchObject({ changeId, workflowId: `change-${changeId}` });
    const status = await waitForPhase(changeId, 'applied');
    expect(status.nodes).toMatchObject({ [NODE]: { outcome: 'applied' } });
    const [v4] = ns.routesJson(DEFAULT_ROUTE_PROTOCOL) as { dst: string }[][];
    expect(v4?.map((r) => r.dst)).toContain('10.90.0.0/24');
    expect((await call('POST', '/v1/changes', change(changeId))).status).toBe(409);
  });

  test('dry run answers with the diff and changes nothing', async () => {
    const before = ns.routesJson(DEFAULT_ROUTE_PROTOCOL);
    const { status, json } = await call('POST', '/v1/changes/dry-run', change(id(), { patch: { routes: { upsert: [{ destination: '10.91.0.0/24', gateway: LAN_GATEWAY_V4 }] } } }));
    expect(status).toBe(200);
    expect(json.phase).toBe('planned');
    expect(json.nodes).toMatchObject({ [NODE]: { diff: [`+ route 10.91.0.0/24 via ${LAN_GATEWAY_V4} table 254 metric 0`] } });
    expect(ns.routesJson(DEFAULT_ROUTE_PROTOCOL)).toEqual(before);
  });

  test('confirm is accepted while awaiting confirmation and refused (409) afterwards', async () => {
    const changeId = id();
    await call('POST', '/v1/changes', change(changeId, { patch: { blocklist: { upsert: [{ cidr: '192.0.2.10', reason: 'api' }] } }, options: { confirmTimeout: '30s' } }));
    await waitForPhase(changeId, 'awaiting-confirmation');
    const confirmed = await call('POST', `/v1/changes/${changeId}/confirm`, {}, 'dave');
    expect(confirmed.status).toBe(200);
    const status = await waitForPhase(changeId, 'applied');
    expect(status.audit).toEqual(expect.arrayContaining([expect.objectContaining({ step: 'confirm', result: 'ok', detail: 'confirmed by dave' })]));
    const again = await call('POST', `/v1/changes/${changeId}/confirm`, { by: 'dave' }, 'dave');
    expect(again.status).toBe(409);
    expect(again.json.error).toContain('nothing to confirm');
  });

  test('abort while awaiting confirmation restores the node', async () => {
    const changeId = id();
    await call('POST', '/v1/changes', change(changeId, { patch: { routes: { upsert: [{ destination: '10.92.0.0/24', gateway: LAN_GATEWAY_V4 }] } }, options: { confirmTimeout: '30s' } }));
    await waitForPhase(changeId, 'awaiting-confirmation');
    expect((await call('POST', `/v1/changes/${changeId}/abort`, { by: 'carol', reason: 'wrong table' }, 'erin')).status).toBe(403);
    expect((await call('POST', `/v1/changes/${changeId}/abort`, { reason: 'wrong table' }, 'erin')).status).toBe(202);
    const status = await waitForPhase(changeId, 'reverted');
    expect(status.message).toContain('aborted by erin: wrong table');
    const [v4] = ns.routesJson(DEFAULT_ROUTE_PROTOCOL) as { dst: string }[][];
    expect(v4?.map((r) => r.dst)).not.toContain('10.92.0.0/24');
  });

  test('changes are listed by author through the search attributes', async () => {
    const changeId = id();
    await call('POST', '/v1/changes', change(changeId, { patch: { blocklist: { upsert: [{ cidr: '192.0.2.77', reason: 'list test' }] } } }), 'frank');
    await waitForPhase(changeId, 'applied');
    // Visibility is eventually consistent: poll briefly.
    for (let i = 0; i < 100; i++) {
      const { json } = await call('GET', '/v1/changes?author=frank');
      const ids = (json.changes as { workflowId: string }[]).map((c) => c.workflowId);
      if (ids.includes(`change-${changeId}`)) {
        expect(ids).toEqual([`change-${changeId}`]);
        return;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error('change never showed up in the list');
  });

  test('unknown routes and malformed ids are answered plainly', async () => {
    expect((await call('GET', '/v1/nope')).status).toBe(404);
    expect((await call('GET', '/v1/changes/NOT_AN_ID')).status).toBe(400);
    expect((await call('POST', '/v1/changes', '{not json')).status).toBe(400);
  });

  const ROUTES: [string, string][] = [
    ['POST', '/v1/changes'],
    ['POST', '/v1/changes/dry-run'],
    ['GET', '/v1/changes'],
    ['GET', '/v1/changes/some-change'],
    ['POST', '/v1/changes/some-change/confirm'],
    ['POST', '/v1/changes/some-change/abort'],
    ['GET', '/v1/nope'],
  ];

  test('no token, or a wrong one, is 401 with WWW-Authenticate on every route, and starts nothing', async () => {
    const changeId = id();
    for (const [method, path] of ROUTES) {
      const body = method === 'POST' ? change(changeId) : undefined;
      for (const headers of [{}, { authorization: 'Bearer not-a-token' }, { authorization: 'Basic Y2Fyb2w6eA==' }] as Record<string, string>[]) {
        const res = await call(method, path, body, null, headers);
        expect([method, path, res.status]).toEqual([method, path, 401]);
        expect(res.headers.get('www-authenticate')).toBe('Bearer realm="fos1"');
      }
    }
    expect(await workflowsOf(changeId)).toEqual([]);
  });

  test('a viewer may read but not submit, confirm or abort (403)', async () => {
    const changeId = id();
    const refused = await call('POST', '/v1/changes', change(changeId), 'vic');
    expect(refused.status).toBe(403);
    expect(refused.json.error).toBe('vic may not submit changes.fos1.io');
    expect((await call('POST', '/v1/changes/dry-run', change(changeId), 'vic')).status).toBe(403);
    expect((await call('POST', `/v1/changes/${changeId}/abort`, {}, 'vic')).status).toBe(403);
    expect((await call('GET', '/v1/changes', undefined, 'vic')).status).toBe(200);
    expect(await workflowsOf(changeId)).toEqual([]);
  });

  test("the token's principal is the author in the status, the audit (verified) and the search attributes; a body naming someone else is refused", async () => {
    const forged = id();
    const refused = await call('POST', '/v1/changes', change(forged, { author: 'fos1-enforcer' }), 'frank');
    expect(refused.status).toBe(403);
    expect(refused.json.error).toContain('"author" must be the authenticated principal "frank"');
    expect(await workflowsOf(forged)).toEqual([]);

    const changeId = id();
    expect((await call('POST', '/v1/changes', change(changeId, { author: 'frank', patch: { blocklist: { upsert: [{ cidr: '192.0.2.88', reason: 'author test' }] } } }), 'frank')).status).toBe(202);
    const status = await waitForPhase(changeId, 'applied');
    const audit = status.audit as { actor: string; actorVerified?: boolean; step: string; node?: string }[];
    const changeLevel = audit.filter((r) => r.node === undefined);
    expect(changeLevel.length).toBeGreaterThan(0);
    expect(changeLevel.every((r) => r.actor === 'frank' && r.actorVerified === true)).toBe(true);
    expect(audit.filter((r) => r.node === NODE).every((r) => r.actor === 'frank')).toBe(true);
    const described = await env.client.workflow.getHandle(`change-${changeId}`).describe();
    expect(described.typedSearchAttributes.get(SearchAttributes.author)).toBe('frank');
  });

  test('a text/plain POST from a foreign Origin is refused (403) and starts nothing; text/plain from anywhere is 415', async () => {
    const changeId = id();
    const body = JSON.stringify(change(changeId));
    const foreign = await call('POST', '/v1/changes', body, 'carol', { 'content-type': 'text/plain', origin: 'http://evil.example' });
    expect(foreign.status).toBe(403);
    expect(foreign.json.error).toContain('origin "http://evil.example"');
    // Even without a token: the Origin check comes first, so a browser learns nothing.
    expect((await call('POST', '/v1/changes', body, null, { 'content-type': 'text/plain', origin: 'http://evil.example' })).status).toBe(403);
    const plain = await call('POST', '/v1/changes', body, 'carol', { 'content-type': 'text/plain' });
    expect(plain.status).toBe(415);
    expect(await workflowsOf(changeId)).toEqual([]);
    // The API's own origin (a page served from it) is fine.
    expect((await call('GET', '/v1/changes', undefined, 'carol', { origin: base })).status).toBe(200);
  });

  test('started straight from a Temporal client, the same change runs and is recorded self-asserted', async () => {
    const changeId = id();
    const handle = await env.client.workflow.start(changeWorkflow, {
      taskQueue: CLUSTER_TASK_QUEUE,
      workflowId: `change-${changeId}`,
      args: [{ ...change(changeId, { patch: { routes: { upsert: [{ destination: '10.93.0.0/24', gateway: LAN_GATEWAY_V4 }] } } }), author: 'carol' }],
    });
    const status = await handle.result();
    expect(status.phase).toBe('applied');
    const changeLevel = status.audit.filter((r) => r.node === undefined);
    expect(changeLevel.length).toBeGreaterThan(0);
    expect(changeLevel.every((r) => r.actor === 'carol' && r.actorVerified === false)).toBe(true);
  });

  test('a forged or altered identity assertion is refused: InvalidIdentityAssertion, nothing applied', async () => {
    const before = ns.routesJson(DEFAULT_ROUTE_PROTOCOL);
    const cases: [string, (body: Record<string, unknown>, changeId: string) => unknown, string][] = [
      ['signed with another key', (body, changeId) => signIdentity(randomBytes(32), { principal: 'carol', roles: ['admin'] }, changeId, body), 'signature does not match'],
      ['principal swapped after signing', (body, changeId) => ({ ...signIdentity(IDENTITY_KEY, { principal: 'carol', roles: [] }, changeId, body), principal: 'fos1-enforcer' }), 'signature does not match'],
      ['request altered after signing', (body, changeId) => signIdentity(IDENTITY_KEY, { principal: 'carol', roles: [] }, changeId, { ...body, targets: ['other-node'] }), 'different request'],
    ];
    for (const [what, assertion, why] of cases) {
      const changeId = id();
      const body = { ...change(changeId, { patch: { routes: { upsert: [{ destination: '10.94.0.0/24', gateway: LAN_GATEWAY_V4 }] } } }), author: 'carol' };
      const handle = await env.client.workflow.start(changeWorkflow, { taskQueue: CLUSTER_TASK_QUEUE, workflowId: `change-${changeId}`, args: [body, assertion(body, changeId)] });
      const { type, status } = await changeFailure(handle);
      expect([what, type]).toEqual([what, 'InvalidIdentityAssertion']);
      expect(status.phase).toBe('rejected');
      expect(status.message).toContain(why);
      expect(status.audit).toEqual([expect.objectContaining({ step: 'verify identity', result: 'failed', actor: 'carol', actorVerified: false })]);
    }
    expect(ns.routesJson(DEFAULT_ROUTE_PROTOCOL)).toEqual(before);
  });
});
