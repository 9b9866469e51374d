/**
 * The FirewallZone controller on real parts: a real kube-apiserver + etcd with fos1's and
 * Cilium's CRDs, a real Temporal dev server whose cluster worker runs the Cilium activities
 * against that apiserver, and the controller manager (FirewallRule + FirewallZone) leading
 * its Lease. A zone's effect is read where it lands: the Cilium policies of the rules naming it.
 */
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Worker } from '@temporalio/worker';
import pino from 'pino';
import { firewallRuleChangeId, firewallRuleChangeRequest } from '../../controllers/firewall-rule-controller';
import { zoneForceTag } from '../../controllers/firewall-zone-controller';
import { ControllerManager } from '../../controllers/manager';
import { CLEANUP_FINALIZER, type Condition } from '../../controllers/object-controller';
import type { StoredObject } from '../../k8s/client';
import type { KubeApiServer } from '../../k8s/harness';
import { CLUSTER_TASK_QUEUE, changeWorkflowId } from '../../model/naming';
import { createNodeDeps, createWorkers } from '../../workers/fos1-worker';
import { testAuditStores } from '../helpers/audit-stores';
import { eventually } from '../helpers/eventually';
import { describeKube, startKubeWithCrds } from '../helpers/kube';
import { startTemporal, workflowBundle } from '../helpers/temporal';

const NS = `fos1-fwz-${process.pid}`;
const API = 'security.fos1.io/v1alpha1';
const logger = pino({ level: process.env.FOS1_TEST_LOG ?? 'silent' });

describeKube('FirewallZone controller: validation, re-applied rules, deletion refused while named (real apiserver, Temporal)', ['temporal-cli'], () => {
  let kube: KubeApiServer;
  let env: TestWorkflowEnvironment;
  let workers: Worker[];
  let running: Promise<unknown>;
  const audit = testAuditStores();
  const managers: ControllerManager[] = [];

  const manager = (identity: string) => {
    const m = new ControllerManager({
      kube: kube.client,
      temporal: env.client,
      logger: logger.child({ identity }),
      lease: { namespace: NS, name: 'fos1-controller', identity, leaseDurationSeconds: 3, retryPeriodMs: 300 },
      controllers: ['FirewallRule', 'FirewallZone'],
    });
    managers.push(m);
    m.start();
    return m;
  };

  beforeAll(async () => {
    [kube, env] = await Promise.all([startKubeWithCrds(), startTemporal()]);
    await kube.client.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } });
    workers = await createWorkers({
      audit,
      connection: env.nativeConnection,
      namespace: env.namespace ?? 'default',
      nodeName: `fwz-${process.pid}`,
      clusterWorker: true,
      // The node worker is not used here; its deps are never called.
      nodeDeps: createNodeDeps({ netns: `fos1-unused-${process.pid}`, routeProtocol: 241, bpfPinDir: `/sys/fs/bpf/fos1-unused-${process.pid}`, blocklistMaxEntries: { v4: 16, v6: 16 } }, logger),
      ciliumDeps: { kube: kube.client, fieldManager: 'fos1', logger },
      logger,
      workflowBundle: await workflowBundle(),
    });
    running = Promise.all(workers.map((w) => w.run()));
  }, 180_000);

  afterAll(async () => {
    await Promise.allSettled(managers.map((m) => m.stop({ release: true })));
    workers?.forEach((w) => w.shutdown());
    await running;
    await audit.close();
    await env?.teardown();
    await kube?.stop();
  });

  const get = (kind: 'FirewallZone' | 'FirewallRule', name: string) => kube.client.get({ apiVersion: API, kind, namespace: NS, name });
  const getPolicy = (name: string) => kube.client.get({ apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', namespace: NS, name });
  const condition = (o: StoredObject | undefined, type: Condition['type']) => ((o?.status?.conditions ?? []) as Condition[]).find((c) => c.type === type);
  const observed = (kind: 'FirewallZone' | 'FirewallRule', name: string, generation: number, type: Condition['type'] = 'Applied') =>
    eventually(() => get(kind, name), (o) => o?.status?.observedGeneration === generation && condition(o, type)?.status === 'True' && condition(o, type)?.observedGeneration === generation, `${kind} ${name} ${type} at generation ${generation}`, 60_000, 200);
  const leads = (m: ControllerManager) => eventually(() => m.elector.isLeader, (l) => l, 'the manager leads', 30_000, 100);

  it('create → the rules naming the zone apply (one waiting for it included), Applied for generation 1; update → generation 2 re-applies them with the new selector', async () => {
    const m = manager('fwz-a');
    await leads(m);
    // A rule naming a zone that does not exist yet fails…
    await kube.client.create({ apiVersion: API, kind: 'FirewallRule', metadata: { name: 'web-in', namespace: NS }, spec: { zone: 'web', direction: 'ingress', peers: [{ entity: 'world' }], ports: [{ port: 8080 }] } });
    const early = await observed('FirewallRule', 'web-in', 1, 'Failed');
    const ruleChange = (tag: string) => firewallRuleChangeId(early!, { generation: 1, forced: tag });
    expect(condition(early, 'Failed')?.message).toContain('zone "web" does not exist');
    // …until the zone is created: the zone's generation 1 re-applies it.
    const zone = await kube.client.create({ apiVersion: API, kind: 'FirewallZone', metadata: { name: 'web', namespace: NS }, spec: { selector: { app: 'web' } } });
    const g1 = await observed('FirewallZone', 'web', 1);
    expect(g1?.metadata.finalizers).toContain(CLEANUP_FINALIZER);
    const tag1 = zoneForceTag(g1!);
    expect(condition(g1, 'Applied')?.message).toContain(`re-applied FirewallRule ${NS}/web-in (change ${ruleChange(tag1)})`);
    // The zone's change is the rule's cluster-only changeWorkflow, and its records are in the durable audit store.
    expect(g1?.status?.workflowId).toBe(changeWorkflowId(ruleChange(tag1)));
    expect((await env.client.workflow.getHandle(changeWorkflowId(ruleChange(tag1))).describe()).type).toBe('changeWorkflow');
    const recorded = await eventually(async () => (await audit.audit.query({ changeId: ruleChange(tag1) })).map((e) => `${e.record.step} ${e.record.result}`), (steps) => steps.includes('cluster policy: verify ok'), 'durable audit of the re-apply', 20_000, 200);
    expect(recorded).toContain('cluster policy: apply ok');
    expect((await getPolicy('fos1-web-in'))?.spec).toMatchObject({ endpointSelector: { matchLabels: { app: 'web' } } });
    const rule = await observed('FirewallRule', 'web-in', 1);
    expect(rule?.metadata.generation).toBe(1);
    expect(condition(rule, 'Applied')?.message).toContain(`(change ${ruleChange(tag1)})`);
    expect(m.started.filter((s) => s.kind === 'FirewallZone').map((s) => s.changeId)).toEqual([expect.stringMatching(/^fwz-web-[a-z0-9]+-g1$/)]);

    // Update: generation 2 of the zone → the rule's policy follows, under a new change id.
    await kube.client.replace({ ...zone, metadata: { ...zone.metadata, resourceVersion: (await get('FirewallZone', 'web'))!.metadata.resourceVersion }, spec: { selector: { app: 'web', tier: 'front' } } });
    const g2 = await observed('FirewallZone', 'web', 2);
    const tag2 = zoneForceTag(g2!);
    expect(tag2).not.toBe(tag1);
    expect(condition(g2, 'Applied')?.message).toContain(`(change ${ruleChange(tag2)})`);
    const policy = await getPolicy('fos1-web-in');
    expect(policy?.spec).toMatchObject({ endpointSelector: { matchLabels: { app: 'web', tier: 'front' } } });
    expect(policy?.metadata.annotations?.['fos1.io/change-id']).toBe(ruleChange(tag2));
    await m.stop({ release: true });
  });

  it('an invalid zone is refused naming the field (InvalidSpec); a zone no rule names is deleted at once', async () => {
    const m = manager('fwz-b');
    await leads(m);
    await kube.client.create({ apiVersion: API, kind: 'FirewallZone', metadata: { name: 'bad', namespace: NS }, spec: { selector: { 'not a key!': 'x' } } });
    const refused = await observed('FirewallZone', 'bad', 1, 'Failed');
    expect(condition(refused, 'Failed')).toMatchObject({ reason: 'InvalidSpec', observedGeneration: 1 });
    expect(condition(refused, 'Failed')?.message).toMatch(/invalid FirewallZone: spec\.selector\.not a key!: Invalid key in record/);
    expect(condition(refused, 'Applied')).toMatchObject({ status: 'False', reason: 'InvalidSpec' });
    await kube.client.delete({ apiVersion: API, kind: 'FirewallZone', namespace: NS, name: 'bad' });
    await eventually(() => get('FirewallZone', 'bad'), (o) => o === undefined, 'refused zone deleted (no rule names it)', 30_000, 200);
    await m.stop({ release: true });
  });

  it('a controller restarted mid-change joins the rule change the zone had started: one run, zone Applied from the new process', async () => {
    // The first process started the rule's change for the zone's generation 3 and died before
    // the zone's status was written: stop ours, update the zone, and start what it had started.
    const zone = (await get('FirewallZone', 'web'))!;
    await kube.client.replace({ ...zone, spec: { selector: { app: 'web', tier: 'back' } } });
    const g3 = await eventually(() => get('FirewallZone', 'web'), (o) => o?.metadata.generation === 3, 'zone generation 3', 10_000, 100);
    const rule = (await get('FirewallRule', 'web-in'))!;
    const changeId = firewallRuleChangeId(rule, { generation: 1, forced: zoneForceTag(g3!) });
    const workflowId = changeWorkflowId(changeId);
    const first = await env.client.workflow.start('changeWorkflow', {
      workflowId,
      taskQueue: CLUSTER_TASK_QUEUE,
      args: [firewallRuleChangeRequest(changeId, { namespace: NS, name: 'web-in' }, rule, [g3!], 'the first process')],
    });
    const m = manager('fwz-c');
    await leads(m);
    const applied = await observed('FirewallZone', 'web', 3);
    expect(condition(applied, 'Applied')?.message).toContain(`(change ${changeId})`);
    await first.result();
    // Exactly one run carries that change: the one started before the restart.
    const runsOf = async () => {
      const runs: string[] = [];
      for await (const w of env.client.workflow.list({ query: `WorkflowId = '${workflowId}' AND Fos1ChangeId = '${changeId}'` })) runs.push(w.runId);
      return runs;
    };
    expect(await eventually(runsOf, (r) => r.length > 0, 'the run in visibility', 10_000, 200)).toEqual([first.firstExecutionRunId]);
    expect((await getPolicy('fos1-web-in'))?.spec).toMatchObject({ endpointSelector: { matchLabels: { app: 'web', tier: 'back' } } });
    await m.stop({ release: true });
  });

  it('delete while a rule names the zone → refused (ZoneInUse naming the rule and field), policy kept; once the rule is gone the finalizer goes', async () => {
    const m = manager('fwz-d');
    await leads(m);
    await kube.client.delete({ apiVersion: API, kind: 'FirewallZone', namespace: NS, name: 'web' });
    const inUse = await eventually(() => get('FirewallZone', 'web'), (o) => condition(o, 'Failed')?.reason === 'ZoneInUse', 'deletion refused', 30_000, 200);
    expect(inUse?.metadata.deletionTimestamp).toBeDefined();
    expect(condition(inUse, 'Failed')?.message).toContain(`FirewallRule ${NS}/web-in names it (spec.zone)`);
    expect(await getPolicy('fos1-web-in')).toBeDefined();
    // The rule goes (its own cleanup prunes its policy); the zone's cleanup runs again by itself.
    await kube.client.delete({ apiVersion: API, kind: 'FirewallRule', namespace: NS, name: 'web-in' });
    await eventually(() => get('FirewallZone', 'web'), (o) => o === undefined, 'zone deleted after its last rule', 20_000, 200);
    await eventually(() => getPolicy('fos1-web-in'), (p) => p === undefined, 'rule policy pruned', 30_000, 200);
    expect(m.started.some((s) => s.kind === 'FirewallZone' && s.purpose === 'cleanup' && /^fwz-web-[a-z0-9]+-del$/.test(s.changeId))).toBe(true);
    await m.stop({ release: true });
  });
});
