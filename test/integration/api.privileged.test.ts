/**
 * The HTTP API against a real Temporal dev server and a real node (netns + pinned maps).
 * Privileged: needs root, netns, bpffs and the built Temporal CLI.
 */
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import pino from 'pino';
import { startApiServer } from '../../api/server';
import { removePinnedBlocklist } from '../../bpf/blocklist-maps';
import { DEFAULT_ROUTE_PROTOCOL } from '../../activities/system/route-table';
import { describePrivileged } from '../helpers/capabilities';
import { LAN_GATEWAY_V4, TestNamespace } from '../helpers/netns';
import { startTemporal, startWorkers, type RunningWorkers } from '../helpers/temporal';

const NODE = 'api-node';

describePrivileged('HTTP API (privileged)', ['root', 'netns', 'bpffs', 'temporal-cli'], () => {
  let env: TestWorkflowEnvironment;
  let ns: TestNamespace;
  let pinDir: string;
  let workers: RunningWorkers;
  let server: Server;
  let base: string;

  beforeAll(async () => {
    env = await startTemporal();
    ns = TestNamespace.create('fos1api');
    pinDir = `/sys/fs/bpf/fos1-test-api-${randomBytes(4).toString('hex')}`;
    workers = await startWorkers(env, NODE, { netns: ns.name, routeProtocol: DEFAULT_ROUTE_PROTOCOL, bpfPinDir: pinDir, blocklistMaxEntries: { v4: 64, v6: 64 } });
    server = await startApiServer({ client: env.client, port: 0, host: '127.0.0.1', logger: pino({ level: 'silent' }) });
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    server?.close();
    await workers?.stop();
    if (pinDir) removePinnedBlocklist(pinDir);
    ns?.destroy();
    await env?.teardown();
  });

  const id = () => `api-${randomBytes(3).toString('hex')}`;
  const change = (changeId: string, extra: object = {}) => ({
    id: changeId,
    author: 'carol',
    reason: 'api test',
    targets: [NODE],
    patch: { routes: { upsert: [{ destination: '10.90.0.0/24', gateway: LAN_GATEWAY_V4 }] } },
    ...extra,
  });
  async function call(method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
    const res = await fetch(base + path, { method, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
    return { status: res.status, json: (await res.json()) as Record<string, unknown> };
  }
  async function waitForPhase(changeId: string, phase: string): Promise<Record<string, unknown>> {
    for (let i = 0; i < 200; i++) {
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
    const confirmed = await call('POST', `/v1/changes/${changeId}/confirm`, { by: 'dave' });
    expect(confirmed.status).toBe(200);
    await waitForPhase(changeId, 'applied');
    const again = await call('POST', `/v1/changes/${changeId}/confirm`, { by: 'dave' });
    expect(again.status).toBe(409);
    expect(again.json.error).toContain('nothing to confirm');
  });

  test('abort while awaiting confirmation restores the node', async () => {
    const changeId = id();
    await call('POST', '/v1/changes', change(changeId, { patch: { routes: { upsert: [{ destination: '10.92.0.0/24', gateway: LAN_GATEWAY_V4 }] } }, options: { confirmTimeout: '30s' } }));
    await waitForPhase(changeId, 'awaiting-confirmation');
    expect((await call('POST', `/v1/changes/${changeId}/abort`, { by: 'erin', reason: 'wrong table' })).status).toBe(202);
    const status = await waitForPhase(changeId, 'reverted');
    expect(status.message).toContain('aborted by erin: wrong table');
    const [v4] = ns.routesJson(DEFAULT_ROUTE_PROTOCOL) as { dst: string }[][];
    expect(v4?.map((r) => r.dst)).not.toContain('10.92.0.0/24');
  });

  test('changes are listed by author through the search attributes', async () => {
    const changeId = id();
    await call('POST', '/v1/changes', change(changeId, { author: 'frank', patch: { blocklist: { upsert: [{ cidr: '192.0.2.77', reason: 'list test' }] } } }));
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
    const res = await fetch(`${base}/v1/changes`, { method: 'POST', body: '{not json' });
    expect(res.status).toBe(400);
  });
});
