/**
 * Every fos1 metric in a real Prometheus scrape: Debian's Prometheus scrapes fos1's `/metrics`
 * listener (metrics/server.ts) and the Temporal SDK's own exporter (the Runtime's telemetry)
 * while real changes run — one through the HTTP API, one rolled back by an injected fault, two
 * contending for the node's lock, a staged rollout whose gate passes and one whose gate fails
 * (rolled back, then checked again) — and an IDS alert is blocked on the node (one about an
 * allow-listed address is refused by ingest's guard, and one for a node that cannot report its
 * protected addresses is refused by the enforcement workflow, which fails closed).
 * `promtool check metrics` lints the exposition.
 *
 * Real parts: the Temporal dev server, the workers, the API, the ingest pipelines tailing EVE
 * files, two network namespaces joined by a veth pair (b is the node, a sends its traffic), and
 * fos1's eBPF programs attached to the node's interface with their maps pinned in bpffs. The
 * node that cannot report is a real node worker whose namespace does not exist.
 *
 * Privileged: needs root, netns, bpffs, the built Temporal CLI and Prometheus.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import pino from 'pino';
import { InjectedFaultError } from '../../activities/failures';
import { DEFAULT_ROUTE_PROTOCOL } from '../../activities/system/route-table';
import { startApiServer } from '../../api/server';
import { ADDR, NetnsPair } from '../../bench/datapath/netns-pair';
import { BlocklistMaps, removePinnedBlocklist } from '../../bpf/blocklist-maps';
import { buildDatapath } from '../../bpf/build';
import { Datapath } from '../../bpf/datapath';
import { startIngest, type RunningIngest } from '../../ingest/ingest-worker';
import { registerNodeMapMetrics } from '../../metrics/node-collectors';
import { startMetricsServer } from '../../metrics/server';
import { guardConfigSchema } from '../../model/enforcement-guard';
import { CLUSTER_TASK_QUEUE, changeWorkflowId } from '../../model/naming';
import type { Subsystem } from '../../model/subsystem';
import { cacheDir } from '../../scripts/paths';
import { changeWorkflow, confirmUpdate } from '../../workflows/change';
import { testTokens } from '../helpers/api-tokens';
import { describePrivileged } from '../helpers/capabilities';
import { changeFailure, waitForPhase } from '../helpers/change-client';
import { eventually } from '../helpers/eventually';
import { freePort, startPrometheus, type RunningPrometheus } from '../helpers/prometheus';
import { startTemporal, startWorkers, type RunningWorkers } from '../helpers/temporal';

const NODE = 'node-metrics';
/** A node whose worker runs but cannot read its addresses (its namespace is missing). */
const BLIND_NODE = 'node-blind';
const SIZES = { blocklistV4: 1024, blocklistV6: 1024, hostsV4: 1024, hostsV6: 1024, rateLimits: 256 };
const ZONE = 1;
/** The rule id the node's zone default (allow) counts passed packets under. */
const PASS_RULE_ID = 7;

const RULES = {
  name: 'test-metrics',
  rules: [
    {
      name: 'block-severity-1',
      description: 'severity-1 alerts block the source',
      priority: 100,
      eventTypes: ['alert'],
      conditions: { all: [{ fact: 'severity', operator: 'severityAtLeast', value: 1 }] },
      decision: { action: 'block', target: 'src_ip', duration: '1h', escalation: { factor: 2, maxDuration: '2h' }, memory: '5m' },
    },
  ],
};

function alertLine(src: string): string {
  return JSON.stringify({
    timestamp: new Date().toISOString(),
    flow_id: 904992230150281,
    in_iface: 'b0',
    event_type: 'alert',
    src_ip: src,
    src_port: 55641,
    dest_ip: ADDR.b4,
    dest_port: 443,
    proto: 'TCP',
    alert: { action: 'allowed', gid: 1, signature_id: 2024833, rev: 3, signature: 'ET POLICY test alert', category: 'Test', severity: 1 },
  });
}

describePrivileged('fos1 metrics in a real Prometheus scrape (privileged)', ['root', 'netns', 'bpffs', 'temporal-cli', 'prometheus'], () => {
  let env: TestWorkflowEnvironment;
  let pair: NetnsPair;
  let datapath: Datapath;
  let workers: RunningWorkers;
  let api: Server;
  let ingest: RunningIngest;
  let blindWorkers: RunningWorkers;
  let blindIngest: RunningIngest;
  let blindEveFile: string;
  let metricsServer: Server;
  let prometheus: RunningPrometheus;
  let dir: string;
  let eveFile: string;
  let metricsUrl: string;
  let sdkMetricsUrl: string;
  const pinDir = `/sys/fs/bpf/fos1-test-metrics-${randomBytes(4).toString('hex')}`;
  const { authenticator, tokens } = testTokens({ carol: ['admin'] });
  /** The subsystem whose next apply fails (after the kernel changed): the change rolls back. */
  let failNext: Subsystem | undefined;

  beforeAll(async () => {
    const [metricsPort, sdkPort] = [await freePort(), await freePort()];
    metricsUrl = `http://127.0.0.1:${metricsPort}/metrics`;
    sdkMetricsUrl = `http://127.0.0.1:${sdkPort}/metrics`;
    env = await startTemporal({ sdkMetricsAddress: `127.0.0.1:${sdkPort}` });
    pair = NetnsPair.create();
    // The programs first: the workers' blocklist and rate-limit maps are then the datapath's pins.
    datapath = Datapath.load({ pinDir, objects: buildDatapath({ cacheDir: cacheDir() }), sizes: SIZES });
    datapath.attach({ interface: pair.ifB, netns: pair.b });
    datapath.setInterfaceZone({ interface: pair.ifB, netns: pair.b }, ZONE);
    datapath.setZoneDefault(ZONE, { action: 'allow', ruleId: PASS_RULE_ID });
    workers = await startWorkers(
      env,
      NODE,
      { netns: pair.b, routeProtocol: DEFAULT_ROUTE_PROTOCOL, bpfPinDir: pinDir, blocklistMaxEntries: { v4: SIZES.blocklistV4, v6: SIZES.blocklistV6 }, rateLimitMaxEntries: SIZES.rateLimits },
      {
        faults: (subsystem) => {
          if (subsystem !== failNext) return;
          failNext = undefined;
          throw new InjectedFaultError(`injected fault after the ${subsystem} step changed the kernel`);
        },
      },
    );
    // A node worker for BLIND_NODE acting on a namespace that is never created: its protected
    // addresses cannot be read, so enforcement for it must refuse (fail closed).
    blindWorkers = await startWorkers(env, BLIND_NODE, { netns: `fos1-missing-${randomBytes(3).toString('hex')}`, routeProtocol: DEFAULT_ROUTE_PROTOCOL, bpfPinDir: `${pinDir}-blind`, blocklistMaxEntries: { v4: 64, v6: 64 } }, { clusterWorker: false });
    api = await startApiServer({ client: env.client, port: 0, host: '127.0.0.1', logger: pino({ level: 'silent' }), security: { authenticator } });
    dir = mkdtempSync(join(tmpdir(), 'fos1-metrics-'));
    writeFileSync(join(dir, 'rules.json'), JSON.stringify(RULES));
    eveFile = join(dir, 'eve.json');
    writeFileSync(eveFile, '');
    ingest = await startIngest(
      { rulesFile: join(dir, 'rules.json'), guard: guardConfigSchema.parse({ allowLists: { management: ['192.0.2.0/24'] } }), nodes: [NODE], eveFile, eveFrom: 'end', coalesceMs: 1000 },
      { workflows: env.client.workflow, logger: pino({ level: process.env.FOS1_TEST_LOG ?? 'silent' }) },
    );
    blindEveFile = join(dir, 'eve-blind.json');
    writeFileSync(blindEveFile, '');
    blindIngest = await startIngest(
      { rulesFile: join(dir, 'rules.json'), guard: guardConfigSchema.parse({}), nodes: [BLIND_NODE], eveFile: blindEveFile, eveFrom: 'end', coalesceMs: 1000 },
      { workflows: env.client.workflow, logger: pino({ level: process.env.FOS1_TEST_LOG ?? 'silent' }) },
    );
    registerNodeMapMetrics(NODE, pinDir);
    metricsServer = await startMetricsServer({ port: metricsPort, host: '127.0.0.1' });
    prometheus = await startPrometheus([`127.0.0.1:${metricsPort}`, `127.0.0.1:${sdkPort}`]);
  });

  afterAll(async () => {
    await prometheus?.stop();
    metricsServer?.close();
    await ingest?.stop();
    await blindIngest?.stop();
    await blindWorkers?.stop();
    api?.close();
    await workers?.stop();
    datapath?.unpin();
    datapath?.close();
    removePinnedBlocklist(pinDir);
    rmSync(pinDir, { recursive: true, force: true });
    pair?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
    await env?.teardown();
  });

  const routeTo = (destination: string) => ({ patch: { routes: { upsert: [{ destination, gateway: ADDR.a4 }] } } });
  let sequence = 0;
  const start = (body: Record<string, unknown>) => {
    const id = `metrics-${++sequence}-${randomBytes(2).toString('hex')}`;
    return env.client.workflow.start(changeWorkflow, { taskQueue: CLUSTER_TASK_QUEUE, workflowId: changeWorkflowId(id), args: [{ id, author: 'alice', reason: 'metrics test', targets: [NODE], ...body }] });
  };
  /** Every series of `promql` in Prometheus, once it has scraped them (as `{labels} value` lines). */
  const series = async (promql: string) =>
    (
      await eventually(
        () => prometheus.query(promql),
        (r) => r.status === 'success' && (r.data?.result.length ?? 0) > 0,
        `Prometheus to return ${promql}`,
        30_000,
        250,
      )
    ).data!.result;

  test('a change through the API, a rolled-back change, a lock wait, a blocked and a refused alert: every metric is in Prometheus, and promtool accepts the exposition', async () => {
    // Traffic the node's zone default lets through: counted under its rule id.
    expect(pair.ping(ADDR.b4)).toBe(true);
    expect(pair.ping(ADDR.b6)).toBe(true);

    // A real change through the HTTP API.
    const base = `http://127.0.0.1:${(api.address() as AddressInfo).port}`;
    const post = await fetch(`${base}/v1/changes`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tokens.carol}`, 'content-type': 'application/json' },
      body: JSON.stringify({ id: 'metrics-api', reason: 'metrics test', targets: [NODE], ...routeTo('10.61.0.0/24') }),
    });
    expect(post.status).toBe(202);
    expect((await env.client.workflow.getHandle(changeWorkflowId('metrics-api')).result()).phase).toBe('applied');
    expect(execFileSync('ip', ['-n', pair.b, 'route', 'show', 'proto', String(DEFAULT_ROUTE_PROTOCOL)]).toString()).toContain('10.61.0.0/24');

    // A change whose route step fails after the kernel changed: rolled back, verified.
    failNext = 'routes';
    const failed = await changeFailure(await start(routeTo('10.62.0.0/24')));
    expect(failed.type).toBe('ChangeRolledBack');
    expect(failed.status.phase).toBe('rolled-back');

    // Two changes for one node: the second waits for the first's lock until it is confirmed.
    const holder = await start({ ...routeTo('10.63.0.0/24'), options: { confirmTimeout: '5m' } });
    await waitForPhase(holder, 'awaiting-confirmation');
    const waiter = await start(routeTo('10.64.0.0/24'));
    await waitForPhase(waiter, 'waiting-for-node');
    await holder.executeUpdate(confirmUpdate, { args: [{ by: 'alice' }] });
    expect((await holder.result()).phase).toBe('applied');
    expect((await waiter.result()).phase).toBe('applied');

    // A staged rollout: one wave, baked with a gate that passes (b reaches a), committed.
    const reach = { kind: 'reachability' as const, intervalSeconds: 1, count: 2, targets: [{ protocol: 'icmp' as const, address: ADDR.a4, timeoutMs: 500 }] };
    const dead = { kind: 'reachability' as const, intervalSeconds: 1, count: 1, targets: [{ protocol: 'icmp' as const, address: '10.255.0.1', timeoutMs: 300 }] };
    const staged = await start({ ...routeTo('10.65.0.0/24'), strategy: { waves: [{ name: 'only', nodes: [NODE], bakeSeconds: 1, gates: ['reach'] }], gates: { reach } } });
    const stagedStatus = await staged.result();
    expect(stagedStatus.phase).toBe('applied');
    expect(stagedStatus.waves?.[0]?.gateVerdicts.reach?.phase).toBe('success');
    // And one whose gate fails: the wave is restored, the gate measured again after the rollback.
    const gateFailed = await changeFailure(await start({ ...routeTo('10.66.0.0/24'), strategy: { waves: [{ name: 'only', nodes: [NODE], bakeSeconds: 1, gates: ['dead'] }], gates: { dead } } }));
    expect(gateFailed.type).toBe('RolloutGateFailed');
    expect(gateFailed.status.waves?.[0]?.state).toBe('restored');
    expect(gateFailed.status.postRollbackGates?.dead?.phase).toBe('failure');

    // An alert for the node that cannot report its protected addresses: refused by the workflow.
    appendFileSync(blindEveFile, `${alertLine('198.51.100.7')}\n`);

    // An alert about a's IPv6 address (its IPv4 one is the gateway of the routes above, which the
    // guard protects): blocked on the node, and a's IPv6 traffic is dropped there.
    appendFileSync(eveFile, `${alertLine(ADDR.a6)}\nnot json\n${alertLine('192.0.2.10')}\n`);
    const maps = BlocklistMaps.open({ pinDir, maxEntriesV4: SIZES.blocklistV4, maxEntriesV6: SIZES.blocklistV6, hostMaps: { maxEntriesV4: SIZES.hostsV4, maxEntriesV6: SIZES.hostsV6 } });
    try {
      await eventually(() => maps.readAll().map((e) => e.cidr), (cidrs) => cidrs.includes(`${ADDR.a6}/128`), 'the alert source in the blocklist', 60_000);
    } finally {
      maps.close();
    }
    expect(pair.ping(ADDR.b6)).toBe(false);

    // The exposition, as Prometheus reads it, passes promtool's checks.
    const exposition = await (await fetch(metricsUrl)).text();
    const lint = spawnSync('promtool', ['check', 'metrics'], { input: exposition, encoding: 'utf8' });
    expect({ status: lint.status, output: `${lint.stdout}${lint.stderr}` }).toEqual({ status: 0, output: '' });

    // Every metric, from a real Prometheus scrape.
    const labels = async (promql: string) => (await series(promql)).map((s) => s.metric);
    expect(await labels('fos1_changes_total')).toEqual(
      expect.arrayContaining([expect.objectContaining({ outcome: 'applied', failure_type: 'none' }), expect.objectContaining({ outcome: 'rolled-back', failure_type: 'ChangeRolledBack' })]),
    );
    expect(await labels('fos1_node_step_duration_seconds_count')).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ step: 'prepare', subsystem: 'all', result: 'ok' }),
        expect.objectContaining({ step: 'apply', subsystem: 'routes', result: 'ok' }),
        expect.objectContaining({ step: 'apply', subsystem: 'routes', result: 'failed' }),
        expect.objectContaining({ step: 'check', subsystem: 'all', result: 'ok' }),
      ]),
    );
    expect(await labels('fos1_node_rollback_duration_seconds_count')).toEqual(expect.arrayContaining([expect.objectContaining({ subsystem: 'routes', result: 'ok' })]));
    expect(await labels('fos1_node_lock_wait_duration_seconds_count')).toEqual([expect.objectContaining({ result: 'acquired' })]);
    expect(await labels('fos1_rollout_waves_total')).toEqual(
      expect.arrayContaining([expect.objectContaining({ wave: '0', result: 'committed' }), expect.objectContaining({ wave: '0', result: 'restored' })]),
    );
    expect(await labels('fos1_rollout_gate_results_total')).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ wave: '0', gate: 'reach', kind: 'reachability', result: 'success' }),
        expect.objectContaining({ wave: '0', gate: 'dead', kind: 'reachability', result: 'failure' }),
        expect.objectContaining({ wave: 'post-rollback', gate: 'dead', kind: 'reachability', result: 'failure' }),
      ]),
    );
    // Enforcement fails closed for the node that cannot report; the node that can, reported.
    expect(await series(`fos1_node_protected_addresses_unavailable{node="${BLIND_NODE}"} == 1`)).toHaveLength(1);
    expect(await series(`fos1_node_protected_addresses_failures_total{node="${BLIND_NODE}"} > 0`)).toHaveLength(1);
    expect(await series(`fos1_node_protected_addresses_unavailable{node="${NODE}"} == 0`)).toHaveLength(1);
    expect(await series(`fos1_blocklist_entries{node="${NODE}", map="blockhost_v6"} == 1`)).toHaveLength(1);
    expect((await labels('fos1_ratelimit_entries')).map((m) => m.map).sort()).toEqual(['ratelimit_v4', 'ratelimit_v6']);
    expect(Number((await series('fos1_bpf_map_fill_ratio{map="blockhost_v6"}'))[0]!.value[1])).toBeCloseTo(1 / SIZES.hostsV6);
    expect(await labels(`fos1_datapath_rule_packets_total{rule_id="${PASS_RULE_ID}"} > 0`)).toEqual([expect.objectContaining({ action: 'allow' })]);
    expect(await series(`fos1_datapath_rule_bytes_total{rule_id="${PASS_RULE_ID}"} > 0`)).toHaveLength(1);
    // The zone default let a's pings through: passes per reason, from the same counters.
    expect(await series(`fos1_datapath_passes_total{node="${NODE}", reason="zone-default"} > 0`)).toHaveLength(1);
    expect(await series(`fos1_datapath_passes_total{node="${NODE}", reason="zone-rule"}`)).toHaveLength(1);
    // The programs count drops per reason (drop_stats): a's ping after the block was one.
    expect(await series(`fos1_datapath_drops_total{node="${NODE}", reason="blocklist-host"} > 0`)).toHaveLength(1);
    expect((await labels(`fos1_datapath_drops_total{node="${NODE}"}`)).map((m) => m.reason).sort()).toEqual(['blocklist-host', 'blocklist-prefix', 'rate-limit', 'zone-default', 'zone-rule']);
    expect(await labels('fos1_ingest_lines_total')).toEqual(
      expect.arrayContaining([expect.objectContaining({ source: 'eve-file', result: 'accepted' }), expect.objectContaining({ source: 'eve-file', result: 'rejected' })]),
    );
    expect(await labels('fos1_enforcement_decisions_total')).toEqual([expect.objectContaining({ action: 'block' })]);
    expect(await labels('fos1_guard_refusals_total')).toEqual(
      expect.arrayContaining([expect.objectContaining({ code: 'allow-listed', stage: 'ingest' }), expect.objectContaining({ code: 'guard-unavailable', stage: 'workflow' })]),
    );
    expect(await labels('fos1_api_responses_total')).toEqual(expect.arrayContaining([expect.objectContaining({ method: 'POST', route: '/v1/changes', status: '202' })]));
    // The SDK's own metrics, from its exporter: workflow completions and activity latencies.
    expect(await series(`{__name__=~"temporal_workflow_completed.*", instance="${new URL(sdkMetricsUrl).host}"}`)).not.toHaveLength(0);
    expect(await series(`{__name__=~"temporal_activity_execution_latency.*", instance="${new URL(sdkMetricsUrl).host}"}`)).not.toHaveLength(0);
  }, 300_000);
});
