/**
 * Quarantine end to end on real parts: a real kube-apiserver (with Cilium's CRDs) holding
 * Pods whose addresses are set through the status subresource (there is no kubelet), a real
 * Temporal dev server running the enforcement and quarantine workflows on the cluster worker
 * from workers/fos1-worker.ts with the Cilium and quarantine activities.
 *
 * Everything is asserted by reading the apiserver back: the pod's label and who owns it
 * (managedFields), the CiliumClusterwideNetworkPolicy and whether it selects the pod.
 */
import * as k8s from '@kubernetes/client-node';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import type { Worker } from '@temporalio/worker';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { BlocklistMaps, removePinnedBlocklist } from '../../bpf/blocklist-maps';
import pino from 'pino';
import { normaliseObject } from '../../activities/cilium-policy';
import { createQuarantineActivities } from '../../activities/quarantine';
import type { StoredObject } from '../../k8s/client';
import { readManifests, type KubeApiServer } from '../../k8s/harness';
import { CLUSTER_TASK_QUEUE } from '../../model/naming';
import { KUBE_DNS_EXCEPTION, parseQuarantineConfig, policySelects, quarantinePolicyName, renderQuarantinePolicy } from '../../model/quarantine';
import { enforcementWorkflowId, type Decision } from '../../model/enforcement-decision';
import { guardConfigSchema } from '../../model/enforcement-guard';
import { enforcementQuery, enforcementWorkflow, liftSignal, verdictSignal, type EnforcementStatus } from '../../workflows/enforcement';
import { FailureType } from '../../model/failures';
import { quarantineWorkflow, type QuarantineRequest, type QuarantineResult } from '../../workflows/quarantine';
import { createNodeDeps, createWorkers } from '../../workers/fos1-worker';
import { testAuditStores } from '../helpers/audit-stores';
import { describeKube, FOS1_DEPLOY_DIR, startKubeWithCrds } from '../helpers/kube';
import { failureOf } from '../helpers/failures';
import { startTemporal, workflowBundle } from '../helpers/temporal';
import { eventually } from '../helpers/eventually';

const NS = `fos1-q-${process.pid}`;
const NODE = `q-${process.pid}`;
const BLOCK_PIN_DIR = `/sys/fs/bpf/fos1-q-${process.pid}`;
const LABEL = 'fos1.io/quarantine=true';
const POLICY = quarantinePolicyName({ key: 'fos1.io/quarantine', value: 'true' });
const QUARANTINE_SECONDS = 10;
const logger = pino({ level: process.env.FOS1_TEST_LOG ?? 'silent' });
const guard = guardConfigSchema.parse({ allowLists: { management: ['10.77.0.0/24'] }, minPrefixLengthV4: 24 });

function decisionFor(target: string): Decision {
  return {
    rule: 'quarantine-test',
    action: 'quarantine',
    target,
    durationMs: QUARANTINE_SECONDS * 1000,
    escalation: { factor: 2, maxDurationMs: 3_600_000 },
    memoryMs: 1000,
    quarantineLabel: LABEL,
    reason: 'quarantine test',
    evidence: { source: 'suricata', eventType: 'alert', timestamp: new Date().toISOString() },
  };
}

/** fieldsV1 of a manager's entry on an object. */
function fieldsOf(obj: StoredObject | undefined, manager: string): unknown[] {
  return ((obj?.metadata.managedFields ?? []) as { manager: string; fieldsV1: unknown }[]).filter((m) => m.manager === manager).map((m) => m.fieldsV1);
}

describeKube('quarantine: label → Cilium policy, through workflows on a real apiserver', ['temporal-cli', 'root', 'bpffs'], () => {
  let kube: KubeApiServer;
  let core: k8s.CoreV1Api;
  let env: TestWorkflowEnvironment;
  let workers: Worker[];
  let running: Promise<unknown>;
  const audit = testAuditStores();

  /** Creates a Pod (bound to a node name; nothing runs it) and sets its addresses through the status subresource. */
  async function createPod(name: string, ips: string[], options: { hostNetwork?: boolean; labels?: Record<string, string>; namespace?: string } = {}): Promise<StoredObject> {
    const namespace = options.namespace ?? NS;
    await kube.client.create({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace, labels: { app: name, ...options.labels } },
      spec: { nodeName: 'node-1', hostNetwork: options.hostNetwork ?? false, containers: [{ name: 'c', image: 'registry.k8s.io/pause:3.10' }] },
    });
    const pod = await core.readNamespacedPod({ name, namespace });
    pod.status = { phase: 'Running', podIP: ips[0], podIPs: ips.map((ip) => ({ ip })) };
    await core.replaceNamespacedPodStatus({ name, namespace, body: pod });
    return (await getPod(name, namespace))!;
  }
  const getPod = (name: string, namespace = NS) => kube.client.get({ apiVersion: 'v1', kind: 'Pod', namespace, name });
  const getPolicy = () => kube.client.get({ apiVersion: 'cilium.io/v2', kind: 'CiliumClusterwideNetworkPolicy', name: POLICY });
  const status = (target: string) => env.client.workflow.getHandle(enforcementWorkflowId(target)).query(enforcementQuery);
  const quarantine = (target: string) =>
    env.client.workflow.signalWithStart(enforcementWorkflow, {
      workflowId: enforcementWorkflowId(target),
      taskQueue: CLUSTER_TASK_QUEUE,
      args: [{ target, nodes: [NODE] }],
      signal: verdictSignal,
      signalArgs: [decisionFor(target)],
    });
  const runQuarantine = (request: QuarantineRequest) =>
    env.client.workflow.execute(quarantineWorkflow, { taskQueue: CLUSTER_TASK_QUEUE, workflowId: `quarantine-${request.changeId}`, args: [request] }) as Promise<QuarantineResult>;

  beforeAll(async () => {
    // Started together, assigned as each comes up: afterAll then stops whichever started even
    // if the other never does.
    const kubeStarting = startKubeWithCrds();
    const envStarting = startTemporal();
    kube = await kubeStarting;
    env = await envStarting;
    core = kube.client.config.makeApiClient(k8s.CoreV1Api);
    await kube.client.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } });
    workers = await createWorkers({
      audit,
      connection: env.nativeConnection,
      namespace: env.namespace ?? 'default',
      nodeName: NODE,
      clusterWorker: true,
      // The node worker serves blocklist-only changes (the block test; they touch only the
      // maps) and reports the node's protected addresses, read in this process's namespace.
      nodeDeps: createNodeDeps({ netns: undefined, routeProtocol: 241, bpfPinDir: BLOCK_PIN_DIR, blocklistMaxEntries: { v4: 16, v6: 16 } }, logger),
      // The enforcement guard is the cluster worker's configuration.
      guard,
      ciliumDeps: { kube: kube.client, fieldManager: 'fos1', logger },
      quarantineDeps: { kube: kube.client, fieldManager: 'fos1', config: parseQuarantineConfig({}), logger },
      logger,
      workflowBundle: await workflowBundle(),
    });
    running = Promise.all(workers.map((w) => w.run()));
  }, 180_000);

  afterAll(async () => {
    workers?.forEach((w) => w.shutdown());
    await running;
    await audit.close();
    await env?.teardown();
    await kube?.stop();
    removePinnedBlocklist(BLOCK_PIN_DIR);
    rmSync(BLOCK_PIN_DIR, { recursive: true, force: true });
  });

  test('a quarantine decision labels the pod owning the address, the CCNP exists and selects it; expiry removes the label and the policy stays', async () => {
    const target = '10.244.0.10/32';
    await createPod('victim', ['10.244.0.10']);
    await quarantine(target);

    const labelled = await eventually(() => getPod('victim'), (p) => p?.metadata.labels?.['fos1.io/quarantine'] === 'true', 'the quarantine label on the pod');
    // fos1's field manager owns that one label and nothing else on the pod.
    expect(fieldsOf(labelled, 'fos1')).toEqual([{ 'f:metadata': { 'f:labels': { 'f:fos1.io/quarantine': {} } } }]);
    expect(labelled?.metadata.labels).toEqual({ app: 'victim', 'fos1.io/quarantine': 'true' });
    const policy = await getPolicy();
    expect(policy).toBeDefined();
    expect(policySelects(normaliseObject(policy!), labelled!.metadata.labels!)).toBe(true);
    expect(policy!.spec).toEqual({
      description: 'fos1 quarantine: isolates every endpoint labelled fos1.io/quarantine=true',
      endpointSelector: { matchLabels: { 'fos1.io/quarantine': 'true' } },
      ingressDeny: [{ fromEntities: ['all'] }],
      egressDeny: [{ toEntities: ['all'] }],
    });
    expect(policy!.metadata.labels).toMatchObject({ 'app.kubernetes.io/managed-by': 'fos1', 'fos1.io/source-kind': 'quarantine' });

    const active = await eventually(() => status(target), (s) => s.active !== undefined, 'the workflow to record the quarantine');
    expect(active.active).toMatchObject({ action: 'quarantine', enforced: true, quarantined: { namespace: NS, name: 'victim', uid: labelled!.metadata.uid, ip: '10.244.0.10', label: LABEL } });
    expect(active.audit.map((a) => `${a.step}:${a.result}`)).toEqual(['quarantine:ok']);
    // The child workflow's own audit trail: found, policy written and verified, labelled, verified.
    const changeId = /via change (\S+)/.exec(active.audit[0]!.detail ?? '')?.[1];
    const child = (await env.client.workflow.getHandle(`quarantine-${changeId}`).result()) as QuarantineResult;
    expect(child.audit.map((a) => `${a.step}:${a.result}`)).toEqual([
      'find endpoint:ok', 'render policy:ok', 'snapshot policy:ok', 'policy-map check:ok', 'dry-run policy:ok', 'apply policy:ok', 'verify policy:ok', 'read label:ok', 'label:ok', 'verify:ok',
    ]);
    expect(new Set(child.audit.map((a) => a.actor))).toEqual(new Set(['fos1-enforcer']));

    // The durable timer lifts it: the label goes, read back from the apiserver.
    const unlabelled = await eventually(() => getPod('victim'), (p) => p?.metadata.labels?.['fos1.io/quarantine'] === undefined, 'the label to go at expiry', (QUARANTINE_SECONDS + 60) * 1000);
    expect(unlabelled?.metadata.labels).toEqual({ app: 'victim' });
    expect(fieldsOf(unlabelled, 'fos1')).toEqual([]);
    const lifted = await eventually(() => status(target), (s) => s.phase !== 'active', 'the workflow to record the lift');
    // (With a 1 s memory the workflow may already have ended: `done` follows the lift.)
    expect(lifted.audit.map((a) => `${a.step}:${a.result}`).slice(0, 2)).toEqual(['quarantine:ok', 'lift:ok']);
    expect(lifted.audit.length).toBeLessThanOrEqual(3);
    // The shared policy stays; it now selects no pod.
    expect(await getPolicy()).toBeDefined();
  });

  test('a block verdict supersedes an active quarantine: the source lands in the node blocklist and the pod loses its label', async () => {
    const target = '10.244.0.18/32';
    await createPod('escalated', ['10.244.0.18']);
    // This workflow's nodes are the test worker's own node: a blocklist-only change needs only
    // its pinned maps (no network namespace), which this process creates under BLOCK_PIN_DIR.
    const start = (decision: Decision) =>
      env.client.workflow.signalWithStart(enforcementWorkflow, {
        workflowId: enforcementWorkflowId(target),
        taskQueue: CLUSTER_TASK_QUEUE,
        args: [{ target, nodes: [NODE] }],
        signal: verdictSignal,
        signalArgs: [decision],
      });
    await start(decisionFor(target));
    await eventually(() => getPod('escalated'), (p) => p?.metadata.labels?.['fos1.io/quarantine'] === 'true', 'the quarantine label');
    await eventually(() => status(target), (s) => s.active?.action === 'quarantine', 'the workflow to record the quarantine');

    await start({ ...decisionFor(target), rule: 'block-test', action: 'block', reason: 'escalated to a block' });
    const blocked = await eventually(() => status(target), (s) => s.active?.action === 'block', 'the block to take over');
    expect(blocked.active).toMatchObject({ action: 'block', enforced: true });
    expect(blocked.active?.quarantined).toBeUndefined();
    expect(blocked.audit.map((a) => `${a.step}:${a.result}`)).toEqual(['quarantine:ok', 'block:ok']);
    // Read back: the source is in the node's host blocklist map, and the pod carries no label of fos1's.
    const maps = BlocklistMaps.open({ pinDir: BLOCK_PIN_DIR, maxEntriesV4: 16, maxEntriesV6: 16, hostMaps: { maxEntriesV4: 16, maxEntriesV6: 16 } });
    try {
      expect(maps.getExact(target)).toMatchObject({ cidr: target });
    } finally {
      maps.close();
    }
    const pod = await getPod('escalated');
    expect(pod?.metadata.labels).toEqual({ app: 'escalated' });
    expect(fieldsOf(pod, 'fos1')).toEqual([]);
    await env.client.workflow.getHandle(enforcementWorkflowId(target)).signal(liftSignal, { by: 'test', reason: 'clean up' });
    await env.client.workflow.getHandle(enforcementWorkflowId(target)).result();
  });

  test("an operator's lift signal takes the label off before expiry and forgets the offence", async () => {
    const target = '10.244.0.16/32';
    await createPod('early', ['10.244.0.16']);
    await quarantine(target);
    await eventually(() => getPod('early'), (p) => p?.metadata.labels?.['fos1.io/quarantine'] === 'true', 'the quarantine label');
    await eventually(() => status(target), (s) => s.active !== undefined, 'the workflow to record the quarantine');
    await env.client.workflow.getHandle(enforcementWorkflowId(target)).signal(liftSignal, { by: 'alice', reason: 'false positive' });
    const result: EnforcementStatus = await env.client.workflow.getHandle(enforcementWorkflowId(target)).result();
    expect(result.audit.map((a) => `${a.actor} ${a.step}:${a.result}`)).toEqual(['fos1-enforcer quarantine:ok', 'alice lift:ok', 'fos1-enforcer done:ok']);
    expect(result.offences).toBe(0);
    expect((await getPod('early'))?.metadata.labels).toEqual({ app: 'early' });
  });

  test('an address no pod has is refused as no-endpoint and audited; nothing is labelled', async () => {
    const target = '10.244.9.9/32';
    await quarantine(target);
    const s = await eventually(() => status(target), (st) => st.refusals.length > 0, 'the refusal');
    expect(s.refusals[0]).toMatchObject({ code: 'no-endpoint' });
    expect(s.refusals[0]!.reason).toContain('no running pod has the address 10.244.9.9');
    expect(s.audit[0]).toMatchObject({ step: 'refused', result: 'failed', actor: 'fos1-enforcer' });
    expect(s.audit[0]!.detail).toMatch(/^no-endpoint: /);
    expect(s.active).toBeUndefined();
    // Nothing active and nothing remembered: the workflow ends (a refusal is not an offence).
    const result: EnforcementStatus = await env.client.workflow.getHandle(enforcementWorkflowId(target)).result();
    expect(result.audit.map((a) => `${a.step}:${a.result}`)).toEqual(['refused:failed', 'done:ok']);
    expect(result.offences).toBe(0);
  });

  test('an allow-listed address is refused by the guard, and its pod is not labelled', async () => {
    const target = '10.77.0.5/32';
    await createPod('management', ['10.77.0.5']);
    await quarantine(target);
    const s = await eventually(() => status(target), (st) => st.refusals.length > 0, 'the refusal');
    expect(s.refusals[0]).toMatchObject({ code: 'allow-listed' });
    expect((await getPod('management'))?.metadata.labels).toEqual({ app: 'management' });
  });

  test('a pod in a system namespace (kube-system) is refused, and not labelled', async () => {
    const target = '10.244.0.30/32';
    await createPod('coredns', ['10.244.0.30'], { namespace: 'kube-system' });
    await quarantine(target);
    const s = await eventually(() => status(target), (st) => st.refusals.length > 0, 'the refusal');
    expect(s.refusals[0]).toMatchObject({ code: 'protected-namespace', reason: expect.stringContaining('kube-system/coredns in the system namespace kube-system') });
    expect((await getPod('coredns', 'kube-system'))?.metadata.labels).toEqual({ app: 'coredns' });
  });

  test('a failure after the label step takes the label off again (read back) and fails QuarantineRolledBack', async () => {
    const pod = await createPod('rollback', ['10.244.0.12']);
    const err = await runQuarantine({ changeId: 'q-rollback', author: 'test', operation: 'apply', target: '10.244.0.12/32', label: LABEL, failAfter: 'label' }).then(
      () => new Error('expected a failure'),
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(WorkflowFailedError);
    const cause = (err as WorkflowFailedError).cause as ApplicationFailure;
    expect(cause.type).toBe(FailureType.QuarantineRolledBack);
    expect(cause.message).toContain('InjectedFailure');
    const { audit } = cause.details?.[0] as { audit: { step: string; result: string }[] };
    expect(audit.map((a) => `${a.step}:${a.result}`)).toEqual(expect.arrayContaining(['label:ok', 'unlabel (rollback):ok', 'verify rollback:ok']));
    const after = await getPod('rollback');
    expect(after?.metadata.labels).toEqual({ app: 'rollback' });
    expect(fieldsOf(after, 'fos1')).toEqual([]);
    expect(after?.metadata.uid).toBe(pod.metadata.uid);
  });

  test('the label apply carries the pod uid as a precondition: a pod replaced under the same name is not labelled', async () => {
    const pod = await createPod('replaced', ['10.244.0.15']);
    const activities = createQuarantineActivities({ kube: kube.client, fieldManager: 'fos1', config: parseQuarantineConfig({}), logger });
    const stale = { namespace: NS, name: 'replaced', uid: '00000000-0000-0000-0000-000000000000', ip: '10.244.0.15' };
    const failure = await failureOf(activities.labelEndpoint({ endpoint: stale, label: LABEL }));
    expect(failure.nonRetryable).toBe(true);
    expect(failure.message).toMatch(/uid/i);
    const after = await getPod('replaced');
    expect(after?.metadata.labels).toEqual({ app: 'replaced' });
    expect(after?.metadata.uid).toBe(pod.metadata.uid);
    // And reading or unlabelling by a stale uid finds nothing to touch.
    expect(await activities.readEndpointLabel({ endpoint: stale, label: LABEL })).toMatchObject({ exists: false });
    expect(await activities.unlabelEndpoint({ endpoint: stale })).toEqual({ podGone: true });
  });

  test('a dual-stack pod is found by its second address (podIPs[1], IPv6 in any spelling), and lift removes the label', async () => {
    await createPod('dual', ['10.244.0.11', 'fd00:0:0::11']);
    const applied = await runQuarantine({ changeId: 'q-dual', author: 'test', operation: 'apply', target: 'fd00::11/128', label: LABEL });
    expect(applied.endpoint).toMatchObject({ namespace: NS, name: 'dual', ip: 'fd00::11' });
    // The policy was already in place from the first test: not written again.
    expect(applied.policyApplied).toBe(false);
    expect((await getPod('dual'))?.metadata.labels?.['fos1.io/quarantine']).toBe('true');
    const lifted = await runQuarantine({ changeId: 'q-dual-lift', author: 'test', operation: 'lift', label: LABEL, endpoint: applied.endpoint });
    expect(lifted.audit.map((a) => `${a.step}:${a.result}`)).toEqual(['unlabel:ok', 'verify unlabel:ok']);
    expect((await getPod('dual'))?.metadata.labels).toEqual({ app: 'dual' });
  });

  test('a label an operator had set stays after the lift (fos1 only gives up its own field); a host-network pod is refused', async () => {
    await createPod('operator', ['10.244.0.13'], { labels: { 'fos1.io/quarantine': 'true' } });
    const applied = await runQuarantine({ changeId: 'q-operator', author: 'test', operation: 'apply', target: '10.244.0.13/32', label: LABEL });
    expect(fieldsOf(await getPod('operator'), 'fos1')).toHaveLength(1);
    const lifted = await runQuarantine({ changeId: 'q-operator-lift', author: 'test', operation: 'lift', label: LABEL, endpoint: applied.endpoint });
    expect(lifted.audit.find((a) => a.step === 'verify unlabel')?.detail).toMatch(/^label kept: also set by /);
    const after = await getPod('operator');
    expect(after?.metadata.labels?.['fos1.io/quarantine']).toBe('true');
    expect(fieldsOf(after, 'fos1')).toEqual([]);

    await createPod('hostnet', ['10.244.0.14'], { hostNetwork: true });
    const err = await runQuarantine({ changeId: 'q-hostnet', author: 'test', operation: 'apply', target: '10.244.0.14/32', label: LABEL }).catch((e: unknown) => e);
    expect(((err as WorkflowFailedError).cause as ApplicationFailure).type).toBe('HostNetworkEndpoint');
    expect((await getPod('hostnet'))?.metadata.labels).toEqual({ app: 'hostnet' });
  });

  test('the rendered policy, with and without the kube-dns exception, is accepted by the CCNP schema unchanged', async () => {
    for (const config of [parseQuarantineConfig({}), parseQuarantineConfig({ exceptions: [KUBE_DNS_EXCEPTION, { name: 'scraper', direction: 'ingress', namespace: 'monitoring', labels: { app: 'prometheus', tier: 'ops' }, ports: [{ port: 9100 }] }] })]) {
      const policy = renderQuarantinePolicy({ key: 'example.com/isolate', value: 'yes' }, config, 'schema-check');
      const stored = await kube.client.apply(policy, { fieldManager: 'fos1-test', dryRun: true });
      expect(normaliseObject(stored)).toEqual(policy);
    }
  });

  test("deploy/rbac.yaml lets the cluster worker read and patch pods (not create, update or delete them, nor their status)", async () => {
    for (const m of readManifests([join(FOS1_DEPLOY_DIR, 'rbac.yaml')])) await kube.client.apply(m, { fieldManager: 'fos1-test' });
    const can = async (verb: string, resource: string, subresource?: string, group = '') => {
      const review = await kube.client.create({
        apiVersion: 'authorization.k8s.io/v1',
        kind: 'SubjectAccessReview',
        metadata: { name: '' },
        spec: { user: 'system:serviceaccount:fos1-system:fos1-cluster-worker', groups: ['system:serviceaccounts', 'system:authenticated'], resourceAttributes: { verb, group, resource, subresource, namespace: NS } },
      });
      return (review.status as { allowed: boolean }).allowed;
    };
    expect(await Promise.all(['get', 'list', 'patch'].map((v) => can(v, 'pods')))).toEqual([true, true, true]);
    expect(await Promise.all(['create', 'update', 'delete', 'watch'].map((v) => can(v, 'pods')))).toEqual([false, false, false, false]);
    expect(await can('patch', 'pods', 'status')).toBe(false);
    expect(await can('patch', 'ciliumclusterwidenetworkpolicies', undefined, 'cilium.io')).toBe(true);
    // The controller gets nothing on pods.
    const controller = await kube.client.create({
      apiVersion: 'authorization.k8s.io/v1',
      kind: 'SubjectAccessReview',
      metadata: { name: '' },
      spec: { user: 'system:serviceaccount:fos1-system:fos1-controller', groups: ['system:authenticated'], resourceAttributes: { verb: 'patch', resource: 'pods', namespace: NS } },
    });
    expect((controller.status as { allowed: boolean }).allowed).toBe(false);
  });
});
