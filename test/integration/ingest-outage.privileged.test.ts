/**
 * No alert lost while Temporal is away, on real parts: the Temporal dev server with its
 * history in a SQLite file (stopped and started again on the same port), the enforcement,
 * coordinator and change workflows, a node worker writing the real pinned blocklist map of
 * a network namespace, and the ingest worker (EVE file tail with a saved position, NDJSON
 * over HTTP, decision spool on disk) with its own long-lived client connection, as a
 * separate ingest process would have.
 *
 * Then a flood of distinct sources against a small cap on active blocks: the map never
 * holds more than the cap.
 */
import { randomBytes } from 'node:crypto';
import { appendFileSync, copyFileSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Client, Connection } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import pino from 'pino';
import { BlocklistMaps, removePinnedBlocklist } from '../../bpf/blocklist-maps';
import { DEFAULT_ROUTE_PROTOCOL } from '../../activities/system/route-table';
import { INGEST_CHANNEL_ARGS } from '../../ingest/config';
import { readTailPosition } from '../../ingest/eve-tail';
import { startIngest, type IngestStartConfig, type RunningIngest } from '../../ingest/ingest-worker';
import { enforcementWorkflowId } from '../../model/enforcement-decision';
import { guardConfigSchema } from '../../model/enforcement-guard';
import { enforcementQuery, liftSignal } from '../../workflows/enforcement';
import { coordinatorQuery, ENFORCEMENT_COORDINATOR_ID } from '../../workflows/enforcement-coordinator';
import { testTokens } from '../helpers/api-tokens';
import { describePrivileged } from '../helpers/capabilities';
import { eventually } from '../helpers/eventually';
import { TestNamespace } from '../helpers/netns';
import { startTemporal, startWorkers, type RunningWorkers } from '../helpers/temporal';

const NODE = 'node-outage';

const RULES = {
  name: 'test-outage',
  rules: [
    {
      name: 'block-severity-1',
      description: 'severity-1 alerts block the source',
      priority: 100,
      eventTypes: ['alert'],
      conditions: { all: [{ fact: 'severity', operator: 'severityAtLeast', value: 1 }] },
      // Long enough not to expire (or be extended) while the test looks.
      decision: { action: 'block', target: 'src_ip', duration: '30m', memory: '5m' },
    },
  ],
};

function alertLine(src: string): string {
  return JSON.stringify({
    timestamp: new Date().toISOString(),
    flow_id: 904992230150281,
    in_iface: 'lan0',
    event_type: 'alert',
    src_ip: src,
    src_port: 55641,
    dest_ip: '192.0.2.70',
    dest_port: 443,
    proto: 'TCP',
    alert: { action: 'allowed', gid: 1, signature_id: 2024833, rev: 3, signature: 'ET POLICY test', category: 'Test', severity: 1 },
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

describePrivileged('ingest keeps alerts while Temporal is away (privileged)', ['root', 'netns', 'bpffs', 'temporal-cli'], () => {
  let dir: string;
  let dbFilename: string;
  let temporalPort: number;
  let env: TestWorkflowEnvironment | undefined;
  let workers: RunningWorkers | undefined;
  let ns: TestNamespace;
  let pinDir: string;
  let maps: BlocklistMaps;
  let connection: Connection;
  let client: Client;
  let ingest: RunningIngest | undefined;
  const logger = pino({ level: process.env.FOS1_TEST_LOG ?? 'silent' });
  const { authenticator, tokens } = testTokens({ sensor: ['ingest'] });

  /** The cluster worker's guard (its caps are the ones enforced); the flood test lowers the cap. */
  let workerGuard = guardConfigSchema.parse({});
  const startServer = async () => {
    env = await startTemporal({ dbFilename, port: temporalPort });
    workers = await startWorkers(env, NODE, { netns: ns.name, routeProtocol: DEFAULT_ROUTE_PROTOCOL, bpfPinDir: pinDir, blocklistMaxEntries: { v4: 4096, v6: 64 } }, { guard: () => workerGuard });
  };
  const stopServer = async () => {
    await workers?.stop();
    workers = undefined;
    await env?.teardown();
    env = undefined;
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'fos1-outage-'));
    dbFilename = join(dir, 'temporal.db');
    temporalPort = await freePort();
    ns = TestNamespace.create('fos1o');
    pinDir = `/sys/fs/bpf/fos1-outage-${randomBytes(4).toString('hex')}`;
    await startServer();
    maps = BlocklistMaps.open({ pinDir, maxEntriesV4: 4096, maxEntriesV6: 64, hostMaps: { maxEntriesV4: 4096, maxEntriesV6: 64 } });
    // The ingest worker's own connection: it outlives the server's restart, as in a separate process.
    // No gRPC-level retry interceptor: the bridge's spool is what retries here, and a call left
    // retrying on a timer when the file ends would fire on a shut channel in the next file.
    // (The ingest's stop() now waits for the bridge's own calls, but with the interceptor on,
    // retries still fire on a shut channel during this file: see the cleanups report.)
    connection = await Connection.connect({ address: `127.0.0.1:${temporalPort}`, channelArgs: { ...INGEST_CHANNEL_ARGS }, interceptors: [] });
    client = new Client({ connection });
    writeFileSync(join(dir, 'rules.json'), JSON.stringify(RULES));
  });

  afterAll(async () => {
    await ingest?.stop();
    // The test's client goes before the server: closed after it, a call still retrying
    // against the stopped server would fire on a shut channel during the next test file.
    await connection?.close();
    await stopServer();
    maps?.close();
    if (pinDir) removePinnedBlocklist(pinDir);
    ns?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const entries = () => maps.readAll().map((e) => e.cidr);
  /** The coordinator's state; undefined while the loaded worker cannot answer a query in time. */
  const coordinator = () =>
    client.workflow
      .getHandle(ENFORCEMENT_COORDINATOR_ID)
      .query(coordinatorQuery)
      .catch(() => undefined);
  const query = (target: string) => client.workflow.getHandle(enforcementWorkflowId(target)).query(enforcementQuery);

  test('alerts from the EVE file and over HTTP while Temporal is down are kept, survive an ingest restart, and are all blocked once it is back; the tail position is right; replaying them is harmless', async () => {
    const eveFile = join(dir, 'eve.json');
    writeFileSync(eveFile, '');
    const httpPort = await freePort();
    const config: IngestStartConfig = {
      rulesFile: join(dir, 'rules.json'),
      guard: guardConfigSchema.parse({ allowLists: { management: ['10.77.0.0/24'] } }),
      nodes: [NODE],
      eveFile,
      eveFrom: 'end',
      eveStateFile: `${eveFile}.fos1-position.json`,
      stateDir: join(dir, 'ingest-state'),
      httpPort,
      coalesceMs: 1000,
      retryBackoffMs: { initial: 250, max: 2000 },
    };
    const start = () => startIngest(config, { workflows: client.workflow, logger, authenticator });
    const post = (lines: string[]) =>
      fetch(`http://127.0.0.1:${httpPort}/v1/eve`, { method: 'POST', headers: { authorization: `Bearer ${tokens.sensor}`, 'content-type': 'application/x-ndjson' }, body: lines.join('\n') });
    const savedPosition = async () => (await readTailPosition(config.eveStateFile!))?.position;
    ingest = await start();

    // Up: the path works (and the coordinator exists).
    appendFileSync(eveFile, `${alertLine('198.51.100.40')}\n`);
    await eventually(entries, (e) => e.includes('198.51.100.40/32'), 'the block made while Temporal is up', 60_000);
    await stopServer();
    const fileSources = ['198.51.100.41', '198.51.100.42', '198.51.100.43'];
    const httpSources = ['203.0.113.41', '203.0.113.42'];
    appendFileSync(eveFile, fileSources.map((s) => `${alertLine(s)}\n`).join(''));
    // 200 only once the verdicts are on disk in the spool.
    const answer = await post(httpSources.map(alertLine));
    expect(answer.status).toBe(200);
    expect(await answer.json()).toMatchObject({ lines: 2, accepted: 2, rejected: 0 });
    await eventually(() => ingest!.spool.pending, (n) => n === 5, 'five verdicts kept in the spool', 90_000, 100);
    // The tail moved past the lines only because their verdicts are kept.
    await eventually(savedPosition, (p) => p === statSync(eveFile).size, 'the tail position at the end of the file');
    expect(ingest.bridge.counts.failed).toBe(0);

    // The ingest worker restarts while Temporal is still down: the spool and the position survive.
    // Its stop waits for the calls the client was still retrying (admissions it stopped waiting for).
    await ingest.stop();
    expect(ingest.bridge.callsInFlight).toBe(0);
    ingest = await start();
    expect(ingest.spool.stats.recovered).toBe(5);
    expect(ingest.tail!.stats.resumed).toBe(true);
    appendFileSync(eveFile, `${alertLine('198.51.100.44')}\n`);
    await eventually(() => ingest!.spool.pending, (n) => n === 6, 'the alert after the restart kept too', 90_000, 100);
    // Only the new line was read: nothing re-read, nothing skipped.
    expect(ingest.tail!.stats.lines).toBe(1);
    // A copy of the spool as it is now: a crash that loses the delivery bookkeeping would leave this.
    copyFileSync(join(config.stateDir!, 'decisions.spool'), join(dir, 'spool-copy'));
    await startServer();
    const all = [...fileSources, ...httpSources, '198.51.100.44'].map((s) => `${s}/32`);
    await eventually(entries, (e) => all.every((t) => e.includes(t)), 'every kept alert blocked in the map', 120_000, 250);
    await eventually(() => ingest!.spool.pending, (n) => n === 0, 'the spool delivered');
    expect(statSync(join(config.stateDir!, 'decisions.spool')).size).toBe(0);
    expect(ingest.bridge.delivery.delivered).toBe(6);
    expect(await savedPosition()).toBe(statSync(eveFile).size);
    // The map holds the entry before the workflow records the finished change: wait for that.
    for (const t of all) expect(await eventually(() => query(t), (s) => s.offences > 0, `${t}'s workflow to record its block`)).toMatchObject({ offences: 1, blocks: [expect.anything()] });

    // Replay (as after a crash before the spool's head was saved): every verdict is delivered
    // again, to the same per-target workflow, and changes nothing.
    await ingest.stop();
    copyFileSync(join(dir, 'spool-copy'), join(config.stateDir!, 'decisions.spool'));
    writeFileSync(join(config.stateDir!, 'decisions.spool.head'), '{"head":0}\n');
    ingest = await start();
    expect(ingest.spool.stats.recovered).toBe(6);
    await eventually(() => ingest!.spool.pending, (n) => n === 0, 'the replay delivered');
    for (const t of all) {
      const status = await eventually(() => query(t), (s) => s.verdictsReceived >= 2, `the replayed verdict reaching ${t}`);
      expect(status).toMatchObject({ offences: 1, blocks: [expect.anything()], phase: 'active' });
    }
    expect(entries().sort()).toEqual(['198.51.100.40/32', ...all].sort());

    // Lift them (the flood test starts from an empty map).
    for (const t of ['198.51.100.40/32', ...all]) await client.workflow.getHandle(enforcementWorkflowId(t)).signal(liftSignal, { by: 'test', reason: 'done' });
    await eventually(entries, (e) => e.length === 0, 'every block lifted', 120_000, 250);
    await eventually(coordinator, (c) => c?.activeBlocks.length === 0, 'the coordinator to count no active block');
    await ingest.stop();
    ingest = undefined;
  }, 600_000);

  test('a flood of 300 distinct sources: active blocks never exceed the cap, the ingest memory stays bounded', async () => {
    const CAP = 5;
    // The caps the workflows enforce are the cluster worker's; a new coordinator run reads them at once.
    workerGuard = guardConfigSchema.parse({ maxActiveBlocks: CAP, maxNewBlocksPerMinute: 100_000 });
    await env?.client.workflow.getHandle(ENFORCEMENT_COORDINATOR_ID).terminate('caps changed').catch(() => undefined);
    // 300 on the real server (each source is a workflow that asks the coordinator and is
    // refused); the unit flood test takes the pipeline alone through 100,000 sources.
    const N = 300;
    const httpPort = await freePort();
    ingest = await startIngest(
      {
        rulesFile: join(dir, 'rules.json'),
        guard: guardConfigSchema.parse({ maxActiveBlocks: CAP, maxNewBlocksPerMinute: 100_000 }),
        nodes: [NODE],
        eveFrom: 'end',
        stateDir: join(dir, 'flood-state'),
        httpPort,
        coalesceMs: 1000,
        maxRecentTargets: 100,
      },
      { workflows: client.workflow, logger, authenticator },
    );
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    gc();
    const heapBefore = process.memoryUsage().heapUsed;
    let peak = 0;
    const sampler = setInterval(() => (peak = Math.max(peak, maps.readAll().length)), 100);
    try {
      const sources = Array.from({ length: N }, (_, i) => `10.${100 + (i >> 8)}.${i & 255}.7`);
      for (let i = 0; i < N; i += 100) {
        const res = await fetch(`http://127.0.0.1:${httpPort}/v1/eve`, {
          method: 'POST',
          headers: { authorization: `Bearer ${tokens.sensor}`, 'content-type': 'application/x-ndjson' },
          body: sources.slice(i, i + 100).map(alertLine).join('\n'),
        });
        expect(res.status).toBe(200);
      }
      await ingest.pipeline.drain();
      expect(ingest.bridge.counts.signalled).toBe(N);
      expect(ingest.bridge.recentTargets).toBeLessThanOrEqual(100);
      // The cap is saturated: every slot is an active block or an admission not yet claimed
      // (on a loaded machine some admissions are still reservations when the flood ends).
      const state = await eventually(coordinator, (c) => c !== undefined && c.activeBlocks.length + (c.reservations?.length ?? 0) >= CAP && c.refused > 0, 'the cap reached and refusing', 180_000, 500);
      expect(state!.activeBlocks.length).toBeLessThanOrEqual(CAP);
      // Every admission is claimed by its workflow once its block is in the map: the map fills
      // to exactly the cap (never past it, checked by the sampler) and the coordinator agrees.
      await eventually(() => maps.readAll().length, (n) => n === CAP, 'the map filled to the cap', 120_000, 250);
      await eventually(coordinator, (c) => c?.activeBlocks.length === CAP, 'the coordinator to count the cap as active blocks', 120_000, 250);
      gc();
      const grown = process.memoryUsage().heapUsed - heapBefore;
      console.log(`flood of ${N}: peak ${peak} blocks in the map (cap ${CAP}); heapUsed of the test process grew ${(grown / 1024 / 1024).toFixed(1)} MiB`);
      expect(peak).toBeLessThanOrEqual(CAP);
      expect(maps.readAll().length).toBe(CAP);
      // This process also runs the Temporal client and the workers (whose workflow cache
      // holds the 300 runs); the ingest's own state is capped (100 coalescing entries, an
      // empty spool). 96 MiB bounds the whole process; the unit flood test bounds the
      // ingest pipeline alone over 100,000 sources.
      expect(grown).toBeLessThan(96 * 1024 * 1024);
    } finally {
      clearInterval(sampler);
    }
  }, 600_000);
});
