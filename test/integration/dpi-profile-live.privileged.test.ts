/**
 * A DPIProfile that blocks an application, end to end with real parts: a kube-apiserver
 * (k8s/harness.ts) holding the profile, the ingest following it (ingest/dpi-profile-controller.ts),
 * ndpiReader capturing on a sandbox router's LAN interface, Temporal running the enforcement
 * and change workflows, the node worker writing the pinned blocklist maps, fos1's eBPF
 * datapath dropping traffic on the router's WAN interface.
 *
 *   netns L  (local host)   l0 10.91.1.2/24 ─── rl0 10.91.1.1/24 ┐
 *   netns L2 (local host)   m0 10.91.3.2/24 ─── rm0 10.91.3.1/24 ├ netns R (router; ndpiReader on rl0,
 *   netns X  (remote hosts) x0 10.91.2.2/24 ─── rw0 10.91.2.1/24 ┘          datapath on rw0, default via 10.91.2.2)
 *                              + .10 .11 .12
 *
 * The BitTorrent flows are real TCP connections through the router carrying the protocol's
 * handshake (BEP 3: "\x13BitTorrent protocol", 8 reserved bytes, info-hash, peer id — the
 * bytes every flow of ../shared/data/ndpi/pcap/bittorrent.pcap opens with), which nDPI
 * classifies as BitTorrent as it does in the capture.
 */
import { execFile, execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import pino from 'pino';
import { DEFAULT_ROUTE_PROTOCOL } from '../../activities/system/route-table';
import { BlocklistMaps } from '../../bpf/blocklist-maps';
import { buildDatapath } from '../../bpf/build';
import { Datapath } from '../../bpf/datapath';
import { startIngest, type RunningIngest } from '../../ingest/ingest-worker';
import type { KubeApiServer } from '../../k8s/harness';
import type { StoredObject } from '../../k8s/client';
import { guardConfigSchema } from '../../model/enforcement-guard';
import { cacheDir } from '../../scripts/paths';
import { eventually } from '../helpers/eventually';
import { describeKube, startKubeWithCrds } from '../helpers/kube';
import { sharedData } from '../helpers/shared-data';
import { startTemporal, startWorkers, type RunningWorkers } from '../helpers/temporal';

const NODE = 'node-dpi';
const NS = 'edge';
const SIZES = { blocklistV4: 1024, blocklistV6: 1024, hostsV4: 1024, hostsV6: 1024 };
const IP = { l: '10.91.1.2', r: '10.91.1.1', l2: '10.91.3.2', gw: '10.91.2.2', peer1: '10.91.2.10', peer2: '10.91.2.11', other: '10.91.2.12' } as const;
const BT_PORT = 6881;
const PLAIN_PORT = 8080;

// A peer: listens on the BitTorrent port (answers a handshake with one) and a plain port.
const SERVER = `
const net = require('node:net');
const hs = Buffer.concat([Buffer.from([19]), Buffer.from('BitTorrent protocol'), Buffer.alloc(8), Buffer.alloc(20, 0xab), Buffer.from('-FO0001-' + 'x'.repeat(12))]);
for (const port of [${BT_PORT}, ${PLAIN_PORT}]) net.createServer((s) => { s.on('error', () => {}); s.once('data', () => { if (port === ${BT_PORT}) s.write(hs); s.end(); }); }).listen(port, '0.0.0.0');
setTimeout(() => process.stdout.write('ready\\n'), 100);
`;
// Opens a BitTorrent connection (from a given local address) and exchanges handshakes.
const CLIENT = `
const net = require('node:net');
const [host, port, from] = process.argv.slice(1);
const hs = Buffer.concat([Buffer.from([19]), Buffer.from('BitTorrent protocol'), Buffer.alloc(8), Buffer.alloc(20, 0xcd), Buffer.from('-FO0001-' + 'y'.repeat(12))]);
const s = net.connect({ host, port: Number(port), localAddress: from || undefined }, () => s.write(hs));
s.setTimeout(2000, () => process.exit(2));
s.on('data', () => { s.end(); process.exit(0); });
s.on('error', () => process.exit(1));
`;

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: 'pipe' });
}

const readerMissing = (spawnSync('ndpiReader', ['-h'], { stdio: 'ignore' }).error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
if (readerMissing && process.env.CI !== 'true') console.warn('SKIPPED "a DPIProfile blocks an application" — ndpiReader is not installed (libndpi-bin)');
const suite = readerMissing && process.env.CI !== 'true' ? (name: string, _needs: unknown, body: () => void) => describe.skip(name, body) : describeKube;

suite('a DPIProfile blocks an application on a sandbox router (privileged)', ['root', 'netns', 'bpffs', 'iproute2', 'temporal-cli', 'shared-data'], () => {
  const tag = randomBytes(3).toString('hex');
  const ns = { l: `fos1dpi-${tag}-l`, l2: `fos1dpi-${tag}-l2`, r: `fos1dpi-${tag}-r`, x: `fos1dpi-${tag}-x` };
  const servers: ChildProcess[] = [];
  let pinDir: string;
  let datapath: Datapath;
  let maps: BlocklistMaps;
  let kube: KubeApiServer;
  let env: TestWorkflowEnvironment;
  let workers: RunningWorkers;
  let ingest: RunningIngest;
  let dir: string;

  async function startPeer(netns: string): Promise<void> {
    const child = spawn('ip', ['netns', 'exec', netns, process.execPath, '-e', SERVER], { stdio: ['ignore', 'pipe', 'inherit'] });
    servers.push(child);
    await new Promise<void>((resolve, reject) => {
      child.stdout!.once('data', () => resolve());
      child.once('exit', (code) => reject(new Error(`peer in ${netns} exited with ${code}`)));
    });
  }

  beforeAll(async () => {
    const objects = buildDatapath({ cacheDir: cacheDir() });
    for (const n of Object.values(ns)) {
      ip('netns', 'add', n);
      ip('-n', n, 'link', 'set', 'lo', 'up');
    }
    for (const [peer, dev, rdev, addr, raddr] of [
      [ns.l, 'l0', 'rl0', `${IP.l}/24`, `${IP.r}/24`],
      [ns.l2, 'm0', 'rm0', `${IP.l2}/24`, '10.91.3.1/24'],
      [ns.x, 'x0', 'rw0', `${IP.gw}/24`, '10.91.2.1/24'],
    ] as const) {
      ip('-n', ns.r, 'link', 'add', rdev, 'type', 'veth', 'peer', 'name', dev, 'netns', peer);
      ip('-n', ns.r, 'addr', 'add', raddr, 'dev', rdev);
      ip('-n', peer, 'addr', 'add', addr, 'dev', dev);
      ip('-n', ns.r, 'link', 'set', rdev, 'up');
      ip('-n', peer, 'link', 'set', dev, 'up');
    }
    for (const a of [IP.peer1, IP.peer2, IP.other]) ip('-n', ns.x, 'addr', 'add', `${a}/24`, 'dev', 'x0');
    ip('-n', ns.l, 'route', 'add', 'default', 'via', IP.r);
    ip('-n', ns.l2, 'route', 'add', 'default', 'via', '10.91.3.1');
    ip('-n', ns.x, 'route', 'add', '10.91.0.0/16', 'via', '10.91.2.1');
    // The way out: the default route leaves through rw0, so rw0's subnet is outside.
    ip('-n', ns.r, 'route', 'add', 'default', 'via', IP.gw);
    execFileSync('ip', ['netns', 'exec', ns.r, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);

    pinDir = `/sys/fs/bpf/fos1-dpi-${tag}`;
    datapath = Datapath.load({ pinDir, objects, sizes: SIZES });
    datapath.attach({ interface: 'rw0', netns: ns.r });
    maps = BlocklistMaps.open({ pinDir, maxEntriesV4: SIZES.blocklistV4, maxEntriesV6: SIZES.blocklistV6, hostMaps: { maxEntriesV4: SIZES.hostsV4, maxEntriesV6: SIZES.hostsV6 } });
    await Promise.all([startPeer(ns.x), startPeer(ns.l), startPeer(ns.l2)]);

    [kube, env] = await Promise.all([startKubeWithCrds(), startTemporal()]);
    await kube.client.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } });
    workers = await startWorkers(env, NODE, { netns: ns.r, routeProtocol: DEFAULT_ROUTE_PROTOCOL, bpfPinDir: pinDir, blocklistMaxEntries: { v4: SIZES.blocklistV4, v6: SIZES.blocklistV6 }, blocklistHostMaxEntries: { v4: SIZES.hostsV4, v6: SIZES.hostsV6 } });
    dir = mkdtempSync(join(tmpdir(), 'fos1-dpi-'));
    // The base set decides nothing about nDPI flows: what happens to BitTorrent is the profile's.
    const base = { name: 'dpi-test-base', rules: [{ name: 'notify-alerts', description: 'alerts are reported', eventTypes: ['alert'], conditions: { all: [{ fact: 'severity', operator: 'severityAtLeast', value: 1 }] }, decision: { action: 'notify' } }] };
    writeFileSync(join(dir, 'rules.json'), JSON.stringify(base));
    ingest = await startIngest(
      {
        rulesFile: join(dir, 'rules.json'),
        guard: guardConfigSchema.parse({}),
        nodes: [NODE],
        eveFrom: 'end',
        coalesceMs: 1000,
        stateDir: dir,
        ndpi: { interface: 'rl0', seconds: 2, configDir: sharedData('ndpi', 'reader-config-4.2'), netns: ns.r },
      },
      { workflows: env.client.workflow, logger: pino({ level: process.env.FOS1_TEST_LOG ?? 'silent' }), kube: kube.client },
    );
  });

  afterAll(async () => {
    await ingest?.stop();
    await workers?.stop();
    await Promise.all([env?.teardown(), kube?.stop()]);
    for (const s of servers) s.kill();
    maps?.close();
    datapath?.close();
    for (const n of Object.values(ns)) spawnSync('ip', ['netns', 'del', n], { stdio: 'ignore' });
    if (pinDir) rmSync(pinDir, { recursive: true, force: true });
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const run = (netns: string, argv: string[]) => new Promise<boolean>((resolve) => execFile('ip', ['netns', 'exec', netns, ...argv], { timeout: 4000 }, (err) => resolve(err === null)));
  const bittorrent = (from: string, to: string, localAddress = '') => run(from, [process.execPath, '-e', CLIENT, to, String(BT_PORT), localAddress]);
  const ping = (from: string, to: string) => run(from, ['ping', '-n', '-q', '-c', '1', '-W', '1', to]);
  const tcp = (from: string, to: string) => run(from, ['timeout', '2', 'bash', '-c', `exec 3<>/dev/tcp/${to}/${PLAIN_PORT}`]);
  const blocked = () => maps.readAll().map((e) => e.cidr).sort();
  /**
   * Opens BitTorrent flows (one a second) until `seen` holds: the ingest runs ndpiReader in
   * rounds, and a flow that falls in the moment between two rounds is not captured.
   */
  const flowUntil = async <T>(open: () => Promise<boolean>, seen: () => T, ok: (v: T) => boolean, what: string, ms = 45_000) =>
    eventually(
      async () => {
        await open();
        return seen();
      },
      ok,
      what,
      ms,
      1000,
    );
  const getProfile = () => kube.client.get({ apiVersion: 'security.fos1.io/v1alpha1', kind: 'DPIProfile', namespace: NS, name: 'no-p2p' });
  const applied = (p: StoredObject | undefined) => ((p?.status?.conditions ?? []) as { type: string; status: string; reason: string; message: string; observedGeneration: number }[]).find((c) => c.type === 'Applied');
  const setSpec = async (spec: object) => {
    for (;;) {
      const current = (await getProfile())!;
      try {
        return await kube.client.replace({ ...current, spec });
      } catch (err) {
        if ((err as { status?: number }).status !== 409) throw err;
      }
    }
  };

  test('the profile blocks BitTorrent peers at the remote endpoint; local hosts keep their traffic; updates reload without restart', async () => {
    const pipeline = ingest.pipeline;
    expect(await ping(ns.l, IP.peer1)).toBe(true);
    expect(ingest.localNetworks.prefixes).toEqual(['10.91.1.0/24', '10.91.1.1/32', '10.91.2.1/32', '10.91.3.0/24', '10.91.3.1/32']);

    // v1 only logs BitTorrent: a flow is classified and reported, nothing blocked.
    await kube.client.create({ apiVersion: 'security.fos1.io/v1alpha1', kind: 'DPIProfile', metadata: { name: 'no-p2p', namespace: NS }, spec: { applications: [{ protocol: 'BitTorrent', action: 'log' }] } });
    await eventually(getProfile, (p) => applied(p)?.status === 'True' && p?.status?.observedGeneration === 1, 'the profile (generation 1) to be applied');
    expect(await bittorrent(ns.l, IP.peer1)).toBe(true);
    await flowUntil(() => bittorrent(ns.l, IP.peer1), () => pipeline.stats.decisions.notify ?? 0, (n) => n >= 1, 'ndpiReader to classify the BitTorrent flow and the profile to report it');
    expect(blocked()).toEqual([]);

    // v2 blocks it: reloaded in the same ingest (no restart), status at generation 2.
    const reloads = ingest.rules.reloads;
    await setSpec({ applications: [{ protocol: 'BitTorrent', action: 'block', blockFor: '1h' }] });
    const v2 = await eventually(getProfile, (p) => applied(p)?.status === 'True' && p?.status?.observedGeneration === 2, 'the profile (generation 2) to be applied');
    expect(applied(v2)?.message).toMatch(/^rules dpi-[a-z0-9]+-0-bittorrent in the ingest's rule set on node-dpi/);
    expect(ingest.rules.reloads).toBe(reloads + 1);
    expect(ingest.pipeline).toBe(pipeline);

    // Local → remote: the destination (the peer) is blocked.
    await flowUntil(() => bittorrent(ns.l, IP.peer1), blocked, (b) => b.includes(`${IP.peer1}/32`), 'the remote peer to land in the blocklist map');
    expect(blocked()).toEqual([`${IP.peer1}/32`]);
    await eventually(() => tcp(ns.l, IP.peer1), (ok) => !ok, "the peer's traffic to be dropped");
    expect(await ping(ns.l, IP.peer1)).toBe(false);
    // The local host keeps its other traffic: the router, another remote host, the other LAN.
    expect(await ping(ns.l, IP.r)).toBe(true);
    expect(await ping(ns.l, IP.other)).toBe(true);
    expect(await tcp(ns.l, IP.other)).toBe(true);
    expect(await tcp(ns.l, IP.l2)).toBe(true);

    // Remote → local: the remote side is now the source, and it is the one blocked.
    expect(await bittorrent(ns.x, IP.l, IP.peer2)).toBe(true);
    await flowUntil(() => bittorrent(ns.x, IP.l, IP.peer2), blocked, (b) => b.includes(`${IP.peer2}/32`), 'the remote source to land in the blocklist map');
    expect(blocked()).toEqual([`${IP.peer1}/32`, `${IP.peer2}/32`]);
    expect(await ping(ns.l, IP.other)).toBe(true);

    // Local ↔ local: classified, withheld, neither host blocked.
    const withheld = pipeline.stats.withheld['local-to-local'] ?? 0;
    expect(await bittorrent(ns.l, IP.l2)).toBe(true);
    await flowUntil(() => bittorrent(ns.l, IP.l2), () => pipeline.stats.withheld['local-to-local'] ?? 0, (n) => n > withheld, 'the local-to-local BitTorrent flow to be classified and withheld');
    expect(blocked()).toEqual([`${IP.peer1}/32`, `${IP.peer2}/32`]);
    expect(await tcp(ns.l, IP.l2)).toBe(true);

    // A bad profile: refused naming the field and the rule; the previous rules stay.
    await setSpec({ applications: [{ protocol: 'BitTorrent', action: 'block', blockFor: '0s' }] });
    const v3 = await eventually(getProfile, (p) => applied(p)?.observedGeneration === 3, 'the bad profile (generation 3) to be reported');
    expect(applied(v3)).toMatchObject({ status: 'False', reason: 'InvalidProfile' });
    expect(applied(v3)?.message).toMatch(/spec\.applications\[0\]\.blockFor: must be at least 1s; the previous rules stay in force \(dpi-[a-z0-9]+-0-bittorrent\)/);
    expect(ingest.rules.evaluator.rules.rules.map((r) => r.name)).toEqual(expect.arrayContaining([expect.stringMatching(/-0-bittorrent$/)]));

    // Deleting the profile takes its rules out of the rule set.
    await kube.client.delete({ apiVersion: 'security.fos1.io/v1alpha1', kind: 'DPIProfile', namespace: NS, name: 'no-p2p' });
    await eventually(() => ingest.rules.evaluator.rules.rules.map((r) => r.name), (names) => names.length === 1, "the profile's rules to leave the rule set");
  });
});
