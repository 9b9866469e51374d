/**
 * The NetworkInterface and VLANPolicy controllers on real parts: a real kube-apiserver + etcd
 * with fos1's CRDs, a real Temporal dev server running the change workflow, and a sandbox
 * fleet node (a network namespace) whose node worker applies the changes. Every effect is
 * read back from the kernel (`ip`, `nft`), every outcome from the object's status.
 *
 * The kernel here has no 802.1Q module, so the NetworkInterface cases use what exists: a
 * bridge the test creates and the veth `lan1` of the sandbox node (fos1 sets MTU, admin state
 * and addresses on them); VLAN sub-interfaces themselves are covered where 8021q exists.
 *
 * The controllers sign their changes with their own identity key, which the cluster worker
 * holds: their audit records are `actorVerified: true`; a controller with another key has its
 * change refused (InvalidIdentityAssertion) before anything is applied.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import pino from 'pino';
import { ControllerManager } from '../../controllers/manager';
import { CLEANUP_FINALIZER, type Condition } from '../../controllers/object-controller';
import type { KubeApiServer } from '../../k8s/harness';
import type { StoredObject } from '../../k8s/client';
import { changeWorkflowId } from '../../model/naming';
import { confirmUpdate, statusQuery, type ChangeStatus } from '../../workflows/change';
import { eventually } from '../helpers/eventually';
import { createTestFleet, startFleetWorkers, type FleetWorkers, type TestFleet } from '../helpers/fleet';
import { describeKube, startKubeWithCrds } from '../helpers/kube';
import { startTemporal } from '../helpers/temporal';

const NS = 'routers';
const API = 'network.fos1.io/v1alpha1';
const BRIDGE = 'fos1tbr0';
/** The controllers' identity key, held by the cluster worker too (FOS1_CONTROLLER_IDENTITY_KEY_FILE in a cluster). */
const CONTROLLER_KEY = randomBytes(32);

describeKube('NetworkInterface and VLANPolicy controllers (real apiserver, Temporal, namespaces)', ['root', 'netns', 'bpffs', 'temporal-cli'], () => {
  let kube: KubeApiServer;
  let env: TestWorkflowEnvironment;
  let fleet: TestFleet;
  let workers: FleetWorkers;
  const managers: ControllerManager[] = [];
  const logger = pino({ level: process.env.FOS1_TEST_LOG ?? 'silent' });
  let netns: string;

  const manager = (identity: string, leaseDurationSeconds = 3, identityKey: Buffer = CONTROLLER_KEY) => {
    const m = new ControllerManager({
      identityKey,
      kube: kube.client,
      temporal: env.client,
      logger: logger.child({ identity }),
      lease: { namespace: NS, name: 'fos1-controller', identity, leaseDurationSeconds, retryPeriodMs: 300 },
      controllers: ['NetworkInterface', 'VLANPolicy'],
      bakeSeconds: 0,
    });
    managers.push(m);
    m.start();
    return m;
  };

  beforeAll(async () => {
    [kube, env, fleet] = await Promise.all([startKubeWithCrds(), startTemporal(), createTestFleet(1)]);
    netns = fleet.nodes[0]!.netns;
    execFileSync('ip', ['-n', netns, 'link', 'add', BRIDGE, 'type', 'bridge']);
    workers = await startFleetWorkers(env, fleet, { identityKeys: { api: randomBytes(32), controller: CONTROLLER_KEY } });
    await kube.client.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } });
  }, 240_000);

  afterAll(async () => {
    await Promise.allSettled(managers.map((m) => m.stop()));
    await workers?.stop();
    fleet?.destroy();
    await env?.teardown();
    await kube?.stop();
  }, 120_000);

  const get = (kind: string, name: string) => kube.client.get({ apiVersion: API, kind, namespace: NS, name });
  const condition = (obj: StoredObject | undefined, type: Condition['type']) => ((obj?.status?.conditions ?? []) as Condition[]).find((c) => c.type === type);
  const observed = (kind: string, name: string, generation: number) =>
    eventually(() => get(kind, name), (o) => condition(o, 'Applied')?.observedGeneration === generation && o?.status?.observedGeneration === generation, `${kind} ${name} status for generation ${generation}`, 90_000, 200);
  const link = (name: string) => (JSON.parse(execFileSync('ip', ['-n', netns, '-j', 'addr', 'show', 'dev', name]).toString()) as { mtu: number; operstate: string; flags: string[]; addr_info: { local: string; prefixlen: number; scope: string }[] }[])[0]!;
  const globalAddresses = (name: string) => link(name).addr_info.filter((a) => a.scope === 'global').map((a) => `${a.local}/${a.prefixlen}`).sort();
  const leader = () => eventually(() => managers.find((m) => m.elector.isLeader), (m) => m !== undefined, 'a leader', 30_000, 100);
  const replaceSpec = async (kind: string, name: string, spec: object) => {
    const current = (await get(kind, name))!;
    return kube.client.replace({ ...current, spec: { ...(current.spec as object), ...spec } });
  };

  it('create → addresses and MTU on the node, Applied True for generation 1; update → a new change for generation 2; delete → cleanup read back, finalizer gone', async () => {
    const a = manager('proc-a');
    await leader();
    const created = await kube.client.create({
      apiVersion: API,
      kind: 'NetworkInterface',
      metadata: { name: 'lan-bridge', namespace: NS },
      spec: { node: fleet.nodes[0]!.name, name: BRIDGE, type: 'bridge', mtu: 1400, addresses: ['10.201.0.1/24', 'fd00:201::1/64'] },
    });
    const g1 = await observed('NetworkInterface', 'lan-bridge', 1);
    expect(condition(g1, 'Applied')).toMatchObject({ status: 'True', reason: 'Applied', observedGeneration: 1 });
    expect(condition(g1, 'Failed')).toMatchObject({ status: 'False', observedGeneration: 1 });
    expect(g1?.metadata.finalizers).toContain(CLEANUP_FINALIZER);
    expect(globalAddresses(BRIDGE)).toEqual(['10.201.0.1/24', 'fd00:201::1/64']);
    expect(link(BRIDGE).mtu).toBe(1400);
    expect(link(BRIDGE).flags).toContain('UP');
    // The change went through the change workflow, under the id of this generation.
    const g1Change = a.started.find((s) => s.key === `${NS}/lan-bridge` && s.purpose === 'apply')!.changeId;
    expect(g1Change).toMatch(/^nif-lan-bridge-[a-z0-9]+-g1$/);
    expect(g1?.status?.workflowId).toBe(changeWorkflowId(g1Change));
    const described = await env.client.workflow.getHandle(changeWorkflowId(g1Change)).describe();
    expect(described.type).toBe('changeWorkflow');
    expect(described.status.name).toBe('COMPLETED');
    // Signed by the controller, verified by the cluster worker: every change-wide record says so.
    const g1Status = (await env.client.workflow.getHandle(changeWorkflowId(g1Change)).result()) as ChangeStatus;
    const changeWide = g1Status.audit.filter((r) => r.node === undefined);
    expect(changeWide.length).toBeGreaterThan(0);
    for (const r of changeWide) expect(r).toMatchObject({ actor: 'fos1-controller', actorVerified: true, changeId: g1Change });
    // The object and generation that caused it are in the signed request (its reason), with its uid.
    const { args } = await env.client.workflow.getHandle(changeWorkflowId(g1Change)).fetchHistory().then((h) => ({ args: h.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads ?? [] }));
    expect(args).toHaveLength(2);
    const startedWith = JSON.parse(Buffer.from(args[0]!.data!).toString()) as { reason: string };
    expect(startedWith.reason).toContain(`NetworkInterface ${NS}/lan-bridge (uid ${created.metadata.uid}, resourceVersion `);
    expect(startedWith.reason).toMatch(/spec last written by field manager ".+" \(.+\) \(a client-chosen name, not the user\)\) generation 1$/);
    expect(JSON.parse(Buffer.from(args[1]!.data!).toString())).toMatchObject({ kid: 'fos1-controller', principal: 'fos1-controller', roles: [] });

    // Update: generation 2, a new change, the node follows.
    await replaceSpec('NetworkInterface', 'lan-bridge', { addresses: ['10.201.1.1/24'] });
    const g2 = await observed('NetworkInterface', 'lan-bridge', 2);
    expect(condition(g2, 'Applied')).toMatchObject({ status: 'True', observedGeneration: 2 });
    const g2Change = g2?.status?.workflowId as string;
    expect(g2Change).toBe(changeWorkflowId(g1Change.replace(/-g1$/, '-g2')));
    expect(globalAddresses(BRIDGE)).toEqual(['10.201.1.1/24']);
    // The status write did not bump the generation (no loop): still one change per generation.
    expect(a.started.filter((s) => s.key === `${NS}/lan-bridge`).map((s) => s.changeId)).toEqual([g1Change, g2Change.replace(/^change-/, '')]);

    // Delete: the cleanup change clears the addresses; then the finalizer goes and the object with it.
    await kube.client.delete({ apiVersion: API, kind: 'NetworkInterface', namespace: NS, name: 'lan-bridge' });
    await eventually(() => get('NetworkInterface', 'lan-bridge'), (o) => o === undefined, 'NetworkInterface gone after its cleanup', 90_000, 200);
    expect(globalAddresses(BRIDGE)).toEqual([]);
    const cleanup = a.started.find((s) => s.key === `${NS}/lan-bridge` && s.purpose === 'cleanup')!;
    expect(cleanup.changeId).toBe(g1Change.replace(/-g1$/, '-del'));
    expect((await env.client.workflow.getHandle(changeWorkflowId(cleanup.changeId)).describe()).status.name).toBe('COMPLETED');
    expect(created.metadata.uid).toBeDefined();
    await a.stop({ release: true });
  });

  it('a controller with another identity key: its change is refused (InvalidIdentityAssertion) before anything is applied', async () => {
    const wrong = manager('proc-wrong-key', 3, randomBytes(32));
    await eventually(() => wrong.elector.isLeader, (l) => l, 'proc-wrong-key leads', 30_000, 100);
    const before = { addresses: globalAddresses(BRIDGE), mtu: link(BRIDGE).mtu };
    await kube.client.create({ apiVersion: API, kind: 'NetworkInterface', metadata: { name: 'forged', namespace: NS }, spec: { node: fleet.nodes[0]!.name, name: BRIDGE, mtu: 1300, addresses: ['10.209.0.1/24'] } });
    const refused = await eventually(() => get('NetworkInterface', 'forged'), (o) => condition(o, 'Failed')?.observedGeneration === 1, 'forged: Failed for generation 1', 90_000, 200);
    expect(condition(refused, 'Failed')).toMatchObject({ status: 'True', reason: 'InvalidIdentityAssertion' });
    expect(condition(refused, 'Failed')?.message).toMatch(/signature does not match \(not signed with this worker's key of the controllers/);
    expect(condition(refused, 'Applied')).toMatchObject({ status: 'False' });
    // Refused before planning: the node is as it was, and the change's only record is the refusal.
    expect({ addresses: globalAddresses(BRIDGE), mtu: link(BRIDGE).mtu }).toEqual(before);
    const changeId = wrong.started.find((s) => s.key === `${NS}/forged`)!.changeId;
    const status = await env.client.workflow.getHandle(changeWorkflowId(changeId)).query(statusQuery);
    expect(status.phase).toBe('rejected');
    expect(status.audit.map((r) => [r.step, r.result])).toEqual([['verify identity', 'failed']]);
    // The cleanup of the refused object is signed with the same wrong key: it is refused too,
    // so the finalizer stays. Take it off by hand (nothing was applied) and stop this controller.
    await wrong.stop({ release: true });
    const current = (await get('NetworkInterface', 'forged'))!;
    await kube.client.replace({ ...current, metadata: { ...current.metadata, finalizers: [] } });
    await kube.client.delete({ apiVersion: API, kind: 'NetworkInterface', namespace: NS, name: 'forged' });
    await eventually(() => get('NetworkInterface', 'forged'), (o) => o === undefined, 'forged gone', 30_000, 200);
  });

  it('a controller restarted mid-change joins the running change: one change, status from the new process', async () => {
    const node = fleet.nodes[0]!.name;
    // Hold the node: a commit-confirmed change keeps the node's lock until it is confirmed, so
    // the controller's change waits for the node (phase waiting-for-node) — mid-change.
    const holder = await env.client.workflow.start('changeWorkflow', {
      workflowId: `change-hold-${process.pid}`,
      taskQueue: 'fos1-cluster',
      args: [{ id: `hold-${process.pid}`, author: 'test', reason: 'hold the node', targets: [node], patch: { interfaces: { upsert: [{ name: BRIDGE, mtu: 1450 }] } }, options: { confirmTimeout: '10m', defaultBakeSeconds: 0 } }],
    });
    await eventually(() => holder.query(statusQuery), (s) => s.phase === 'awaiting-confirmation', 'holder awaiting confirmation', 60_000, 200);

    const first = manager('proc-b');
    await eventually(() => first.elector.isLeader, (l) => l, 'proc-b leads', 30_000, 100);
    await kube.client.create({ apiVersion: API, kind: 'NetworkInterface', metadata: { name: 'lan-veth', namespace: NS }, spec: { node, name: 'lan1', type: 'veth', addresses: ['10.202.0.1/24'] } });
    const started = await eventually(() => first.started.find((s) => s.key === `${NS}/lan-veth`), (s) => s !== undefined, 'proc-b starts the change', 30_000, 100);
    const handle = env.client.workflow.getHandle(changeWorkflowId(started!.changeId));
    await eventually(() => handle.query(statusQuery), (s) => s.phase === 'waiting-for-node', 'change waits for the node', 60_000, 200);
    const runId = (await handle.describe()).runId;

    // Restart: the first process stops (mid-change), a new one takes the lease and resumes.
    await first.stop({ release: true });
    expect((await get('NetworkInterface', 'lan-veth'))?.status?.observedGeneration).toBeUndefined();
    const second = manager('proc-c');
    await eventually(() => second.elector.isLeader, (l) => l, 'proc-c leads', 30_000, 100);
    await eventually(() => second.started.find((s) => s.key === `${NS}/lan-veth`), (s) => s !== undefined, 'proc-c joins the change', 30_000, 100);
    await holder.executeUpdate(confirmUpdate, { args: [{ by: 'test' }] });

    const applied = await observed('NetworkInterface', 'lan-veth', 1);
    expect(condition(applied, 'Applied')).toMatchObject({ status: 'True', observedGeneration: 1 });
    expect(applied?.status?.workflowId).toBe(changeWorkflowId(started!.changeId));
    expect(second.started.find((s) => s.key === `${NS}/lan-veth`)?.changeId).toBe(started!.changeId);
    expect(globalAddresses('lan1')).toEqual(['10.202.0.1/24']);
    // Exactly one execution of that change ever ran: the one the first process started.
    const runs: string[] = [];
    for await (const w of env.client.workflow.list({ query: `WorkflowId = '${changeWorkflowId(started!.changeId)}'` })) runs.push(w.runId);
    expect(runs).toEqual([runId]);
    await kube.client.delete({ apiVersion: API, kind: 'NetworkInterface', namespace: NS, name: 'lan-veth' });
    await eventually(() => get('NetworkInterface', 'lan-veth'), (o) => o === undefined, 'lan-veth cleaned up', 90_000, 200);
    expect(globalAddresses('lan1')).toEqual([]);
    await second.stop({ release: true });
  });

  it('two controller processes: only the lease holder acts; the follower takes over when the lease expires', async () => {
    const p = manager('proc-d');
    await eventually(() => p.elector.isLeader, (l) => l, 'proc-d leads', 30_000, 100);
    const q = manager('proc-e');
    await kube.client.create({ apiVersion: API, kind: 'NetworkInterface', metadata: { name: 'one', namespace: NS }, spec: { node: fleet.nodes[0]!.name, name: BRIDGE, addresses: ['10.203.0.1/24'] } });
    await observed('NetworkInterface', 'one', 1);
    expect(p.started.map((s) => s.key)).toContain(`${NS}/one`);
    expect(q.elector.isLeader).toBe(false);
    expect(q.started).toEqual([]);
    const lease = await kube.client.get({ apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', namespace: NS, name: 'fos1-controller' });
    expect((lease?.spec as { holderIdentity?: string }).holderIdentity).toBe('proc-d');

    // The leader dies without releasing: the follower waits for the lease to expire, then acts.
    const stoppedAt = Date.now();
    await p.stop({ release: false });
    await eventually(() => q.elector.isLeader, (l) => l, 'proc-e takes over', 30_000, 100);
    expect(Date.now() - stoppedAt).toBeGreaterThanOrEqual(2000); // not before the 3 s lease ran out (less one retry period)
    await replaceSpec('NetworkInterface', 'one', { addresses: ['10.203.1.1/24'] });
    await observed('NetworkInterface', 'one', 2);
    expect(q.started.map((s) => s.changeId).some((c) => c.endsWith('-g2'))).toBe(true);
    expect(p.started.some((s) => s.changeId.endsWith('-g2'))).toBe(false);
    expect(globalAddresses(BRIDGE)).toEqual(['10.203.1.1/24']);
    await kube.client.delete({ apiVersion: API, kind: 'NetworkInterface', namespace: NS, name: 'one' });
    await eventually(() => get('NetworkInterface', 'one'), (o) => o === undefined, 'one cleaned up', 90_000, 200);
    await q.stop({ release: true });
  });

  it('VLANPolicy: the zone vlan<id> on the nodes that carry the VLAN, updated with the subnets, removed on delete; VLAN ids over 254 refused naming the field', async () => {
    const m = manager('proc-f');
    await eventually(() => m.elector.isLeader, (l) => l, 'proc-f leads', 30_000, 100);
    // Where VLAN 10 lives (as data: there is no 802.1Q here, so its NetworkInterface itself fails to apply).
    await kube.client.create({ apiVersion: API, kind: 'NetworkInterface', metadata: { name: 'vlan10', namespace: NS }, spec: { node: fleet.nodes[0]!.name, name: 'lan0.10', type: 'vlan', parent: 'lan0', vlanId: 10 } });
    // The zone's member must exist for the eBPF zone map (it holds ifindexes, not names): a
    // bridge named like the VLAN stands in for the sub-interface this kernel cannot make.
    execFileSync('ip', ['-n', netns, 'link', 'add', 'lan0.10', 'type', 'bridge']);
    await kube.client.create({ apiVersion: API, kind: 'VLANPolicy', metadata: { name: 'guests', namespace: NS }, spec: { vlanId: 10, subnets: ['10.210.0.0/24'] } });
    const zone = () => {
      const sets = (JSON.parse(execFileSync('ip', ['netns', 'exec', netns, 'nft', '-j', 'list', 'sets']).toString()) as { nftables: { set?: { name: string; elem?: unknown[] } }[] }).nftables;
      return sets.filter((s) => s.set?.name.startsWith('zone10_vlan10_')).map((s) => ({ name: s.set!.name, elem: JSON.stringify(s.set!.elem ?? []) }));
    };
    const g1 = await observed('VLANPolicy', 'guests', 1);
    expect(condition(g1, 'Applied')).toMatchObject({ status: 'True', observedGeneration: 1 });
    expect(condition(g1, 'Applied')?.message).toMatch(/zone vlan10 on router-1: default deny, allowed towards host \(eBPF zone maps\)/);
    expect(zone().map((s) => s.name).sort()).toEqual(['zone10_vlan10_if', 'zone10_vlan10_v4', 'zone10_vlan10_v6']);
    expect(zone().find((s) => s.name.endsWith('_if'))?.elem).toContain('lan0.10');
    expect(zone().find((s) => s.name.endsWith('_v4'))?.elem).toContain('10.210.0.0');

    await replaceSpec('VLANPolicy', 'guests', { subnets: ['10.211.0.0/24'] });
    await observed('VLANPolicy', 'guests', 2);
    expect(zone().find((s) => s.name.endsWith('_v4'))?.elem).toContain('10.211.0.0');
    expect(zone().find((s) => s.name.endsWith('_v4'))?.elem).not.toContain('10.210.0.0');

    await kube.client.delete({ apiVersion: API, kind: 'VLANPolicy', namespace: NS, name: 'guests' });
    await eventually(() => get('VLANPolicy', 'guests'), (o) => o === undefined, 'VLANPolicy gone after its cleanup', 90_000, 200);
    expect(zone()).toEqual([]);

    await kube.client.create({ apiVersion: API, kind: 'VLANPolicy', metadata: { name: 'big', namespace: NS }, spec: { vlanId: 300 } });
    const refused = await observed('VLANPolicy', 'big', 1);
    expect(condition(refused, 'Failed')).toMatchObject({ status: 'True', reason: 'InvalidSpec' });
    expect(condition(refused, 'Failed')?.message).toMatch(/spec\.vlanId: 300 .*zone ids are 1–254/);
    await kube.client.delete({ apiVersion: API, kind: 'VLANPolicy', namespace: NS, name: 'big' });
    // Gone before vlan10's cleanup, which then finds no VLAN to remove (as when it never existed).
    execFileSync('ip', ['-n', netns, 'link', 'del', 'lan0.10']);
    await kube.client.delete({ apiVersion: API, kind: 'NetworkInterface', namespace: NS, name: 'vlan10' });
    await eventually(() => get('VLANPolicy', 'big'), (o) => o === undefined, 'refused policy deleted', 30_000, 200);
    // Its cleanup (remove a VLAN that was never made) is a change too: let it end before the servers stop.
    await eventually(() => get('NetworkInterface', 'vlan10'), (o) => o === undefined, 'vlan10 cleaned up', 90_000, 200);
    await m.stop({ release: true });
  });
});
