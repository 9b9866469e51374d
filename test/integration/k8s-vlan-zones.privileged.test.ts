/**
 * VLANPolicy zone pairs on real parts, with real traffic: a real kube-apiserver + etcd with
 * fos1's CRDs, a real Temporal dev server running the change workflow, the VLANPolicy
 * controller, and a router namespace whose node worker applies the changes into fos1's eBPF
 * zone maps, with fos1's TC programs attached to the VLAN interfaces:
 *
 *   netns a: a0 10.72.10.2/24 ── pa ⊂ lan0.10 10.72.10.1/24   netns r   lan0.20 10.72.20.1/24 ⊃ pb ── b0 10.72.20.2/24 :netns b
 *
 * This kernel has no 802.1Q module, so a bridge named like each VLAN sub-interface stands in
 * for it (as in k8s-network-controllers): the VLANPolicy controller only needs the interface
 * to exist on the node (the zone map holds ifindexes); the NetworkInterfaces of `type: vlan`
 * are data here, which is how the controller finds the VLAN's node and interface names.
 *
 * VLAN 10 `allowTo: [20]`, VLAN 20 default deny: a connection from 10 to 20 works (its replies
 * pass VLAN 20's default deny by connection tracking), a new one from 20 to 10 is dropped.
 *
 * Privileged: root, netns, bpffs, iproute2, the Temporal CLI and the built kube-apiserver.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import pino from 'pino';
import { DEFAULT_ROUTE_PROTOCOL } from '../../activities/system/route-table';
import { ControllerManager } from '../../controllers/manager';
import type { Condition } from '../../controllers/object-controller';
import { buildDatapath } from '../../bpf/build';
import { Datapath } from '../../bpf/datapath';
import { ZoneMaps } from '../../bpf/zone-maps';
import type { StoredObject } from '../../k8s/client';
import type { KubeApiServer } from '../../k8s/harness';
import { cacheDir } from '../../scripts/paths';
import { eventually } from '../helpers/eventually';
import { describeKube, startKubeWithCrds } from '../helpers/kube';
import { startTemporal, startWorkers, type RunningWorkers } from '../helpers/temporal';
import { echo, EchoServers, ip, ping } from '../helpers/netns-traffic';

const NODE = 'router-vz';
const K8S_NS = 'vlans';
const API = 'network.fos1.io/v1alpha1';
const SIZES = { blocklistV4: 64, blocklistV6: 64, hostsV4: 64, hostsV6: 64, conntrack: 1024 };
const tag = randomBytes(3).toString('hex');
const NS = { a: `fos1vz-a-${tag}`, r: `fos1vz-r-${tag}`, b: `fos1vz-b-${tag}` };
const ADDR = { a: '10.72.10.2', b: '10.72.20.2' };

const servers = new EchoServers();

describeKube('VLANPolicy allowTo/defaultAction as eBPF zone pairs, with traffic between VLANs (real apiserver, Temporal, namespaces)', ['root', 'netns', 'bpffs', 'iproute2', 'temporal-cli'], () => {
  let kube: KubeApiServer;
  let env: TestWorkflowEnvironment;
  let workers: RunningWorkers;
  let manager: ControllerManager;
  let pinDir: string;
  let datapath: Datapath;
  let zoneMaps: ZoneMaps;
  let serverA: { tcp: number; udp: number };
  let serverB: { tcp: number; udp: number };
  const logger = pino({ level: process.env.FOS1_TEST_LOG ?? 'silent' });

  beforeAll(async () => {
    for (const ns of Object.values(NS)) ip('netns', 'add', ns);
    for (const [side, vlan, addr, routerAddr] of [
      ['a', 'lan0.10', `${ADDR.a}/24`, '10.72.10.1/24'],
      ['b', 'lan0.20', `${ADDR.b}/24`, '10.72.20.1/24'],
    ] as const) {
      const ns = NS[side];
      ip('-n', NS.r, 'link', 'add', vlan, 'type', 'bridge');
      ip('-n', ns, 'link', 'add', `${side}0`, 'type', 'veth', 'peer', 'name', `p${side}`, 'netns', NS.r);
      ip('-n', NS.r, 'link', 'set', `p${side}`, 'master', vlan);
      ip('-n', NS.r, 'link', 'set', `p${side}`, 'up');
      ip('-n', NS.r, 'addr', 'add', routerAddr, 'dev', vlan);
      ip('-n', NS.r, 'link', 'set', vlan, 'up');
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      ip('-n', ns, 'addr', 'add', addr, 'dev', `${side}0`);
      ip('-n', ns, 'link', 'set', `${side}0`, 'up');
      ip('-n', ns, 'route', 'add', 'default', 'via', routerAddr.replace(/\/24$/, ''));
    }
    ip('-n', NS.r, 'link', 'set', 'lo', 'up');
    execFileSync('ip', ['netns', 'exec', NS.r, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    await eventually(() => ping(NS.a, ADDR.b), (ok) => ok, 'the router to forward between the VLANs', 20_000, 200);

    pinDir = `/sys/fs/bpf/fos1-vz-${tag}`;
    datapath = Datapath.load({ pinDir, objects: buildDatapath({ cacheDir: cacheDir() }), sizes: SIZES });
    // TC ingress on each VLAN interface: where a VLAN's packets enter the router.
    for (const dev of ['lan0.10', 'lan0.20']) datapath.attach({ interface: dev, netns: NS.r });
    zoneMaps = ZoneMaps.open({ pinDir, netns: NS.r });
    serverA = await servers.start(NS.a);
    serverB = await servers.start(NS.b);

    [kube, env] = await Promise.all([startKubeWithCrds(), startTemporal()]);
    workers = await startWorkers(env, NODE, { netns: NS.r, routeProtocol: DEFAULT_ROUTE_PROTOCOL, bpfPinDir: pinDir, blocklistMaxEntries: { v4: SIZES.blocklistV4, v6: SIZES.blocklistV6 } });
    await kube.client.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: K8S_NS } });
    for (const id of [10, 20]) {
      await kube.client.create({ apiVersion: API, kind: 'NetworkInterface', metadata: { name: `vlan${id}`, namespace: K8S_NS }, spec: { node: NODE, name: `lan0.${id}`, type: 'vlan', parent: 'lan0', vlanId: id } });
    }
    manager = new ControllerManager({
      kube: kube.client,
      temporal: env.client,
      logger,
      lease: { namespace: K8S_NS, name: 'fos1-controller', identity: 'vz', leaseDurationSeconds: 3, retryPeriodMs: 300 },
      controllers: ['VLANPolicy'],
      bakeSeconds: 0,
    });
    manager.start();
    await eventually(() => manager.elector.isLeader, (l) => l, 'the controller leads', 30_000, 100);
  }, 240_000);

  afterAll(async () => {
    await manager?.stop({ release: true });
    await workers?.stop();
    await env?.teardown();
    await kube?.stop();
    servers.stopAll();
    zoneMaps?.close();
    datapath?.unpin();
    datapath?.close();
    for (const ns of Object.values(NS)) spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    if (pinDir) rmSync(pinDir, { recursive: true, force: true });
  }, 120_000);

  const get = (name: string) => kube.client.get({ apiVersion: API, kind: 'VLANPolicy', namespace: K8S_NS, name });
  const condition = (obj: StoredObject | undefined, type: Condition['type']) => ((obj?.status?.conditions ?? []) as Condition[]).find((c) => c.type === type);
  const applied = (name: string, generation: number) =>
    eventually(() => get(name), (o) => o?.status?.observedGeneration === generation && condition(o, 'Applied')?.status === 'True' && condition(o, 'Applied')?.observedGeneration === generation, `VLANPolicy ${name} Applied at generation ${generation}`, 90_000, 200);
  const waiting = (name: string, generation: number) =>
    eventually(() => get(name), (o) => o?.status?.observedGeneration === generation && condition(o, 'Failed')?.status === 'True' && condition(o, 'Failed')?.reason === 'WaitingForZone', `VLANPolicy ${name} waiting for a zone at generation ${generation}`, 90_000, 200);
  const replaceSpec = async (name: string, spec: object) => {
    const current = (await get(name))!;
    return kube.client.replace({ ...current, spec: { ...(current.spec as object), ...spec } });
  };

  test('allowTo a VLAN without a policy waits (condition names spec.allowTo[0]); once that VLAN is a zone, 10 → 20 passes with its replies and 20 → 10 is dropped; an update and the deletions follow', async () => {
    // Unzoned: both directions pass.
    expect([echo(NS.a, 'tcp', ADDR.b, serverB.tcp), echo(NS.b, 'tcp', ADDR.a, serverA.tcp)]).toEqual([true, true]);

    await kube.client.create({ apiVersion: API, kind: 'VLANPolicy', metadata: { name: 'staff', namespace: K8S_NS }, spec: { vlanId: 10, allowTo: [20], subnets: ['10.72.10.0/24'] } });
    const wait = await waiting('staff', 1);
    expect(condition(wait, 'Failed')?.message).toMatch(/spec\.allowTo\[0\]: no VLANPolicy for VLAN 20 in namespace vlans/);
    expect(condition(wait, 'Applied')).toMatchObject({ status: 'False', reason: 'WaitingForZone', observedGeneration: 1 });
    // Nothing of it reached the node.
    expect(zoneMaps.read()).toEqual({ members: [], rules: [], defaults: [] });

    // VLAN 20's policy: the zone appears, and VLAN 10's policy is applied again by itself.
    await kube.client.create({ apiVersion: API, kind: 'VLANPolicy', metadata: { name: 'guests', namespace: K8S_NS }, spec: { vlanId: 20, subnets: ['10.72.20.0/24'] } });
    await applied('guests', 1);
    const staff = await applied('staff', 1);
    expect(condition(staff, 'Applied')?.message).toMatch(/zone vlan10 on router-vz: default deny, allowed towards host, vlan20/);
    // The forced change has its own id (generation 1, tagged by the event that made vlan20 ready).
    expect(staff?.status?.workflowId).toMatch(/^change-vlp-staff-[a-z0-9]+-g1-z\d+$/);
    expect((await env.client.workflow.getHandle(staff?.status?.workflowId as string).describe()).status.name).toBe('COMPLETED');

    const maps = zoneMaps.read();
    expect(maps.members.map((m) => [m.interface, m.zone])).toEqual([['lan0.10', 10], ['lan0.20', 20]]);
    expect(maps.rules).toEqual([
      { src: 10, dst: 20, protocol: 0, port: 0, action: 'allow', ruleId: 0 },
      { src: 10, dst: 255, protocol: 0, port: 0, action: 'allow', ruleId: 0 },
      { src: 20, dst: 255, protocol: 0, port: 0, action: 'allow', ruleId: 0 },
    ]);
    expect(maps.defaults).toEqual([
      { zone: 10, action: 'deny', ruleId: 0 },
      { zone: 20, action: 'deny', ruleId: 0 },
    ]);

    // 10 → 20: the request and its reply (reply: from zone 20, whose default is deny) pass.
    expect(echo(NS.a, 'tcp', ADDR.b, serverB.tcp)).toBe(true);
    expect(echo(NS.a, 'udp', ADDR.b, serverB.udp)).toBe(true);
    // 20 → 10: a new connection meets zone 20's default deny.
    expect(echo(NS.b, 'tcp', ADDR.a, serverA.tcp)).toBe(false);
    expect(echo(NS.b, 'udp', ADDR.a, serverA.udp)).toBe(false);
    // The router itself stays reachable from both VLANs (rules towards host).
    expect([ping(NS.a, '10.72.10.1'), ping(NS.b, '10.72.20.1')]).toEqual([true, true]);

    // Update VLAN 20's policy (generation 2): it may now open connections towards VLAN 10.
    await replaceSpec('guests', { allowTo: [10] });
    const g2 = await applied('guests', 2);
    // Generation 2 names VLAN 10, so an event of staff's (its status write) may re-apply it
    // first, forced (`-z<resourceVersion>`): either way the change is generation 2's.
    expect(g2?.status?.workflowId).toMatch(/^change-vlp-guests-[a-z0-9]+-g2(-z\d+)?$/);
    expect(zoneMaps.read().rules).toContainEqual({ src: 20, dst: 10, protocol: 0, port: 0, action: 'allow', ruleId: 0 });
    expect(echo(NS.b, 'tcp', ADDR.a, serverA.tcp)).toBe(true);

    // Delete VLAN 20's policy: its zone goes, with VLAN 10's rule towards it; VLAN 10's
    // policy is reconciled again and now waits for a vlan20 zone.
    await kube.client.delete({ apiVersion: API, kind: 'VLANPolicy', namespace: K8S_NS, name: 'guests' });
    await eventually(() => get('guests'), (o) => o === undefined, 'guests cleaned up', 90_000, 200);
    const again = await eventually(() => get('staff'), (o) => condition(o, 'Failed')?.reason === 'WaitingForZone', 'staff waits again', 90_000, 200);
    expect(condition(again, 'Failed')?.message).toMatch(/spec\.allowTo\[0\]/);
    const after = zoneMaps.read();
    expect(after.members.map((m) => m.interface)).toEqual(['lan0.10']);
    expect(after.rules.filter((r) => r.dst === 20 || r.src === 20)).toEqual([]);

    await kube.client.delete({ apiVersion: API, kind: 'VLANPolicy', namespace: K8S_NS, name: 'staff' });
    await eventually(() => get('staff'), (o) => o === undefined, 'staff cleaned up', 90_000, 200);
    expect(zoneMaps.read()).toEqual({ members: [], rules: [], defaults: [] });
    // Unzoned again: both directions pass.
    expect([echo(NS.a, 'tcp', ADDR.b, serverB.tcp), echo(NS.b, 'tcp', ADDR.a, serverA.tcp)]).toEqual([true, true]);
  }, 300_000);
});
