/**
 * The durable audit and the revisions, end to end: real Temporal, a real PostgreSQL server
 * (the audit chain and the revisions are its tables), a real node (network namespace,
 * pinned maps), the HTTP API reading the stores read-only.
 *
 * - a change's audit is complete in the store after its workflow histories are deleted;
 * - records made while PostgreSQL is down are written once it is back, none lost, none twice;
 * - revisions: the diff of two shows the routes that differ, and a rollback to an earlier one
 *   (a new change, through the change workflow) leaves the node's routes as they were then;
 * - one byte edited in a stored record: `GET /v1/audit/verify` names it.
 *
 * Privileged: needs root, netns, bpffs, the built Temporal CLI and PostgreSQL.
 */
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import pino from 'pino';
import { PostgresAuditStore, PostgresRevisionStore } from '../../activities/audit-store';
import { DEFAULT_ROUTE_PROTOCOL } from '../../activities/system/route-table';
import { startApiServer, type ApiServer } from '../../api/server';
import { removePinnedBlocklist } from '../../bpf/blocklist-maps';
import type { AuditRecord } from '../../model/audit';
import { canonicalJson } from '../../model/audit-chain';
import { changeWorkflowId, nodeLockWorkflowId } from '../../model/naming';
import type { ChangeStatus } from '../../workflows/change';
import { testTokens } from '../helpers/api-tokens';
import { testAuditStores, type TestAuditStores } from '../helpers/audit-stores';
import { describePrivileged } from '../helpers/capabilities';
import { eventually } from '../helpers/eventually';
import { LAN_GATEWAY_V4, TestNamespace } from '../helpers/netns';
import { startPostgres, type TestPostgres } from '../helpers/postgres';
import { startTemporal, startWorkers, type RunningWorkers } from '../helpers/temporal';

const NODE = 'audit-node';
const { authenticator, tokens } = testTokens({ alice: ['admin'], vic: ['viewer'] });

describePrivileged('durable audit and revisions (privileged)', ['root', 'netns', 'bpffs', 'temporal-cli', 'postgres'], () => {
  let env: TestWorkflowEnvironment;
  let pg: TestPostgres;
  let db: string;
  let ns: TestNamespace;
  let pinDir: string;
  let stores: TestAuditStores;
  let workers: RunningWorkers;
  let api: ApiServer;
  let reader: { audit: PostgresAuditStore; revisions: PostgresRevisionStore };
  let base: string;

  beforeAll(async () => {
    [env, pg] = await Promise.all([startTemporal(), startPostgres()]);
    const url = await pg.createDatabase('fos1_audit');
    db = 'fos1_audit';
    ns = TestNamespace.create('fos1aud');
    pinDir = `/sys/fs/bpf/fos1-test-audit-${randomBytes(4).toString('hex')}`;
    stores = testAuditStores({ postgresUrl: url });
    workers = await startWorkers(env, NODE, { netns: ns.name, routeProtocol: DEFAULT_ROUTE_PROTOCOL, bpfPinDir: pinDir, blocklistMaxEntries: { v4: 64, v6: 64 } }, { audit: stores });
    // The API reads what the worker writes, without a signing key.
    reader = { audit: new PostgresAuditStore({ connection: { connectionString: url } }), revisions: new PostgresRevisionStore(url) };
    api = await startApiServer({
      client: env.client,
      port: 0,
      host: '127.0.0.1',
      logger: pino({ level: 'silent' }),
      security: { authenticator },
      audit: { store: reader.audit, revisions: reader.revisions, publicKeyFiles: stores.config.publicKeyFiles },
    });
    base = `http://127.0.0.1:${(api.address() as AddressInfo).port}`;
  }, 180_000);

  afterAll(async () => {
    api?.close();
    await workers?.stop();
    await stores?.close();
    await reader?.audit.close();
    await reader?.revisions.close();
    if (pinDir) removePinnedBlocklist(pinDir);
    ns?.destroy();
    await pg?.destroy();
    await env?.teardown();
  });

  async function call(method: string, path: string, body?: unknown, as: keyof typeof tokens | null = 'alice'): Promise<{ status: number; json: Record<string, unknown> }> {
    const res = await fetch(base + path, {
      method,
      headers: { ...(as ? { authorization: `Bearer ${tokens[as]}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return { status: res.status, json: (await res.json()) as Record<string, unknown> };
  }
  const routes = (...nets: string[]) => nets.map((destination) => ({ destination, gateway: LAN_GATEWAY_V4 }));
  const newId = (prefix: string) => `${prefix}-${randomBytes(3).toString('hex')}`;
  /** Submits through the API and waits for the change workflow's result. */
  async function runChange(id: string, desired: object): Promise<ChangeStatus> {
    const submitted = await call('POST', '/v1/changes', { id, reason: 'audit test', targets: [NODE], desired });
    expect(submitted.status).toBe(202);
    return (await env.client.workflow.getHandle(changeWorkflowId(id)).result()) as ChangeStatus;
  }
  /** The node's fos1 routes, as `ip -n … route` reads them. */
  const nodeRoutes = () => ns.routesJson(DEFAULT_ROUTE_PROTOCOL);
  async function storedRecords(changeId: string): Promise<AuditRecord[]> {
    const { status, json } = await call('GET', `/v1/audit?change=${changeId}`, undefined, 'vic');
    expect(status).toBe(200);
    return (json.entries as { record: AuditRecord }[]).map((e) => e.record);
  }

  test('the audit of a change is complete in the store after its workflow histories are deleted', async () => {
    const id = newId('hist');
    const status = await runChange(id, { routes: routes('10.81.0.0/24') });
    expect(status.phase).toBe('applied');
    // Every workflow of the change (the change, its waves, the node's), and what each recorded.
    const ids = [nodeLockWorkflowId(NODE)];
    for await (const wf of env.client.workflow.list({ query: `WorkflowId STARTS_WITH '${changeWorkflowId(id)}'` })) ids.push(wf.workflowId);
    expect(ids.length).toBeGreaterThanOrEqual(3); // change, wave, node
    const node = (await env.client.workflow.getHandle(nodeLockWorkflowId(NODE)).result()) as { audit: AuditRecord[] };
    const recorded = new Set([...status.audit, ...node.audit].map((r) => canonicalJson(r)));
    expect([...recorded].map((r) => JSON.parse(r) as AuditRecord).map((r) => `${r.node ?? '-'} ${r.step} ${r.result}`)).toEqual(expect.arrayContaining(['- validate ok', `${NODE} snapshot ok`, `${NODE} routes ok`, `${NODE} verify ok`]));

    for (const workflowId of ids) {
      const { runId } = await env.client.workflow.getHandle(workflowId).describe();
      await env.connection.workflowService.deleteWorkflowExecution({ namespace: env.namespace ?? 'default', workflowExecution: { workflowId, runId } });
    }
    for (const workflowId of ids) {
      await eventually(
        () => env.client.workflow.getHandle(workflowId).describe().then(() => 'present', (err: Error) => err.name),
        (state) => state === 'WorkflowNotFoundError',
        `workflow ${workflowId} to be deleted`,
        // The server deletes asynchronously (about half a minute on the dev server).
        150_000,
        1000,
      );
    }
    // Every record the workflows made is in the store once, plus the wave's revision record; the chain verifies.
    const stored = await storedRecords(id);
    const storedJson = stored.map((r) => canonicalJson(r));
    expect(new Set(storedJson).size).toBe(storedJson.length);
    const revisionRecords = stored.filter((r) => r.step === 'revision');
    expect(revisionRecords).toEqual([expect.objectContaining({ result: 'ok', detail: expect.stringMatching(new RegExp(`^${NODE} revision \\d+ [0-9a-f]{64}$`)) })]);
    expect(storedJson.filter((r) => !revisionRecords.some((v) => canonicalJson(v) === r)).sort()).toEqual([...recorded].sort());
    const verify = await call('GET', '/v1/audit/verify', undefined, 'vic');
    expect(verify.json).toMatchObject({ ok: true, problems: [] });
    // Queries by node and action find them too.
    const byNode = await call('GET', `/v1/audit?node=${NODE}&action=verify&change=${id}`, undefined, 'vic');
    expect((byNode.json.entries as unknown[]).length).toBe(1);
  }, 400_000);

  test('records made while PostgreSQL is down are written when it is back: none lost, none twice', async () => {
    const id = newId('down');
    await pg.stop();
    try {
      const submitted = await call('POST', '/v1/changes', { id, reason: 'audit while the database is down', targets: [NODE], desired: { routes: routes('10.82.0.0/24') } });
      expect(submitted.status).toBe(202);
      // The change applies on the node while the store is down (its records wait in the activities' input)…
      await eventually(async () => JSON.stringify(nodeRoutes()), (r) => r.includes('10.82.0.0/24'), 'the route to be applied on the node', 60_000, 200);
      const handle = env.client.workflow.getHandle(changeWorkflowId(id));
      await eventually(
        async () => (await handle.describe()).raw.pendingActivities?.map((a) => a.attempt ?? 0) ?? [],
        (attempts) => attempts.some((a) => a >= 2),
        'an audit or revision activity to be retried while PostgreSQL is down',
        60_000,
        250,
      );
      expect((await handle.describe()).status.name).toBe('RUNNING');
    } finally {
      await pg.start();
    }
    const status = (await env.client.workflow.getHandle(changeWorkflowId(id)).result()) as ChangeStatus;
    expect(status.phase).toBe('applied');
    const rows = (await pg.sql(db, 'SELECT record_id, count(*)::int AS c FROM fos1_audit_entries WHERE change_id = $1 GROUP BY record_id', [id])) as { c: number }[];
    expect(rows.every((r) => r.c === 1)).toBe(true);
    // Everything the change reported is stored (its nodes' and waves' own records too: more than the status shows).
    const stored = new Set((await storedRecords(id)).map((r) => canonicalJson(r)));
    expect(status.audit.filter((r) => !stored.has(canonicalJson(r)))).toEqual([]);
    const seqs = (await pg.sql(db, 'SELECT seq::int AS seq FROM fos1_audit_entries ORDER BY seq')) as { seq: number }[];
    expect(seqs.map((r) => r.seq)).toEqual(seqs.map((_, i) => i + 1));
    expect((await call('GET', '/v1/audit/verify')).json).toMatchObject({ ok: true });
  }, 240_000);

  test('revisions: a diff in fos1 words, and a rollback to an earlier revision through the change workflow restores the node', async () => {
    const a = newId('rev-a');
    await runChange(a, { routes: routes('10.83.1.0/24', '10.83.2.0/24') });
    const atA = nodeRoutes();
    const b = newId('rev-b');
    await runChange(b, { routes: routes('10.83.1.0/24', '10.83.3.0/24') });
    expect(nodeRoutes()).not.toEqual(atA);

    const list = await call('GET', `/v1/revisions?node=${NODE}`, undefined, 'vic');
    expect(list.status).toBe(200);
    const revisions = list.json.revisions as { id: string; number: number; changeId: string; parent?: string; author: string; reason: string }[];
    const revA = revisions.find((r) => r.changeId === a)!;
    const revB = revisions.find((r) => r.changeId === b)!;
    expect(revB).toMatchObject({ number: revA.number + 1, parent: revA.id, author: 'alice', reason: 'audit test' });
    expect(revisions[0]!.id).toBe(revB.id); // newest first

    const diff = await call('GET', `/v1/revisions/diff?from=${revA.id}&to=${revB.id}`, undefined, 'vic');
    expect(diff.json.diff).toEqual([`+ route 10.83.3.0/24 via ${LAN_GATEWAY_V4} table 254 metric 0`, `- route 10.83.2.0/24 via ${LAN_GATEWAY_V4} table 254 metric 0`]);
    const shown = await call('GET', `/v1/revisions/${revA.id}`, undefined, 'vic');
    expect(shown.json).toMatchObject({ id: revA.id, node: NODE, state: { network: { routes: [expect.objectContaining({ destination: '10.83.1.0/24' }), expect.objectContaining({ destination: '10.83.2.0/24' })] } } });

    // A viewer may not roll back; the author of the rollback is the caller.
    expect((await call('POST', `/v1/revisions/${revA.id}/rollback`, {}, 'vic')).status).toBe(403);
    const rollbackId = newId('rollback');
    const rolled = await call('POST', `/v1/revisions/${revA.id}/rollback`, { id: rollbackId });
    expect(rolled).toMatchObject({ status: 202, json: { changeId: rollbackId, revision: revA.id, node: NODE } });
    const status = (await env.client.workflow.getHandle(changeWorkflowId(rollbackId)).result()) as ChangeStatus;
    expect(status.phase).toBe('applied');
    expect(nodeRoutes()).toEqual(atA);
    // The rollback is a revision of its own, with revision A's state.
    const after = (await call('GET', `/v1/revisions?node=${NODE}`)).json.revisions as { changeId: string; stateHash: string; author: string }[];
    expect(after[0]).toMatchObject({ changeId: rollbackId, author: 'alice', stateHash: (shown.json as { stateHash: string }).stateHash });
    expect((await call('GET', `/v1/revisions/diff?from=${revA.id}&to=${(after[0] as unknown as { id: string }).id}`)).json.diff).toEqual([]);
  }, 180_000);

  test('authorization refusals reach the audit store through the cluster worker', async () => {
    expect((await call('POST', '/v1/changes', { id: newId('nope'), reason: 'x', targets: [NODE], patch: {} }, 'vic')).status).toBe(403);
    await api.flushAudit();
    await eventually(
      async () => (await call('GET', '/v1/audit?change=api-authz&actor=vic')).json.entries as { record: AuditRecord }[],
      (entries) => entries.some((e) => e.record.step === 'refused' && e.record.detail?.startsWith('forbidden: submit changes.fos1.io on POST /v1/changes') === true),
      'the refusal to be stored',
      30_000,
      200,
    );
  }, 60_000);

  test('one byte edited in a stored record: GET /v1/audit/verify names that record', async () => {
    const [victim] = (await pg.sql(db, "SELECT seq::int AS seq, record_id FROM fos1_audit_entries WHERE step = 'routes' ORDER BY seq LIMIT 1")) as { seq: number; record_id: string }[];
    expect(victim).toBeDefined();
    // "routes" → "routeS" inside the stored JSON: one byte, the query column left as it was.
    await pg.sql(db, `UPDATE fos1_audit_entries SET record_json = replace(record_json, '"step":"routes"', '"step":"routeS"') WHERE seq = $1`, [victim!.seq]);
    const { status, json } = await call('GET', '/v1/audit/verify', undefined, 'vic');
    expect(status).toBe(200);
    expect(json).toMatchObject({ ok: false, validThrough: victim!.seq - 1, firstProblem: { kind: 'hash-mismatch', seq: victim!.seq, id: victim!.record_id } });
  }, 60_000);
});
