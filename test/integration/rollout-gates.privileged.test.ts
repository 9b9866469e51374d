/**
 * Health gates measured for real on a sandbox fleet (scripts/sandbox-netns.ts): two router
 * namespaces wired through the upstream's bridge, the upstream's TCP service, fos1's datapath
 * programs on router-1's `up0`, and the gate activities run both directly and through a real
 * Temporal server's node and cluster task queues.
 *
 * Semantics under test: a probe that runs and gets no answer (no reply, refused, a
 * black-holed route) is a failure; a probe that cannot run (no such namespace, no datapath
 * counters, no baseline) is inconclusive — never a success.
 */
import { spawn, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { bundleWorkflowCode } from '@temporalio/worker';
import { createNodeGateActivities } from '../../activities/gates';
import { BlocklistMaps } from '../../bpf/blocklist-maps';
import { buildDatapath } from '../../bpf/build';
import { Datapath } from '../../bpf/datapath';
import { gateSpecSchema, type DatapathBaseline, type GateSpecInput, type Measurement } from '../../model/gates';
import { CLUSTER_TASK_QUEUE, nodeTaskQueue } from '../../model/naming';
import { cacheDir } from '../../scripts/paths';
import type { SandboxFleet } from '../../scripts/sandbox-netns';
import { describePrivileged } from '../helpers/capabilities';
import { eventually } from '../helpers/eventually';
import { createTestFleet, startFleetWorkers, type FleetWorkers, type TestFleet } from '../helpers/fleet';
import { startTemporal } from '../helpers/temporal';
import type * as GateWorkflows from '../fixtures/gate-workflows';

const spec = (input: GateSpecInput) => gateSpecSchema.parse(input);

describePrivileged('health gates on a sandbox fleet', ['root', 'netns', 'bpffs', 'iproute2', 'temporal-cli'], () => {
  const id = randomBytes(3).toString('hex');
  let fleet: TestFleet;
  let pinDir: string;
  let r1: SandboxFleet['nodes'][number];
  let r2: SandboxFleet['nodes'][number];
  let gates: ReturnType<typeof createNodeGateActivities>;

  beforeAll(async () => {
    fleet = await createTestFleet(2);
    [r1, r2] = fleet.nodes as [typeof r1, typeof r2];
    pinDir = fleet.pinDir(r1);
    gates = createNodeGateActivities({ netns: r1.netns, bpfPinDir: pinDir });
  });

  afterAll(() => fleet?.destroy());

  const inR1 = (...args: string[]) => execFileSync('ip', ['-n', r1.netns, ...args]);

  describe('reachability', () => {
    const upstream = () =>
      spec({
        kind: 'reachability',
        targets: [
          { protocol: 'icmp', address: fleet.upstream.v4 },
          { protocol: 'icmp', address: fleet.upstream.v6 },
          { protocol: 'tcp', address: fleet.upstream.v4, port: fleet.upstream.tcpPort },
          { protocol: 'icmp', address: r2.upstream.v4 },
        ],
      });

    it('succeeds when the upstream (ICMP v4/v6, its TCP service) and another node answer from inside the node', async () => {
      const m = await gates.measureGate({ name: 'upstream', spec: upstream() });
      expect(m).toMatchObject({ result: 'success', detail: expect.stringContaining('4/4 reachable') });
      expect(m.value).toBeGreaterThan(0);
      expect(Date.parse(m.at)).not.toBeNaN();
    });

    it('fails while a route change black-holes the target, and succeeds again once it is removed', async () => {
      inR1('route', 'add', 'blackhole', `${fleet.upstream.v4}/32`);
      try {
        const m = await gates.measureGate({ name: 'upstream', spec: upstream() });
        expect(m.result).toBe('failure');
        expect(m.detail).toContain('2/4 reachable');
        expect(m.detail).toContain(`icmp ${fleet.upstream.v4}`);
        expect(m.detail).toContain(`tcp ${fleet.upstream.v4}:${fleet.upstream.tcpPort}`);
      } finally {
        inR1('route', 'del', 'blackhole', `${fleet.upstream.v4}/32`);
      }
      expect((await gates.measureGate({ name: 'upstream', spec: upstream() })).result).toBe('success');
    });

    it('fails for an address nobody answers and a port nobody listens on', async () => {
      const m = await gates.measureGate({
        name: 'dead',
        spec: spec({ kind: 'reachability', targets: [{ protocol: 'icmp', address: '10.200.255.250', timeoutMs: 300 }, { protocol: 'tcp', address: fleet.upstream.v4, port: 8001 }] }),
      });
      expect(m.result).toBe('failure');
      expect(m.detail).toContain('no reply within 300 ms');
      expect(m.detail).toContain('ECONNREFUSED');
    });

    it('is inconclusive, never a success, when the node namespace does not exist', async () => {
      const missing = createNodeGateActivities({ netns: `fg${id}-gone`, bpfPinDir: pinDir });
      const m = await missing.measureGate({ name: 'upstream', spec: upstream() });
      expect(m).toMatchObject({ result: 'inconclusive', detail: `network namespace fg${id}-gone does not exist` });
    });
  });

  describe('routes and neighbours', () => {
    it('succeeds when the routes (with gateway and device) and a reachable neighbour are present', async () => {
      inR1('route', 'add', '10.60.0.0/16', 'via', '10.200.0.1', 'table', '100');
      try {
        // A ping makes the upstream a neighbour (ARP) of router-1.
        await gates.measureGate({ name: 'warm', spec: spec({ kind: 'reachability', targets: [{ protocol: 'icmp', address: fleet.upstream.v4 }] }) });
        const m = await gates.measureGate({
          name: 'routes',
          spec: spec({
            kind: 'routes',
            routes: [{ destination: '10.200.255.0/24', device: 'up0' }, { destination: '10.60.0.0/16', table: 100, gateway: '10.200.0.1' }, { destination: 'fd00:200::/64' }],
            neighbours: [fleet.upstream.v4],
          }),
        });
        expect(m).toMatchObject({ result: 'success', value: 0, detail: 'all 3 routes and 1 neighbours present' });
      } finally {
        inR1('route', 'del', '10.60.0.0/16', 'table', '100');
      }
    });

    it('fails naming what is missing or different: a route, a wrong gateway, a blackhole, a failed neighbour', async () => {
      inR1('route', 'add', 'blackhole', '10.61.0.0/16');
      try {
        await gates.measureGate({ name: 'warm', spec: spec({ kind: 'reachability', targets: [{ protocol: 'icmp', address: '10.200.255.249', timeoutMs: 300 }] }) });
        const m = await gates.measureGate({
          name: 'routes',
          spec: spec({
            kind: 'routes',
            routes: [{ destination: 'default' }, { destination: '10.200.255.0/24', gateway: '10.200.255.1' }, { destination: '10.61.0.0/16' }, { destination: '10.62.0.0/16', table: 4242 }],
            neighbours: ['10.200.255.249', '10.200.255.248'],
          }),
        });
        expect(m.result).toBe('failure');
        expect(m.value).toBe(6);
        expect(m.detail).toContain('route 0.0.0.0/0 missing');
        expect(m.detail).toContain('route 10.200.255.0/24 via 10.200.255.1 differs (dev up0)');
        expect(m.detail).toContain('route 10.61.0.0/16 differs (blackhole');
        expect(m.detail).toContain('route 10.62.0.0/16 table 4242 missing');
        expect(m.detail).toMatch(/neighbour 10\.200\.255\.249 (FAILED|INCOMPLETE)/);
        expect(m.detail).toContain('neighbour 10.200.255.248 missing');
      } finally {
        inR1('route', 'del', 'blackhole', '10.61.0.0/16');
      }
    });

    it('is inconclusive when the namespace cannot be read', async () => {
      const missing = createNodeGateActivities({ netns: `fg${id}-gone`, bpfPinDir: pinDir });
      expect((await missing.measureGate({ name: 'routes', spec: spec({ kind: 'routes', routes: [{ destination: 'default' }] }) })).result).toBe('inconclusive');
    });
  });

  describe('datapath drop counters', () => {
    let datapath: Datapath | undefined;
    let blocklist: BlocklistMaps | undefined;
    const datapathSpec = spec({ kind: 'datapath', maxDropRateIncreasePerSecond: 20, sampleSeconds: 1 });

    afterAll(() => {
      if (datapath) Datapath.detach({ interface: 'up0', netns: r1.netns });
      blocklist?.close();
      datapath?.unpin();
      datapath?.close();
    });

    it('is inconclusive before the datapath is loaded (no counters) and without a baseline', async () => {
      const baseline = await gates.datapathBaseline({ sampleSeconds: 0.2 });
      expect(baseline).toMatchObject({ available: false, detail: expect.stringContaining('no datapath counters pinned') });
      expect((await gates.measureGate({ name: 'drops', spec: datapathSpec, baseline })).result).toBe('inconclusive');
      expect((await gates.measureGate({ name: 'drops', spec: datapathSpec })).result).toBe('inconclusive');
    });

    it('passes at the baseline drop rate and fails when traffic from a blocklisted source is dropped per reason', async () => {
      datapath = Datapath.load({ pinDir, objects: buildDatapath({ cacheDir: cacheDir() }), sizes: { blocklistV4: 64, blocklistV6: 64, hostsV4: 64, hostsV6: 64 } });
      blocklist = BlocklistMaps.open({ pinDir, maxEntriesV4: 64, maxEntriesV6: 64, hostMaps: { maxEntriesV4: 64, maxEntriesV6: 64 } });
      datapath.attach({ interface: 'up0', netns: r1.netns });
      blocklist.upsert([{ cidr: `${r2.upstream.v4}/32` }]);

      const baseline: DatapathBaseline = await gates.datapathBaseline({ sampleSeconds: 0.5 });
      expect(baseline.available).toBe(true);
      expect(baseline.ratePerSecond['blocklist-host']).toBe(0);
      expect((await gates.measureGate({ name: 'drops', spec: datapathSpec, baseline })).result).toBe('success');

      // router-2 floods router-1 while it is blocklisted: router-1's TC ingress drops it.
      const before = datapath.dropCounts()['blocklist-host'];
      const flood = spawn('ip', ['netns', 'exec', r2.netns, 'ping', '-q', '-i', '0.005', '-w', '20', r1.upstream.v4], { stdio: 'ignore' });
      try {
        await eventually(() => datapath!.dropCounts()['blocklist-host'], (n) => n > before + 20n, 'drops counted under blocklist-host', 10_000);
        const m: Measurement = await gates.measureGate({ name: 'drops', spec: datapathSpec, baseline });
        expect(m.result).toBe('failure');
        expect(m.value).toBeGreaterThan(20);
        expect(m.detail).toContain('(blocklist-host)');
        // Watching only another reason: the blocklist drops do not count.
        expect((await gates.measureGate({ name: 'drops', spec: spec({ kind: 'datapath', reasons: ['zone-rule'], sampleSeconds: 0.5 }), baseline })).result).toBe('success');
      } finally {
        flood.kill('SIGKILL');
      }
    });
  });

  describe('through Temporal task queues', () => {
    let env: TestWorkflowEnvironment;
    let workers: FleetWorkers;
    const inventoryFile = join(tmpdir(), `fos1-inventory-${id}.yaml`);

    beforeAll(async () => {
      writeFileSync(inventoryFile, `- name: ${r1.name}\n  labels: { site: lab }\n- name: ${r2.name}\n`);
      env = await startTemporal();
      const workflowBundle = await bundleWorkflowCode({ workflowsPath: require.resolve('../fixtures/gate-workflows'), logger: { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error: (m: string) => console.error(m) } });
      // Only router-1 gets a worker: router-2 stands for a dead node.
      workers = await startFleetWorkers(env, fleet, { nodes: [r1.name], inventory: { kind: 'file', path: inventoryFile }, workflowBundle });
    });

    afterAll(async () => {
      await workers?.stop();
      await env?.teardown();
      rmSync(inventoryFile, { force: true });
    });

    const run = <K extends keyof typeof GateWorkflows>(name: K, ...args: Parameters<(typeof GateWorkflows)[K]>) =>
      env.client.workflow.execute(name, { taskQueue: CLUSTER_TASK_QUEUE, workflowId: `${name}-${randomBytes(4).toString('hex')}`, args }) as ReturnType<(typeof GateWorkflows)[K]>;

    it("reports the pollers of a live node's queue and none for a node without a worker", async () => {
      const queues = [nodeTaskQueue(r1.name), nodeTaskQueue(r2.name)];
      const pollers = await eventually(() => run('pollersOnCluster', queues), (p) => (p[queues[0]!]?.pollers ?? 0) >= 1, 'router-1 polling', 30_000, 200);
      expect(pollers[queues[0]!]?.identities).toContain(workers.byNode.get(r1.name)?.[0]?.options.identity);
      expect(pollers[queues[1]!]).toEqual({ pollers: 0, identities: [] });
    });

    it('measures a reachability gate on the node task queue', async () => {
      const m = await run('measureOnNode', nodeTaskQueue(r1.name), { name: 'upstream', spec: spec({ kind: 'reachability', targets: [{ protocol: 'tcp', address: fleet.upstream.v4, port: fleet.upstream.tcpPort }] }) });
      expect(m.result).toBe('success');
    });

    it('lists the inventory file from the cluster task queue', async () => {
      expect(await run('inventoryOnCluster')).toEqual([
        { name: 'router-1', labels: { site: 'lab' } },
        { name: 'router-2', labels: {} },
      ]);
    });
  });
});
