/**
 * End to end on real parts: a FirewallRule created through the Kubernetes API (the calls
 * kubectl makes) is picked up by the controller, applied by a cluster-only change of the change
 * workflow on a real Temporal dev server (the cluster worker from workers/fos1-worker.ts running
 * the cluster policy activities against the real kube-apiserver, its audit in a real durable
 * store), and ends with status Applied and the matching CiliumNetworkPolicy present. Also: a spec update, a rule the translator refuses (Failed,
 * with the reason and the workflow id), and a deletion that prunes the policy.
 */
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { Worker } from '@temporalio/worker';
import pino from 'pino';
import { FirewallRuleController, firewallRuleChangeId, firewallRuleChangeRequest, type Condition } from '../../controllers/firewall-rule-controller';
import type { KubeApiServer } from '../../k8s/harness';
import type { StoredObject } from '../../k8s/client';
import { CLUSTER_TASK_QUEUE, SearchAttributes, changeWorkflowId } from '../../model/naming';
import { cidrGroupObjectName } from '../../model/firewall';
import type { PolicyChangeResult } from '../../workflows/policy-change';
import { createNodeDeps, createWorkers } from '../../workers/fos1-worker';
import { testAuditStores } from '../helpers/audit-stores';
import { eventually } from '../helpers/eventually';
import { describeKube, startKubeWithCrds } from '../helpers/kube';
import { startTemporal, workflowBundle } from '../helpers/temporal';

const NS = `fos1-ctl-${process.pid}`;
const logger = pino({ level: process.env.FOS1_TEST_LOG ?? 'silent' });

describeKube('FirewallRule controller → cluster-only changeWorkflow → Cilium policy', ['temporal-cli'], () => {
  let kube: KubeApiServer;
  let env: TestWorkflowEnvironment;
  let workers: Worker[];
  let running: Promise<unknown>;
  const audit = testAuditStores();
  let controller: FirewallRuleController;

  beforeAll(async () => {
    [kube, env] = await Promise.all([startKubeWithCrds(), startTemporal()]);
    await kube.client.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } });
    workers = await createWorkers({
      audit,
      connection: env.nativeConnection,
      namespace: env.namespace ?? 'default',
      nodeName: `ctl-${process.pid}`,
      clusterWorker: true,
      // The node worker is not used here; its deps are never called.
      nodeDeps: createNodeDeps({ netns: `fos1-unused-${process.pid}`, routeProtocol: 241, bpfPinDir: `/sys/fs/bpf/fos1-unused-${process.pid}`, blocklistMaxEntries: { v4: 16, v6: 16 } }, logger),
      ciliumDeps: { kube: kube.client, fieldManager: 'fos1', logger },
      logger,
      workflowBundle: await workflowBundle(),
    });
    running = Promise.all(workers.map((w) => w.run()));
    controller = new FirewallRuleController({ kube: kube.client, temporal: env.client, logger });
    await controller.start();
  }, 180_000);

  afterAll(async () => {
    await controller?.stop();
    workers?.forEach((w) => w.shutdown());
    await running;
    await audit.close();
    await env?.teardown();
    await kube?.stop();
  });

  const getRule = (name: string) => kube.client.get({ apiVersion: 'security.fos1.io/v1alpha1', kind: 'FirewallRule', namespace: NS, name });
  const getPolicy = (name: string) => kube.client.get({ apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', namespace: NS, name });
  const condition = (o: StoredObject | undefined, type: Condition['type']) => ((o?.status?.conditions ?? []) as Condition[]).find((c) => c.type === type);
  /** The change's records in the cluster worker's durable audit store, as `step result`. */
  const durableSteps = async (changeId: string) => (await audit.audit.query({ changeId })).map((e) => `${e.record.step} ${e.record.result}`);

  async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = await probe();
      if (v !== undefined) return v;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  const waitForGeneration = (name: string, generation: number) =>
    waitFor(`${name} status for generation ${generation}`, async () => {
      const r = await getRule(name);
      return r?.status?.observedGeneration === generation ? r : undefined;
    });

  it('ends with status Applied and the matching CiliumNetworkPolicy, then follows an update and a deletion', async () => {
    await kube.client.create({ apiVersion: 'security.fos1.io/v1alpha1', kind: 'FirewallZone', metadata: { name: 'web', namespace: NS }, spec: { selector: { app: 'web' } } });
    await kube.client.create({ apiVersion: 'security.fos1.io/v1alpha1', kind: 'FirewallZone', metadata: { name: 'clients', namespace: NS }, spec: { selector: { role: 'client' } } });
    const created = await kube.client.create({
      apiVersion: 'security.fos1.io/v1alpha1',
      kind: 'FirewallRule',
      metadata: { name: 'web-public', namespace: NS },
      spec: { zone: 'web', direction: 'ingress', peers: [{ zone: 'clients' }], ports: [{ port: 80 }], l7: { http: [{ method: 'GET', path: '/public/.*' }] } },
    });
    expect(created.metadata.generation).toBe(1);

    const applied = await waitForGeneration('web-public', 1);
    const g1 = firewallRuleChangeId(created, { generation: 1 });
    const workflowId = changeWorkflowId(g1);
    expect(applied.status?.workflowId).toBe(workflowId);
    expect(condition(applied, 'Applied')).toMatchObject({ status: 'True', reason: 'Applied', observedGeneration: 1 });
    expect(condition(applied, 'Applied')?.message).toContain(workflowId);
    expect(condition(applied, 'Failed')).toMatchObject({ status: 'False' });

    const policy = await getPolicy('fos1-web-public');
    expect(policy?.metadata.labels).toMatchObject({ 'app.kubernetes.io/managed-by': 'fos1', 'fos1.io/source-name': 'web-public', 'fos1.io/source-namespace': NS });
    expect(policy?.metadata.annotations?.['fos1.io/change-id']).toBe(g1);
    expect(policy?.spec).toEqual({
      endpointSelector: { matchLabels: { app: 'web' } },
      ingress: [{ fromEndpoints: [{ matchLabels: { role: 'client' } }], toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }], rules: { http: [{ method: 'GET', path: '/public/.*' }] } }] }],
    });
    // The change really ran on Temporal as a cluster-only changeWorkflow, under the id derived
    // from the object, and its records are in the durable audit store.
    const description = await env.client.workflow.getHandle(workflowId).describe();
    expect(description.type).toBe('changeWorkflow');
    expect(description.status.name).toBe('COMPLETED');
    expect(description.typedSearchAttributes.get(SearchAttributes.status)).toBe('applied');
    expect(condition(applied, 'Applied')?.message).toContain('cluster policy only (0 nodes)');
    expect(condition(applied, 'Applied')?.message).toContain(`+ CiliumNetworkPolicy ${NS}/fos1-web-public`);
    const recorded = await eventually(() => durableSteps(g1), (steps) => steps.includes('cluster policy: verify ok'), 'the durable audit of the change', 20_000, 200);
    expect(recorded).toEqual(expect.arrayContaining(['validate ok', 'cluster policy: validate ok', 'cluster policy: apply ok', 'cluster policy: verify ok']));

    // Update the spec (generation 2): the policy follows.
    const current = (await getRule('web-public'))!;
    await kube.client.replace({ ...current, spec: { ...(current.spec as object), ports: [{ port: 8080 }] } });
    await waitForGeneration('web-public', 2);
    expect(JSON.stringify((await getPolicy('fos1-web-public'))?.spec)).toContain('"port":"8080"');
    expect((await getPolicy('fos1-web-public'))?.metadata.annotations?.['fos1.io/change-id']).toBe(firewallRuleChangeId(created, { generation: 2 }));

    // Delete the rule: its policy is pruned by a cluster-only change (the finalizer's cleanup), audited too.
    await kube.client.delete({ apiVersion: 'security.fos1.io/v1alpha1', kind: 'FirewallRule', namespace: NS, name: 'web-public' });
    await waitFor('policy pruned', async () => ((await getPolicy('fos1-web-public')) === undefined ? true : undefined));
    const cleanup = firewallRuleChangeId(created, 'delete');
    expect((await env.client.workflow.getHandle(changeWorkflowId(cleanup)).describe()).type).toBe('changeWorkflow');
    const pruned = (await env.client.workflow.getHandle(changeWorkflowId(cleanup)).result()) as { clusterPolicy?: { plan: string[] } };
    expect(pruned.clusterPolicy?.plan).toEqual([expect.stringMatching(new RegExp(`^- CiliumNetworkPolicy ${NS}/fos1-web-public `))]);
    expect(await eventually(() => durableSteps(cleanup), (steps) => steps.includes('cluster policy: verify ok'), 'the durable audit of the cleanup', 20_000, 200)).toContain('cluster policy: apply ok');
  });

  it('re-applies the rules that name a zone when the zone changes (the rule generation did not move)', async () => {
    const zone = await kube.client.create({ apiVersion: 'security.fos1.io/v1alpha1', kind: 'FirewallZone', metadata: { name: 'api', namespace: NS }, spec: { selector: { app: 'api', version: 'v1' } } });
    await kube.client.create({
      apiVersion: 'security.fos1.io/v1alpha1',
      kind: 'FirewallRule',
      metadata: { name: 'api-in', namespace: NS },
      spec: { zone: 'api', direction: 'ingress', peers: [{ zone: 'clients' }], ports: [{ port: 9000 }] },
    });
    await waitForGeneration('api-in', 1);
    expect((await getPolicy('fos1-api-in'))?.spec).toMatchObject({ endpointSelector: { matchLabels: { app: 'api', version: 'v1' } } });

    await kube.client.replace({ ...zone, spec: { selector: { app: 'api', version: 'v2' } } });
    const policy = await waitFor('policy follows the zone', async () => {
      const p = await getPolicy('fos1-api-in');
      return JSON.stringify(p?.spec).includes('"version":"v2"') ? p : undefined;
    });
    expect(policy.metadata.annotations?.['fos1.io/change-id']).toMatch(/^fwr-api-in-[a-z0-9]+-g1-z\d+$/);
    const rule = await waitFor('status of the zone-triggered change', async () => {
      const r = await getRule('api-in');
      return condition(r, 'Applied')?.message.includes(`(change ${policy.metadata.annotations?.['fos1.io/change-id']})`) ? r : undefined;
    });
    expect(rule.metadata.generation).toBe(1);
    expect(rule.status?.observedGeneration).toBe(1);
    expect(condition(rule, 'Applied')).toMatchObject({ status: 'True' });
  });

  it('prunes, when it starts, the policies of a rule deleted while no controller was watching', async () => {
    await kube.client.create({
      apiVersion: 'security.fos1.io/v1alpha1',
      kind: 'FirewallRule',
      metadata: { name: 'orphan', namespace: NS },
      spec: { zone: 'web', direction: 'egress', peers: [{ entity: 'world' }], ports: [{ port: 443 }] },
    });
    await waitForGeneration('orphan', 1);
    expect(await getPolicy('fos1-orphan')).toBeDefined();
    await controller.stop();
    await kube.client.delete({ apiVersion: 'security.fos1.io/v1alpha1', kind: 'FirewallRule', namespace: NS, name: 'orphan' });
    expect(await getPolicy('fos1-orphan')).toBeDefined(); // nobody watching: still there
    controller = new FirewallRuleController({ kube: kube.client, temporal: env.client, logger });
    await controller.start();
    await waitFor('orphaned policy pruned', async () => ((await getPolicy('fos1-orphan')) === undefined ? true : undefined));
    // Policies of rules that still exist are left alone.
    expect(await getPolicy('fos1-api-in')).toBeDefined();
  });

  it('a controller restarted mid-change joins the run of the change it had started: one run, status from the new controller', async () => {
    // The first controller started the change for generation 1 and died before it
    // wrote the status: stop ours, then do what it had done.
    await controller.stop();
    const rule = await kube.client.create({
      apiVersion: 'security.fos1.io/v1alpha1',
      kind: 'FirewallRule',
      metadata: { name: 'restarted', namespace: NS },
      spec: { zone: 'web', direction: 'ingress', peers: [{ zone: 'clients' }], ports: [{ port: 8443 }] },
    });
    const { items: zones } = await kube.client.list('security.fos1.io/v1alpha1', 'FirewallZone', { namespace: NS });
    const changeId = firewallRuleChangeId(rule, { generation: 1 });
    const workflowId = changeWorkflowId(changeId);
    const first = await env.client.workflow.start('changeWorkflow', {
      workflowId,
      taskQueue: CLUSTER_TASK_QUEUE,
      args: [firewallRuleChangeRequest(changeId, { namespace: NS, name: 'restarted' }, rule, zones, 'the first controller')],
    });
    await first.result();
    controller = new FirewallRuleController({ kube: kube.client, temporal: env.client, logger });
    await controller.start();
    const applied = await waitForGeneration('restarted', 1);
    expect(condition(applied, 'Applied')).toMatchObject({ status: 'True', observedGeneration: 1 });
    expect(condition(applied, 'Applied')?.message).toContain(`(change ${changeId})`);
    expect(applied.metadata.finalizers).toContain('fos1.io/cleanup');
    const runs: string[] = [];
    for await (const w of env.client.workflow.list({ query: `WorkflowId = '${workflowId}'` })) runs.push(w.runId);
    expect(runs).toEqual([first.firstExecutionRunId]);
    // Deleting it prunes its policy (the finalizer's cleanup), so later estimates do not count it.
    await kube.client.delete({ apiVersion: 'security.fos1.io/v1alpha1', kind: 'FirewallRule', namespace: NS, name: 'restarted' });
    await waitFor('restarted pruned and gone', async () => ((await getPolicy('fos1-restarted')) === undefined && (await getRule('restarted')) === undefined ? true : undefined));
  });

  it('one change per rule across processes: a change of the rule still running (started by a previous leader) is waited for before the next generation starts', async () => {
    await controller.stop();
    await kube.client.create({ apiVersion: 'security.fos1.io/v1alpha1', kind: 'FirewallZone', metadata: { name: 'handover', namespace: NS }, spec: { selector: { app: 'handover' } } });
    const rule = await kube.client.create({
      apiVersion: 'security.fos1.io/v1alpha1',
      kind: 'FirewallRule',
      metadata: { name: 'handover', namespace: NS },
      spec: { zone: 'handover', direction: 'ingress', peers: [{ entity: 'world' }], ports: [{ port: 7000 }] },
    });
    const { items: zones } = await kube.client.list('security.fos1.io/v1alpha1', 'FirewallZone', { namespace: NS });
    // The previous leader's change of generation 1, held open by commit-confirmed.
    const g1 = firewallRuleChangeId(rule, { generation: 1 });
    const first = await env.client.workflow.start('changeWorkflow', {
      workflowId: changeWorkflowId(g1),
      taskQueue: CLUSTER_TASK_QUEUE,
      args: [{ ...firewallRuleChangeRequest(g1, { namespace: NS, name: 'handover' }, rule, zones, 'the previous leader'), options: { confirmTimeout: '10m' } }],
    });
    await eventually(() => first.query<{ phase: string }>('status'), (st) => st.phase === 'awaiting-confirmation', 'generation 1 awaiting confirmation', 30_000, 200);
    await kube.client.replace({ ...(await getRule('handover'))!, spec: { ...(rule.spec as object), ports: [{ port: 7001 }] } });
    const lines: string[] = [];
    const watched = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
    controller = new FirewallRuleController({ kube: kube.client, temporal: env.client, logger: watched });
    await controller.start();
    await eventually(async () => lines, (l) => l.some((x) => x.includes('another change of this FirewallRule is running') && x.includes(changeWorkflowId(g1))), 'the controller waiting for generation 1', 30_000, 100);
    const g2 = firewallRuleChangeId(rule, { generation: 2 });
    await expect(env.client.workflow.getHandle(changeWorkflowId(g2)).describe()).rejects.toThrow(/not found/i);
    await first.executeUpdate('confirm', { args: [{ by: 'test', reason: 'generation 1 done' }] });
    const applied = await waitForGeneration('handover', 2);
    expect(condition(applied, 'Applied')?.message).toContain(`(change ${g2})`);
    const [a, b] = await Promise.all([first.describe(), env.client.workflow.getHandle(changeWorkflowId(g2)).describe()]);
    expect(b.startTime.getTime()).toBeGreaterThanOrEqual(a.closeTime!.getTime());
    expect(JSON.stringify((await getPolicy('fos1-handover'))?.spec)).toContain('"port":"7001"');
    await kube.client.delete({ apiVersion: 'security.fos1.io/v1alpha1', kind: 'FirewallRule', namespace: NS, name: 'handover' });
    await waitFor('handover pruned and gone', async () => ((await getPolicy('fos1-handover')) === undefined && (await getRule('handover')) === undefined ? true : undefined));
  });

  it('writes Failed with the reason and the workflow id when the rule names a zone that does not exist', async () => {
    await kube.client.create({
      apiVersion: 'security.fos1.io/v1alpha1',
      kind: 'FirewallRule',
      metadata: { name: 'no-zone', namespace: NS },
      spec: { zone: 'ghost', direction: 'egress', peers: [{ entity: 'world' }] },
    });
    const failed = await waitForGeneration('no-zone', 1);
    const workflowId = changeWorkflowId(firewallRuleChangeId(failed, { generation: 1 }));
    // The change workflow's refusal: the request's field (the rule inside clusterPolicy) and the rule broken.
    expect(condition(failed, 'Applied')).toMatchObject({ status: 'False', reason: 'InvalidChangeRequest' });
    expect(condition(failed, 'Failed')).toMatchObject({ status: 'True', reason: 'InvalidChangeRequest' });
    expect(condition(failed, 'Failed')?.message).toContain(workflowId);
    expect(condition(failed, 'Failed')?.message).toMatch(/clusterPolicy\.rules\[0\]\.zone: .*zone "ghost" does not exist/);
    expect((await env.client.workflow.getHandle(workflowId).describe()).type).toBe('changeWorkflow');
    expect(condition(failed, 'RolledBack')).toMatchObject({ status: 'False' });
    expect(await getPolicy('fos1-no-zone')).toBeUndefined();
  });

  it('refuses a rule whose policy-map estimate exceeds 16384 entries per endpoint: Failed PolicyMapOverflow, nothing applied', async () => {
    // 10 prefixes with 40 exceptions each (410 identities) × ports 1–65535 (16 blocks) × ANY (3) ≈ 19,680 entries.
    const peers = Array.from({ length: 10 }, (_, i) => ({ cidr: `10.${i}.0.0/16`, except: Array.from({ length: 40 }, (_, j) => `10.${i}.${j}.0/24`) }));
    await kube.client.create({
      apiVersion: 'security.fos1.io/v1alpha1',
      kind: 'FirewallRule',
      metadata: { name: 'too-big', namespace: NS },
      spec: { zone: 'web', direction: 'egress', peers, ports: [{ port: 1, endPort: 65535, protocol: 'ANY' }] },
    });
    const failed = await waitForGeneration('too-big', 1);
    expect(condition(failed, 'Failed')).toMatchObject({ status: 'True', reason: 'PolicyMapOverflow' });
    expect(condition(failed, 'Failed')?.message).toMatch(/about 19680 policy-map entries .*more than the map holds \(16384\)/);
    expect(await getPolicy('fos1-too-big')).toBeUndefined();
  });

  it('rolls back when the apiserver refuses the real write after the dry run passed: RolledBack, previous policy intact', async () => {
    // A ValidatingAdmissionPolicy that lets dry runs through but denies the real write of the
    // generation-2 policy of one rule: the failure lands after fos1 has started applying.
    await kube.client.create({
      apiVersion: 'admissionregistration.k8s.io/v1',
      kind: 'ValidatingAdmissionPolicy',
      metadata: { name: 'deny-real-g2' },
      spec: {
        failurePolicy: 'Fail',
        matchConstraints: { resourceRules: [{ apiGroups: ['cilium.io'], apiVersions: ['v2'], operations: ['CREATE', 'UPDATE'], resources: ['ciliumnetworkpolicies'] }] },
        validations: [
          {
            expression: "request.dryRun || !has(object.metadata.annotations) || !('fos1.io/change-id' in object.metadata.annotations) || !(object.metadata.annotations['fos1.io/change-id'].startsWith('fwr-guarded-') && object.metadata.annotations['fos1.io/change-id'].endsWith('-g2'))",
            message: 'generation 2 of FirewallRule guarded is frozen by the change board',
          },
        ],
      },
    });
    await kube.client.create({
      apiVersion: 'admissionregistration.k8s.io/v1',
      kind: 'ValidatingAdmissionPolicyBinding',
      metadata: { name: 'deny-real-g2' },
      spec: { policyName: 'deny-real-g2', validationActions: ['Deny'] },
    });
    // The apiserver loads admission policies asynchronously: wait until a probe write is denied.
    const probe = { apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'vap-probe', namespace: NS, annotations: { 'fos1.io/change-id': 'fwr-guarded-probe-g2' } }, spec: { endpointSelector: {} } };
    await waitFor('admission policy active', async () => {
      try {
        await kube.client.apply(probe, { fieldManager: 'probe' });
        await kube.client.delete({ apiVersion: probe.apiVersion, kind: probe.kind, namespace: NS, name: 'vap-probe' });
        return undefined;
      } catch {
        return true;
      }
    });

    await kube.client.create({
      apiVersion: 'security.fos1.io/v1alpha1',
      kind: 'FirewallRule',
      metadata: { name: 'guarded', namespace: NS },
      spec: { zone: 'web', direction: 'ingress', peers: [{ zone: 'clients' }], ports: [{ port: 443 }] },
    });
    const guarded = await waitForGeneration('guarded', 1);
    const before = await getPolicy('fos1-guarded');
    expect(before?.metadata.annotations?.['fos1.io/change-id']).toBe(firewallRuleChangeId(guarded, { generation: 1 }));

    const current = (await getRule('guarded'))!;
    await kube.client.replace({ ...current, spec: { ...(current.spec as object), ports: [{ port: 8443 }] } });
    const rolledBack = await waitForGeneration('guarded', 2);
    expect(condition(rolledBack, 'Applied')).toMatchObject({ status: 'False', reason: 'PolicyRolledBack', observedGeneration: 2 });
    expect(condition(rolledBack, 'RolledBack')).toMatchObject({ status: 'True', reason: 'PolicyRolledBack' });
    expect(condition(rolledBack, 'Failed')?.message).toMatch(/PolicyRejected: .*frozen by the change board/);
    const g2 = firewallRuleChangeId(guarded, { generation: 2 });
    expect(condition(rolledBack, 'Failed')?.message).toContain(changeWorkflowId(g2));
    // The rollback is in the change's durable audit: restored, and read back equal to the snapshot.
    expect(await eventually(() => durableSteps(g2), (steps) => steps.includes('cluster policy: verify restore ok'), 'the durable audit of the rollback', 20_000, 200)).toEqual(
      expect.arrayContaining(['cluster policy: apply failed', 'cluster policy: restore ok', 'cluster policy: verify restore ok']),
    );
    const after = await getPolicy('fos1-guarded');
    expect(after?.spec).toEqual(before?.spec);
    expect(after?.metadata.annotations).toEqual(before?.metadata.annotations);
    expect(after?.metadata.uid).toBe(before?.metadata.uid);
  });

  describe('policyChangeWorkflow started directly (one JSON argument, as from the Web UI or CLI)', () => {
    const source = { kind: 'PolicySet', namespace: NS, name: 'partners' };
    /** The CIDR group's cluster-scoped object: named after its namespace too. */
    const GROUP = cidrGroupObjectName(NS, 'partners');
    const input = (extra: object) => ({
      changeId: 'partners-1',
      author: 'alice',
      source,
      namespace: NS,
      zones: [{ name: 'web', selector: { app: 'web' } }],
      cidrGroups: [{ name: 'partners', cidrs: ['198.51.100.0/24', '2001:db8:7::/48'] }],
      rules: [{ name: 'partners-in', zone: 'web', direction: 'ingress', peers: [{ cidrGroup: 'partners' }], ports: [{ port: 443 }] }],
      ...extra,
    });
    const run = async (arg: object, id: string) => (await env.client.workflow.execute('policyChangeWorkflow', { workflowId: id, taskQueue: 'fos1-cluster', args: [arg] })) as PolicyChangeResult;

    it('dry run plans through the apiserver and persists nothing; the real run applies the CIDR group and the policy', async () => {
      const planned = await run(input({ dryRun: true }), `partners-dry-${process.pid}`);
      expect(planned).toMatchObject({ outcome: 'planned', applied: [`CiliumCIDRGroup ${GROUP}`, `CiliumNetworkPolicy ${NS}/fos1-partners-in`], pruned: [] });
      expect(await kube.client.get({ apiVersion: 'cilium.io/v2alpha1', kind: 'CiliumCIDRGroup', name: GROUP })).toBeUndefined();

      const applied = await run(input({}), `partners-${process.pid}`);
      expect(applied).toMatchObject({ outcome: 'applied' });
      const described = await env.client.workflow.getHandle(`partners-${process.pid}`).describe();
      expect(described.typedSearchAttributes.get(SearchAttributes.changeId)).toBe('partners-1');
      expect(described.typedSearchAttributes.get(SearchAttributes.author)).toBe('alice');
      expect(described.typedSearchAttributes.get(SearchAttributes.status)).toBe('applied');
      expect(applied.audit.map((a) => `${a.step} ${a.result}`)).toEqual(['translate ok', 'policy-map check ok', 'snapshot ok', 'dry-run ok', 'apply ok', 'verify ok']);
      const group = await kube.client.get({ apiVersion: 'cilium.io/v2alpha1', kind: 'CiliumCIDRGroup', name: GROUP });
      expect(group?.spec).toEqual({ externalCIDRs: ['198.51.100.0/24', '2001:db8:7::/48'] });
      expect(JSON.stringify((await getPolicy('fos1-partners-in'))?.spec)).toContain(`"cidrGroupRef":"${GROUP}"`);

      // The whole set for this source is now empty: both objects are pruned, policy before group.
      const emptied = await run(input({ changeId: 'partners-2', rules: [], cidrGroups: [] }), `partners-2-${process.pid}`);
      expect(emptied.pruned).toEqual([`CiliumNetworkPolicy ${NS}/fos1-partners-in`, `CiliumCIDRGroup ${GROUP}`]);
      expect(await getPolicy('fos1-partners-in')).toBeUndefined();
    });

    it('fails InvalidPolicyChange naming the field and the rule, before touching anything', async () => {
      const bad = input({ rules: [{ name: 'x', zone: 'web', direction: 'egress', peers: [{ cidr: '10.0.0.1/8' }] }] });
      const err = await run(bad, `partners-bad-${process.pid}`).then(
        () => undefined,
        (e: unknown) => e as { cause?: { type?: string; message?: string } },
      );
      expect(err?.cause?.type).toBe('InvalidPolicyChange');
      expect(err?.cause?.message).toMatch(/rules\[0\]\.peers\[0\]\.cidr: .*host bits set/);
    });
  });
});

