/**
 * IDS verdict to dropped packets, with real traffic: fos1's eBPF datapath (bpf/datapath.ts)
 * attached in one of two namespaces joined by a veth pair; the node worker for that
 * namespace writes the same pinned blocklist maps the programs consult; the ingest worker
 * tails an eve.json. An alert about the client's address → its pings and TCP are dropped
 * → at expiry the enforcement workflow lifts the block and traffic flows again.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, rmSync } from 'node:fs';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { ADDR, type EchoServer, NetnsPair } from '../../bench/datapath/netns-pair';
import { BlocklistMaps } from '../../bpf/blocklist-maps';
import { buildDatapath } from '../../bpf/build';
import { Datapath } from '../../bpf/datapath';
import { enforcementWorkflowId } from '../../model/enforcement-decision';
import { guardConfigSchema } from '../../model/enforcement-guard';
import { cacheDir } from '../../scripts/paths';
import { enforcementQuery } from '../../workflows/enforcement';
import { describePrivileged } from '../helpers/capabilities';
import { startEnforcementStack, type EnforcementStack } from '../helpers/enforcement-stack';
import { eventually } from '../helpers/eventually';

const NODE = 'node-traffic';
const SIZES = { blocklistV4: 1024, blocklistV6: 1024, hostsV4: 1024, hostsV6: 1024 };
const BLOCK_SECONDS = 4;

const RULES = {
  name: 'traffic-test',
  rules: [
    {
      name: 'block-severity-1',
      description: 'severity-1 alerts block the source',
      priority: 100,
      eventTypes: ['alert'],
      conditions: { all: [{ fact: 'severity', operator: 'severityAtLeast', value: 1 }] },
      decision: { action: 'block', target: 'src_ip', duration: `${BLOCK_SECONDS}s`, memory: '1m' },
    },
  ],
};

function alertLine(src: string, dest: string): string {
  return JSON.stringify({
    timestamp: new Date().toISOString(),
    flow_id: 1,
    event_type: 'alert',
    src_ip: src,
    src_port: 40000,
    dest_ip: dest,
    dest_port: 22,
    proto: 'TCP',
    alert: { action: 'allowed', signature_id: 2001219, signature: 'ET SCAN Potential SSH Scan', category: 'Attempted Information Leak', severity: 1 },
  });
}

describePrivileged('IDS verdict to dropped traffic through the eBPF datapath (privileged)', ['root', 'netns', 'bpffs', 'iproute2', 'temporal-cli'], () => {
  let pair: NetnsPair;
  let pinDir: string;
  let datapath: Datapath;
  let maps: BlocklistMaps;
  let server: EchoServer;
  let env: TestWorkflowEnvironment;
  let stack: EnforcementStack;
  let eveFile: string;

  beforeAll(async () => {
    const objects = buildDatapath({ cacheDir: cacheDir() });
    pair = NetnsPair.create();
    pinDir = `/sys/fs/bpf/fos1-enft-${randomBytes(4).toString('hex')}`;
    // The datapath creates and pins the maps first; the node worker then opens the same ones.
    datapath = Datapath.load({ pinDir, objects, sizes: SIZES });
    datapath.attach({ interface: pair.ifB, netns: pair.b });
    maps = BlocklistMaps.open({ pinDir, maxEntriesV4: SIZES.blocklistV4, maxEntriesV6: SIZES.blocklistV6, hostMaps: { maxEntriesV4: SIZES.hostsV4, maxEntriesV6: SIZES.hostsV6 } });
    server = await pair.startEchoServer(1);
    stack = await startEnforcementStack({
      node: NODE,
      netns: pair.b,
      pinDir,
      blocklist: { v4: SIZES.blocklistV4, v6: SIZES.blocklistV6 },
      target: { blocklistHostMaxEntries: { v4: SIZES.hostsV4, v6: SIZES.hostsV6 } },
      rules: RULES,
      guard: guardConfigSchema.parse({ allowLists: { management: ['192.0.2.0/24'] } }),
    });
    ({ env, eveFile } = stack);
  });

  afterAll(async () => {
    await stack?.stop();
    maps?.close();
    datapath?.close();
    pair?.destroy();
    if (pinDir) rmSync(pinDir, { recursive: true, force: true });
  });

  /** Runs a probe in the client namespace without blocking the event loop (the workers run in this process). */
  const probe = (argv: string[]) =>
    new Promise<boolean>((resolve) => execFile('ip', ['netns', 'exec', pair.a, ...argv], { timeout: 3000 }, (err) => resolve(err === null)));
  const reachable = async () => ({
    ping: await probe(['ping', '-n', '-q', '-c', '1', '-W', '1', ADDR.b4]),
    tcp: await probe(['timeout', '1', 'bash', '-c', `exec 3<>/dev/tcp/${ADDR.b4}/${server.tcp[0]!}`]),
  });

  test('alert appended to the tailed eve file → traffic from that source dropped → after expiry it flows again', async () => {
    expect(await reachable()).toEqual({ ping: true, tcp: true });

    appendFileSync(eveFile, `${alertLine(ADDR.a4, ADDR.b4)}\n`);
    await eventually(reachable, (r) => !r.ping && !r.tcp, 'traffic from the alerted source to be dropped');
    // Dropped by the blocklist entry the enforcement workflow put there through the change path.
    expect(maps.readAll().map((e) => e.cidr)).toEqual([`${ADDR.a4}/32`]);
    // IPv6 from the same client is another address and still flows.
    expect(await probe(['ping', '-n', '-q', '-c', '1', '-W', '1', ADDR.b6])).toBe(true);

    await eventually(reachable, (r) => r.ping && r.tcp, 'traffic to flow again after expiry', (BLOCK_SECONDS + 30) * 1000);
    expect(maps.readAll()).toEqual([]);
    const handle = env.client.workflow.getHandle(enforcementWorkflowId(`${ADDR.a4}/32`));
    const status = await eventually(() => handle.query(enforcementQuery), (st) => st.audit.length >= 2, 'the lift to be recorded');
    expect(status.audit.map((a) => `${a.step}:${a.result}`)).toEqual(['block:ok', 'lift:ok']);
  });
});
