/**
 * Cilium as a step of the change workflow, on real parts: a kube-apiserver with Cilium's own
 * CRDs, the Temporal dev server, a network namespace standing in for the node, and blocklist
 * maps pinned in bpffs. One change carries cluster policy and node state; they apply and roll
 * back as one (docs/change-workflow.md, "Cluster policy").
 *
 * Privileged: needs root, netns, bpffs, the built Temporal CLI and kube-apiserver + etcd.
 */
import { randomBytes } from 'node:crypto';
import { relative } from 'node:path';
import type { WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import pino from 'pino';
import type { BlocklistMaps } from '../../bpf/blocklist-maps';
import { DEFAULT_ROUTE_PROTOCOL } from '../../activities/system/route-table';
import { normaliseDocument } from '../../activities/cluster-policy';
import { readManifests, type KubeApiServer } from '../../k8s/harness';
import { yamlFilesUnder } from '../../k8s/validate';
import type { ChangeRequestInput } from '../../model/change-request';
import type { KubeObject } from '../../model/firewall-translate';
import { CLUSTER_TASK_QUEUE, changeWorkflowId } from '../../model/naming';
import { changeWorkflow, type ChangeStatus } from '../../workflows/change';
import { changeFailure, waitForPhase } from '../helpers/change-client';
import { CILIUM_EXAMPLES_DIR, describeKube, startKubeWithCrds } from '../helpers/kube';
import { LAN_GATEWAY_V4, type TestNamespace } from '../helpers/netns';
import { startTestNode, type TestNode } from '../helpers/test-node';

const NODE = 'node-a';
const NS = `fos1-cc-${process.pid}`;
const logger = pino({ level: 'silent' });

/** Plan lines in apply order: CIDR groups, then namespaced policies, then clusterwide ones. */
function rankOf(line: string): number {
  return ['CiliumCIDRGroup', 'CiliumNetworkPolicy', 'CiliumClusterwideNetworkPolicy'].indexOf(line.split(' ')[1] ?? '');
}

/** A CiliumNetworkPolicy as an operator copies it from Cilium's docs (no namespace: the change's). */
function allowWeb(port: string, name = 'allow-web'): KubeObject {
  return {
    apiVersion: 'cilium.io/v2',
    kind: 'CiliumNetworkPolicy',
    metadata: { name },
    spec: { endpointSelector: { matchLabels: { app: 'web' } }, ingress: [{ fromEntities: ['world'], toPorts: [{ ports: [{ port, protocol: 'TCP' }] }] }] },
  };
}

describeKube('Cilium policy as a step of the change workflow (privileged)', ['root', 'netns', 'bpffs', 'temporal-cli'], () => {
  let kube: KubeApiServer;
  let node: TestNode;
  let env: TestWorkflowEnvironment;
  let ns: TestNamespace;
  let maps: BlocklistMaps;
  let sequence = 0;

  beforeAll(async () => {
    kube = await startKubeWithCrds();
    for (const name of [NS, 'ns1', 'ns2']) await kube.client.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
    node = await startTestNode({ node: NODE, openMaps: true, workers: { ciliumDeps: { kube: kube.client, fieldManager: 'fos1', logger } } });
    ({ env } = node);
    ns = node.ns!;
    maps = node.maps!;
  }, 240_000);

  afterAll(async () => {
    await node?.stop();
    await kube?.stop();
  });

  function request(overrides: Partial<ChangeRequestInput>): ChangeRequestInput {
    sequence++;
    return { id: `cc-${sequence}-${randomBytes(2).toString('hex')}`, author: 'alice', reason: 'integration test', targets: [NODE], ...overrides } as ChangeRequestInput;
  }

  function start(req: ChangeRequestInput): Promise<WorkflowHandle<typeof changeWorkflow>> {
    return env.client.workflow.start(changeWorkflow, { taskQueue: CLUSTER_TASK_QUEUE, workflowId: changeWorkflowId(req.id), args: [req] });
  }

  function kernelState() {
    return { routes: ns.routesJson(DEFAULT_ROUTE_PROTOCOL), blocklist: maps.readAll() };
  }

  /** Every Cilium object in the cluster, normalised, by `Kind ns/name`. */
  async function ciliumObjects(): Promise<Record<string, KubeObject>> {
    const out: Record<string, KubeObject> = {};
    for (const [apiVersion, kind] of [['cilium.io/v2', 'CiliumNetworkPolicy'], ['cilium.io/v2', 'CiliumClusterwideNetworkPolicy'], ['cilium.io/v2alpha1', 'CiliumCIDRGroup']] as const) {
      for (const item of (await kube.client.list(apiVersion, kind)).items) out[`${kind} ${item.metadata.namespace ? `${item.metadata.namespace}/` : ''}${item.metadata.name}`] = normaliseDocument(item);
    }
    return out;
  }

  const steps = (status: ChangeStatus) => status.audit.map((r) => `${r.node ? `${r.node}:` : ''}${r.step}:${r.result}`);

  test('a change with a CiliumNetworkPolicy, a route and a blocklist entry whose route fails in the kernel: the policy is back exactly and the node equals its snapshot', async () => {
    // The state before: policy v1 (port 80) from an earlier change, and a route and a block on the node.
    const baseline = await (
      await start(request({ desired: { routes: [{ destination: '10.10.0.0/16', gateway: LAN_GATEWAY_V4 }], blocklist: [{ cidr: '203.0.113.0/24', reason: 'baseline' }] }, clusterPolicy: { namespace: NS, cilium: [allowWeb('80')] } }))
    ).result();
    expect(baseline.phase).toBe('applied');
    expect(baseline.clusterPolicy).toEqual({ phase: 'applied', plan: [`+ CiliumNetworkPolicy ${NS}/allow-web`] });
    const ref = { apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', namespace: NS, name: 'allow-web' };
    const storedBefore = await kube.client.get(ref);
    expect(storedBefore?.spec).toEqual(allowWeb('80').spec);
    const clusterBefore = await ciliumObjects();
    const nodeBefore = kernelState();

    // One change: open 443 instead of 80, add a second policy, add a route behind it (via a
    // gateway the kernel refuses) and a block.
    const { type, status } = await changeFailure(
      await start(
        request({
          patch: { routes: { upsert: [{ destination: '10.41.0.0/24', gateway: '192.0.2.1' }] }, blocklist: { upsert: [{ cidr: '198.51.100.0/24', reason: 'never stays' }] } },
          clusterPolicy: { namespace: NS, cilium: [allowWeb('443'), allowWeb('8443', 'allow-admin')] },
        }),
      ),
    );
    expect(type).toBe('ChangeRolledBack');
    expect(status.phase).toBe('rolled-back');
    expect(status.nodes[NODE]?.error?.type).toBe('RouteApplyFailed');
    expect(status.nodes[NODE]?.error?.message).toMatch(/10\.41\.0\.0\/24 via 192\.0\.2\.1.*Nexthop has invalid gateway/);
    expect(status.clusterPolicy?.plan).toEqual([`~ CiliumNetworkPolicy ${NS}/allow-web`, `+ CiliumNetworkPolicy ${NS}/allow-admin`]);
    expect(status.clusterPolicy?.phase).toBe('restored');

    // The order: cluster policy validated and applied before the node, restored after it.
    const order = steps(status);
    const at = (s: string) => order.indexOf(s);
    expect(at('cluster policy: validate:ok')).toBeGreaterThanOrEqual(0);
    expect(at('cluster policy: apply:ok')).toBeLessThan(at(`${NODE}:snapshot:ok`));
    expect(at('cluster policy: verify:ok')).toBeLessThan(at(`${NODE}:snapshot:ok`));
    expect(at(`${NODE}:routes:failed`)).toBeGreaterThan(0);
    expect(at('cluster policy: restore:ok')).toBeGreaterThan(at(`${NODE}:verify rollback:ok`));
    expect(at('cluster policy: verify restore:ok')).toBeGreaterThan(at('cluster policy: restore:ok'));

    // Read back: the policy is v1 again, in place (same uid); the new one is gone; the node is its snapshot.
    const storedAfter = await kube.client.get(ref);
    expect(storedAfter?.metadata.uid).toBe(storedBefore?.metadata.uid);
    expect(await ciliumObjects()).toEqual(clusterBefore);
    expect(await kube.client.get({ ...ref, name: 'allow-admin' })).toBeUndefined();
    expect(kernelState()).toEqual(nodeBefore);
  });

  test("Cilium's example policies through changes: one object, one writer; the rejected ones refuse the change before anything is touched, naming the document, field and rule; the accepted ones apply", async () => {
    const files = yamlFilesUnder(CILIUM_EXAMPLES_DIR);
    const all = files.flatMap((file) => readManifests([file]).map((doc) => ({ file: relative(CILIUM_EXAMPLES_DIR, file), doc })));
    expect(all).toHaveLength(27);
    const key = (doc: KubeObject) => `${doc.kind} ${doc.kind === 'CiliumNetworkPolicy' ? `${doc.metadata.namespace ?? NS}/` : ''}${doc.metadata.name}`;
    // Cilium's examples reuse names (l3-egress-rule, l4-rule, tofqdn-dns-visibility): in one change that is ambiguous.
    const routePatch = { routes: { upsert: [{ destination: '10.60.0.0/24', gateway: LAN_GATEWAY_V4 }] } };
    const ambiguous = await changeFailure(await start(request({ patch: routePatch, clusterPolicy: { namespace: NS, cilium: all.map((d) => d.doc) } })));
    expect(ambiguous.type).toBe('InvalidChangeRequest');
    expect(ambiguous.status.issues?.map((i) => i.message)).toEqual([
      expect.stringMatching(/l3-egress-rule is also written by clusterPolicy\.cilium\[0\]: one object, one writer/),
      expect.stringMatching(/l4-rule is also written by/),
      expect.stringMatching(/tofqdn-dns-visibility is also written by/),
    ]);
    // So they go in two changes: every first occurrence, then the rest.
    const firstKeys = new Set<string>();
    const first = all.filter((d) => !firstKeys.has(key(d.doc)) && firstKeys.add(key(d.doc)));
    const second = all.filter((d) => !first.includes(d));
    expect([first.length, second.length]).toEqual([24, 3]);

    const clusterBefore = await ciliumObjects();
    const nodeBefore = kernelState();
    const handle = await start(request({ patch: routePatch, clusterPolicy: { namespace: NS, cilium: first.map((d) => d.doc) } }));
    const { type, status } = await changeFailure(handle);
    expect(type).toBe('PolicyRejected');
    expect(status.phase).toBe('rejected');
    const index = (file: string) => first.findIndex((d) => d.file === file);
    const auth = index('auth/auth.yaml');
    const andStatement = index('l3/match-expressions/and-statement.yaml');
    expect(Math.min(auth, andStatement)).toBeGreaterThanOrEqual(0);
    // Exactly the two the CRDs of the same tag refuse, each with the document, its field and Cilium's rule.
    expect(status.issues).toEqual([
      { field: `clusterPolicy.cilium[${auth}].spec.egress[0].auth`, message: expect.stringMatching(new RegExp(`^CiliumNetworkPolicy ${NS}/${String(first[auth]?.doc.metadata.name)} rejected by the cluster: field not declared in schema`)) },
      // Both selector terms of and-statement.yaml write "in"; the apiserver names each.
      ...[0, 1].map((term) => ({
        field: `clusterPolicy.cilium[${andStatement}].spec.ingress[0].fromEndpoints[0].matchExpressions[${term}].operator`,
        message: `CiliumNetworkPolicy ${NS}/and-statement-policy rejected by the cluster: Unsupported value: "in": supported values: "In", "NotIn", "Exists", "DoesNotExist" (apiserver: 422 Invalid)`,
      })),
    ]);
    expect(status.message).toContain('before anything was applied');
    // Nothing was touched: no node workflow started, the cluster and the node as they were.
    const history = await handle.fetchHistory();
    const kinds = (history.events ?? []).map((e) => Object.keys(e).find((k) => k.endsWith('EventAttributes')));
    expect(kinds).not.toContain('startChildWorkflowExecutionInitiatedEventAttributes');
    expect(await ciliumObjects()).toEqual(clusterBefore);
    expect(kernelState()).toEqual(nodeBefore);

    const accepted = first.filter((_, i) => i !== auth && i !== andStatement).map((d) => d.doc);
    // A dry run shows them in the plan and writes nothing.
    const planned = await (await start(request({ patch: routePatch, clusterPolicy: { namespace: NS, cilium: accepted }, options: { dryRun: true } }))).result();
    expect(planned.phase).toBe('planned');
    expect(planned.clusterPolicy?.plan).toEqual(accepted.map((d) => `+ ${key(d)}`).sort((a, b) => rankOf(a) - rankOf(b)));
    expect(planned.nodes[NODE]?.diff).toEqual([`+ route 10.60.0.0/24 via ${LAN_GATEWAY_V4} table 254 metric 0`]);
    expect(await ciliumObjects()).toEqual(clusterBefore);

    const expectStoredAsWritten = async (docs: KubeObject[]) => {
      const after = await ciliumObjects();
      for (const doc of docs) {
        const namespaced = doc.kind === 'CiliumNetworkPolicy';
        // Passed through as written: fos1 added nothing but the namespace a namespaced document lacked.
        const written = normaliseDocument({ ...doc, metadata: { ...doc.metadata, ...(namespaced ? { namespace: doc.metadata.namespace ?? NS } : {}) } });
        expect({ key: key(doc), stored: after[key(doc)] }).toEqual({ key: key(doc), stored: written });
      }
    };
    const applied = await (await start(request({ patch: routePatch, clusterPolicy: { namespace: NS, cilium: accepted } }))).result();
    expect(applied.phase).toBe('applied');
    await expectStoredAsWritten(accepted);
    expect(ns.routesJson(DEFAULT_ROUTE_PROTOCOL)).toEqual(expect.arrayContaining([expect.arrayContaining([expect.objectContaining({ dst: '10.60.0.0/24' })])]));

    // The second occurrences replace the first ones (`~`), or create the one whose first occurrence was refused (`+`); node unchanged.
    const replaced = await (await start(request({ patch: routePatch, clusterPolicy: { namespace: NS, cilium: second.map((d) => d.doc) } }))).result();
    expect(replaced.phase).toBe('applied');
    const existing = new Set(accepted.map(key));
    expect(replaced.clusterPolicy?.plan).toEqual(second.map((d) => `${existing.has(key(d.doc)) ? '~' : '+'} ${key(d.doc)}`));
    expect(replaced.clusterPolicy?.plan.filter((l) => l.startsWith('+'))).toEqual([`+ CiliumNetworkPolicy ${NS}/l3-egress-rule`]);
    expect(replaced.nodes[NODE]?.outcome).toBe('unchanged');
    await expectStoredAsWritten(second.map((d) => d.doc));
  });

  test('a policy that would overflow the policy map is refused before anything is applied', async () => {
    const nodeBefore = kernelState();
    const clusterBefore = await ciliumObjects();
    // 400 prefixes × every port (16 aligned blocks) × any protocol (3) ≈ 19 200 entries > 16 384.
    const cidrs = Array.from({ length: 400 }, (_, i) => ({ cidr: `10.${Math.floor(i / 250)}.${i % 250}.0/24` }));
    const huge: KubeObject = { apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'huge' }, spec: { endpointSelector: { matchLabels: { app: 'web' } }, ingress: [{ fromCIDRSet: cidrs, toPorts: [{ ports: [{ port: '1', endPort: 65535, protocol: 'ANY' }] }] }] } };
    const { type, status } = await changeFailure(await start(request({ patch: { blocklist: { upsert: [{ cidr: '192.0.2.7', reason: 'x' }] } }, clusterPolicy: { namespace: NS, cilium: [huge] } })));
    expect(type).toBe('PolicyMapOverflow');
    expect(status.message).toMatch(/policy-map entries .* more than the map holds \(16384\).*CiliumNetworkPolicy\/.*\/huge/s);
    expect(await ciliumObjects()).toEqual(clusterBefore);
    expect(kernelState()).toEqual(nodeBefore);
  });

  test('commit-confirmed covers the cluster policy: unconfirmed, the node reverts and the policy is removed again', async () => {
    const clusterBefore = await ciliumObjects();
    const nodeBefore = kernelState();
    const handle = await start(request({ patch: { blocklist: { upsert: [{ cidr: '192.0.2.128/25', reason: 'provisional' }] } }, clusterPolicy: { namespace: NS, cilium: [allowWeb('9090', 'provisional')] }, options: { confirmTimeout: '3s' } }));
    await waitForPhase(handle, 'awaiting-confirmation');
    expect(Object.keys(await ciliumObjects())).toContain(`CiliumNetworkPolicy ${NS}/provisional`);
    const status = await handle.result();
    expect(status.phase).toBe('reverted');
    expect(status.clusterPolicy?.phase).toBe('restored');
    expect(await ciliumObjects()).toEqual(clusterBefore);
    expect(kernelState()).toEqual(nodeBefore);
  });
});
