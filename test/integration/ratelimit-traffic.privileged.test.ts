/**
 * Per-source rate limits end to end with real traffic: a change request (as the
 * enforcement workflow sends for a `rate-limit` verdict) goes through the change
 * workflow to the node worker of one namespace of a veth pair, which writes the pinned
 * `ratelimit_v4` map; fos1's TC ingress program there drops the source's packets above
 * the rate (GCRA) and reports them on the ring buffer. A failing change rolls the limit
 * back, verified by reading the map back.
 *
 * Privileged: root, netns, bpffs, the Temporal CLI, iproute2 and ping.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import type { WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { InjectedFaultError } from '../../activities/failures';
import { DEFAULT_ROUTE_PROTOCOL } from '../../activities/system/route-table';
import { ADDR, NetnsPair } from '../../bench/datapath/netns-pair';
import { buildDatapath } from '../../bpf/build';
import { Datapath } from '../../bpf/datapath';
import type { DropEvent } from '../../bpf/datapath-codec';
import { RateLimitMaps } from '../../bpf/ratelimit-maps';
import type { ChangeRequestInput } from '../../model/change-request';
import type { Subsystem } from '../../model/subsystem';
import { CLUSTER_TASK_QUEUE, changeWorkflowId } from '../../model/naming';
import { cacheDir } from '../../scripts/paths';
import { startIngest, type RunningIngest } from '../../ingest/ingest-worker';
import { enforcementWorkflowId } from '../../model/enforcement-decision';
import { guardConfigSchema } from '../../model/enforcement-guard';
import { changeWorkflow } from '../../workflows/change';
import { enforcementQuery } from '../../workflows/enforcement';
import { describePrivileged } from '../helpers/capabilities';
import { changeFailure } from '../helpers/change-client';
import { startTemporal, startWorkers, type RunningWorkers } from '../helpers/temporal';
import { eventually } from '../helpers/eventually';

const NODE = 'node-rl';
const SIZES = { blocklistV4: 256, blocklistV6: 256, hostsV4: 256, hostsV6: 256 };
const FLOOD = 100; // echo requests, 10 ms apart: about one second of traffic
const PPS = 5;
const LIMIT_SECONDS = 6;

/** A rule set whose only rule rate-limits the source of any alert. */
const RULES = {
  name: 'rate-limit-test',
  rules: [
    {
      name: 'rate-limit-flooders',
      description: 'alerts about floods rate-limit the source',
      priority: 100,
      eventTypes: ['alert'],
      conditions: { all: [{ fact: 'severity', operator: 'severityAtLeast', value: 1 }] },
      decision: { action: 'rate-limit', target: 'src_ip', duration: `${LIMIT_SECONDS}s`, memory: '1m', rateLimitPps: PPS },
    },
  ],
};

function alertLine(src: string, dest: string): string {
  return JSON.stringify({
    timestamp: new Date().toISOString(),
    flow_id: 7,
    event_type: 'alert',
    src_ip: src,
    dest_ip: dest,
    proto: 'ICMP',
    alert: { action: 'allowed', signature_id: 2100384, signature: 'GPL ICMP PING flood', category: 'Misc activity', severity: 1 },
  });
}

describePrivileged('per-source rate limits through the change workflow and the eBPF datapath (privileged)', ['root', 'netns', 'bpffs', 'iproute2', 'temporal-cli'], () => {
  let pair: NetnsPair;
  let pinDir: string;
  let datapath: Datapath;
  let limits: RateLimitMaps;
  let env: TestWorkflowEnvironment;
  let workers: RunningWorkers;
  let sequence = 0;
  /** The subsystem whose next apply fails after changing the kernel (a test fault). */
  let failAt: Subsystem | undefined;

  beforeAll(async () => {
    pair = NetnsPair.create();
    pinDir = `/sys/fs/bpf/fos1-rl-${randomBytes(4).toString('hex')}`;
    // The datapath creates and pins the maps; the node worker opens the same pins.
    datapath = Datapath.load({ pinDir, objects: buildDatapath({ cacheDir: cacheDir() }), sizes: SIZES });
    datapath.attach({ interface: pair.ifB, netns: pair.b });
    limits = RateLimitMaps.open({ pinDir, maxEntries: 64 });
    env = await startTemporal();
    workers = await startWorkers(
      env,
      NODE,
      { netns: pair.b, routeProtocol: DEFAULT_ROUTE_PROTOCOL, bpfPinDir: pinDir, blocklistMaxEntries: { v4: SIZES.blocklistV4, v6: SIZES.blocklistV6 } },
      {
        faults: (subsystem) => {
          if (subsystem === failAt) throw new InjectedFaultError(`injected fault after the ${subsystem} step changed the maps`);
        },
      },
    );
  });

  afterAll(async () => {
    await workers?.stop();
    await env?.teardown();
    limits?.close();
    datapath?.close();
    pair?.destroy();
    if (pinDir) rmSync(pinDir, { recursive: true, force: true });
  });

  function request(overrides: Partial<ChangeRequestInput>): ChangeRequestInput {
    sequence++;
    return { id: `rl-${sequence}-${randomBytes(2).toString('hex')}`, author: 'fos1-enforcer', reason: 'rate-limit verdict', targets: [NODE], ...overrides } as ChangeRequestInput;
  }
  const start = (req: ChangeRequestInput): Promise<WorkflowHandle<typeof changeWorkflow>> =>
    env.client.workflow.start(changeWorkflow, { taskQueue: CLUSTER_TASK_QUEUE, workflowId: changeWorkflowId(req.id), args: [req] });

  /** Sends FLOOD echo requests 10 ms apart from the client namespace; returns how many were answered. */
  const flood = (to: string) =>
    new Promise<number>((resolve, reject) =>
      execFile('ip', ['netns', 'exec', pair.a, 'ping', '-n', '-q', '-c', String(FLOOD), '-i', '0.01', '-W', '1', to], { timeout: 20_000 }, (err, stdout) => {
        const m = /(\d+) packets transmitted, (\d+) received/.exec(stdout);
        if (!m) reject(err ?? new Error(`unexpected ping output: ${stdout}`));
        else resolve(Number(m[2]));
      }),
    );

  test('a limited source gets about its rate through, other sources and families are untouched, and lifting the limit restores it', async () => {
    expect(await flood(ADDR.b4)).toBeGreaterThanOrEqual(FLOOD - 2); // the baseline: no limit, (almost) nothing lost

    const applied = await (await start(request({ patch: { rateLimits: { upsert: [{ cidr: ADDR.a4, pps: PPS, burst: PPS, reason: 'ICMP flood' }] } } }))).result();
    expect(applied.phase).toBe('applied');
    expect(applied.nodes[NODE]?.diff).toEqual([`+ rate-limit ${ADDR.a4}/32 ${PPS} pps burst ${PPS}`]);
    expect(limits.readAll()).toEqual([{ cidr: `${ADDR.a4}/32`, pps: PPS, burst: PPS }]);

    const events: DropEvent[] = [];
    const consumer = datapath.events((e) => events.push(e));
    try {
      consumer.consume();
      events.length = 0;
      const answered = await flood(ADDR.b4);
      // ~1 s of traffic at 5 pps with a burst of 5: about 10 get through. The bounds leave
      // room for ping's timing on a loaded machine, and are far from the 100 sent.
      expect(answered).toBeGreaterThanOrEqual(PPS);
      expect(answered).toBeLessThanOrEqual(4 * PPS);
      consumer.consume();
    } finally {
      consumer.close();
    }
    expect(events.length).toBeGreaterThan(50);
    expect(events[0]).toMatchObject({ reason: 'rate-limit', action: 'deny', hook: 'tc-ingress', source: ADDR.a4, matched: `${ADDR.a4}/32`, protocol: 1 });
    expect(datapath.entryCounter(`${ADDR.a4}/32`).packets).toBeGreaterThanOrEqual(events.length);
    // Another address of the same client (IPv6) is another source: not limited.
    expect(await flood(ADDR.b6)).toBeGreaterThanOrEqual(FLOOD - 2);

    const lifted = await (await start(request({ patch: { rateLimits: { remove: [ADDR.a4] } } }))).result();
    expect(lifted.nodes[NODE]?.diff).toEqual([`- rate-limit ${ADDR.a4}/32 ${PPS} pps burst ${PPS}`]);
    expect(limits.readAll()).toEqual([]);
    expect(await flood(ADDR.b4)).toBeGreaterThanOrEqual(FLOOD - 2);
  });

  test('a rate-limit verdict from the IDS limits the source on the node, and the limit lifts at expiry', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fos1-rl-'));
    let ingest: RunningIngest | undefined;
    try {
      writeFileSync(join(dir, 'rules.json'), JSON.stringify(RULES));
      const eveFile = join(dir, 'eve.json');
      writeFileSync(eveFile, '');
      ingest = await startIngest(
        { rulesFile: join(dir, 'rules.json'), guard: guardConfigSchema.parse({ allowLists: { management: ['192.0.2.0/24'] } }), nodes: [NODE], eveFile, eveFrom: 'end', coalesceMs: 1000 },
        { workflows: env.client.workflow, logger: pino({ level: process.env.FOS1_TEST_LOG ?? 'silent' }) },
      );
      appendFileSync(eveFile, `${alertLine(ADDR.a4, ADDR.b4)}\n`);
      const [limit] = await eventually(() => limits.readAll(), (l) => l.length === 1, 'the rate limit to reach the node');
      expect(limit).toMatchObject({ cidr: `${ADDR.a4}/32`, pps: PPS, burst: PPS });
      expect(limit?.expiresAt).toBeGreaterThan(Date.now() / 1000);
      expect(await flood(ADDR.b4)).toBeLessThanOrEqual(4 * PPS);

      // The durable timer lifts it through another change; the source gets its full rate back.
      await eventually(() => limits.readAll(), (l) => l.length === 0, 'the rate limit to be lifted at expiry', (LIMIT_SECONDS + 30) * 1000);
      expect(await flood(ADDR.b4)).toBeGreaterThanOrEqual(FLOOD - 2);
      const status = await env.client.workflow.getHandle(enforcementWorkflowId(`${ADDR.a4}/32`)).query(enforcementQuery);
      expect(status.audit.map((a) => `${a.step}:${a.result}`)).toEqual(['rate-limit:ok', 'lift:ok']);
    } finally {
      await ingest?.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a change whose later step fails rolls the rate limit back, read back from the map', async () => {
    const { type, status } = await changeFailure(
      await start(
        request({
          patch: {
            rateLimits: { upsert: [{ cidr: ADDR.a4, pps: 1, reason: 'will be rolled back' }] },
            // The blocklist step runs after the rate limits; an entry past the host map's size fails it.
            blocklist: { upsert: Array.from({ length: SIZES.hostsV4 + 1 }, (_, i) => ({ cidr: `198.18.${i >> 8}.${i & 255}`, reason: 'overflow' })) },
          },
        }),
      ),
    );
    expect(type).toBe('ChangeRolledBack');
    expect(status.nodes[NODE]?.error?.type).toBe('BlocklistMapFull');
    const steps = status.audit.filter((r) => r.node === NODE).map((r) => `${r.step}:${r.result}`);
    expect(steps).toEqual(expect.arrayContaining(['ratelimits:ok', 'blocklist:failed', 'restore ratelimits:ok', 'verify rollback:ok']));
    expect(limits.readAll()).toEqual([]);
    expect(await flood(ADDR.b4)).toBeGreaterThanOrEqual(FLOOD - 2);
  });

  test('a rate-limit-only patch reads and snapshots only the sources it touches, and a failure after its step restores them, verified by read-back', async () => {
    const existing = await (await start(request({ patch: { rateLimits: { upsert: [{ cidr: ADDR.a4, pps: 50, reason: 'existing limit' }] } } }))).result();
    expect(existing.phase).toBe('applied');
    const before = limits.readAll();
    expect(before).toEqual([{ cidr: `${ADDR.a4}/32`, pps: 50, burst: 50 }]);

    failAt = 'ratelimits';
    let status;
    try {
      const failed = await changeFailure(
        await start(request({ patch: { rateLimits: { upsert: [{ cidr: ADDR.a4, pps: PPS, reason: 'tighter' }, { cidr: ADDR.a6, pps: PPS, reason: 'new source' }] } } })),
      );
      expect(failed.type).toBe('ChangeRolledBack');
      status = failed.status;
    } finally {
      failAt = undefined;
    }
    expect(status.nodes[NODE]?.error?.type).toBe('InjectedFault');
    const records = status.audit.filter((r) => r.node === NODE);
    // Nothing but the rate limits is snapshotted, applied, restored or verified…
    expect(records.map((r) => `${r.step}:${r.result}`)).toEqual(['snapshot:ok', 'plan:ok', 'ratelimits:failed', 'restore ratelimits:ok', 'verify rollback:ok']);
    // …and of those, only the two sources the patch names: one had a limit, one had none.
    expect(records[0]?.detail).toBe('2 touched rate-limited sources (1 present)');
    expect(limits.readAll()).toEqual(before);

    // The node was asked to read only the rate limits, and every step named only them.
    const history = await env.client.workflow.getHandle(`node-change/${NODE}`).fetchHistory();
    const calls = (history.events ?? []).flatMap((e) => {
      const scheduled = e.activityTaskScheduledEventAttributes;
      const data = scheduled?.input?.payloads?.[0]?.data;
      // The node's own activities (the durable audit's appends run on the cluster queue).
      return scheduled && data && scheduled.activityType?.name !== 'appendAudit' ? [{ activity: scheduled.activityType?.name, input: JSON.parse(Buffer.from(data).toString()) as Record<string, unknown> }] : [];
    });
    expect(calls.map((c) => c.activity)).toEqual(['prepareSubsystems', 'applySubsystem', 'restoreSubsystem', 'checkSubsystems']);
    expect(Object.keys(calls[0]?.input.intents as object)).toEqual(['ratelimits']);
    expect(calls.slice(1, 3).map((c) => c.input.subsystem)).toEqual(['ratelimits', 'ratelimits']);
    expect(Object.keys(calls[3]?.input.checks as object)).toEqual(['ratelimits']);

    const lifted = await (await start(request({ patch: { rateLimits: { remove: [ADDR.a4] } } }))).result();
    expect(lifted.phase).toBe('applied');
    expect(limits.readAll()).toEqual([]);
  });
});
