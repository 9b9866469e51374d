/**
 * The conntrack part of the datapath benchmark (`run.ts --suite conntrack`): what
 * connection tracking costs per packet, and what the conntrack LRU costs in kernel memory.
 *
 * Per packet: TCP request/response round trips between the two namespaces of a
 * {@link NetnsPair} (fos1's TC programs on the server's veth, which is in zone 1), in one
 * run, scenarios interleaved round by round so machine noise hits them alike:
 *
 *   no filter                                   the veth alone
 *   fos1, not zoned                             blocklist + rate-limit lookups only
 *   fos1, zoned, stateless (conntrack off)      every packet: FIB lookup + zone policy lookups
 *   fos1, zoned, conntrack on, allow both ways  every packet after the first: a conntrack hit
 *   fos1, zoned, conntrack on, replies by state host → zone 1 default deny: the server's
 *                                               answers pass only because they are tracked
 *
 * Forwarded (through a router namespace, fos1's programs on both of its interfaces, one
 * zone each): the same round trips, now crossing TC ingress and TC egress of the router
 * in each direction — where a NATed connection is tracked under both of its tuples:
 *
 *   no filter                                   the router alone
 *   fos1, not zoned                             blocklist + rate-limit lookups only
 *   fos1, zoned, stateless (conntrack off)      every packet: FIB + zone policy at ingress
 *   fos1, zoned, conntrack on, replies by state zone 2 default deny; one entry, found at
 *                                               ingress and again at egress
 *   the same through masquerade (nftables)      two entries per connection (pre- and post-NAT)
 *
 * Memory: the `memlock` the kernel charges for the conntrack map (fdinfo) at several
 * `max_entries`, after filling it to its max entries (LRU hash maps are preallocated, so
 * the figure is the same empty or full; the fill proves it).
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { buildDatapath } from '../../bpf/build';
import { CONNTRACK_MAP, Datapath } from '../../bpf/datapath';
import { CONNTRACK_DEFAULT_MAX, DATAPATH_LAYOUTS, ZONE_HOST } from '../../bpf/datapath-codec';
import { BPF_MAP_TYPE_LRU_HASH, BpfMap } from '../../bpf/map';
import { cacheDir } from '../../scripts/paths';
import { ECHO_CLIENT, ECHO_SERVER } from './echo-scripts';
import { ADDR, NetnsPair } from './netns-pair';

/** One scenario's round-trip times. */
export interface ConntrackScenario {
  scenario: string;
  usPerRoundTrip: number;
  runs: number[];
}

/** The memory of a conntrack map of one size. */
export interface ConntrackMemory {
  maxEntries: number;
  filled: number;
  memlockBytes: number;
}

export interface ConntrackResults {
  scenarios: ConntrackScenario[];
  /** The same round trips forwarded through a router namespace (with and without NAT). */
  forwarded: ConntrackScenario[];
  memory: ConntrackMemory[];
}

const ZONE = 1;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

/** `memlock` of a map from /proc/self/fdinfo: what the kernel charges for it. */
export function memlockOf(map: BpfMap): number {
  const m = /^memlock:\s+(\d+)/m.exec(readFileSync(`/proc/self/fdinfo/${map.fd}`, 'utf8'));
  if (!m) throw new Error('fdinfo of the map has no memlock line');
  return Number(m[1]);
}

/** A conntrack map of `maxEntries` (the programs' shape), filled to the brim; its memlock. */
function measureMemory(maxEntries: number): ConntrackMemory {
  const L = DATAPATH_LAYOUTS;
  const map = BpfMap.create({ type: BPF_MAP_TYPE_LRU_HASH, name: 'ct_bench', keySize: L.fos1_ct_key.size, valueSize: L.fos1_ct_value.size, maxEntries });
  try {
    const chunk = 65_536;
    for (let base = 0; base < maxEntries; base += chunk) {
      const n = Math.min(chunk, maxEntries - base);
      const keys: Buffer[] = [];
      const values: Buffer[] = [];
      for (let i = 0; i < n; i++) {
        const k = Buffer.alloc(L.fos1_ct_key.size);
        k.writeUInt32BE(base + i, 0); // distinct lo addresses
        k[L.fos1_ct_key.offsets.family] = 4;
        k[L.fos1_ct_key.offsets.protocol] = 6;
        keys.push(k);
        values.push(Buffer.alloc(L.fos1_ct_value.size, 0));
      }
      map.updateBatch(keys, values);
    }
    // An LRU may evict while filling on a small machine; count what stayed.
    return { maxEntries, filled: map.lookupBatch().length, memlockBytes: memlockOf(map) };
  } finally {
    map.close();
  }
}

/**
 * client a (10.98.1.2) ── ra | router r | rb ── server b (10.98.2.2), fos1's programs on ra
 * and rb (zones 1 and 2). Every command is argv; the namespaces go away at the end.
 */
async function measureForwarded(opts: { pinDir: string; rounds: number; repeat: number; conntrackMax: number; log: (msg: string) => void }): Promise<ConntrackScenario[]> {
  const tag = randomBytes(3).toString('hex');
  const ns = { a: `fos1ctf-${tag}-a`, r: `fos1ctf-${tag}-r`, b: `fos1ctf-${tag}-b` };
  const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe' });
  const inR = (cmd: string, ...args: string[]) => execFileSync('ip', ['netns', 'exec', ns.r, cmd, ...args], { stdio: 'pipe' });
  let datapath: Datapath | undefined;
  const children: Array<{ kill: () => void }> = [];
  try {
    for (const n of Object.values(ns)) ip('netns', 'add', n);
    ip('-n', ns.a, 'link', 'add', 'a0', 'type', 'veth', 'peer', 'name', 'ra', 'netns', ns.r);
    ip('-n', ns.b, 'link', 'add', 'b0', 'type', 'veth', 'peer', 'name', 'rb', 'netns', ns.r);
    for (const [n, dev, addr] of [
      [ns.a, 'a0', '10.98.1.2/24'],
      [ns.r, 'ra', '10.98.1.1/24'],
      [ns.r, 'rb', '10.98.2.1/24'],
      [ns.b, 'b0', '10.98.2.2/24'],
    ] as const) {
      ip('-n', n, 'link', 'set', 'lo', 'up');
      ip('-n', n, 'addr', 'add', addr, 'dev', dev);
      ip('-n', n, 'link', 'set', dev, 'up');
    }
    ip('-n', ns.a, 'route', 'add', 'default', 'via', '10.98.1.1');
    ip('-n', ns.b, 'route', 'add', 'default', 'via', '10.98.2.1');
    inR('sysctl', '-qw', 'net.ipv4.ip_forward=1');
    // The masquerade scenario's NAT: a table of the benchmark's own, its rule added and flushed per scenario.
    inR('nft', 'add', 'table', 'ip', 'fos1bench');
    inR('nft', 'add', 'chain', 'ip', 'fos1bench', 'post', '{', 'type', 'nat', 'hook', 'postrouting', 'priority', '100', ';', '}');
    const masquerade = (on: boolean) => (on ? inR('nft', 'add', 'rule', 'ip', 'fos1bench', 'post', 'oifname', 'rb', 'masquerade') : inR('nft', 'flush', 'chain', 'ip', 'fos1bench', 'post'));
    for (let tries = 0; spawnSync('ip', ['netns', 'exec', ns.a, 'ping', '-n', '-q', '-c', '1', '-W', '1', '10.98.2.2'], { stdio: 'ignore' }).status !== 0; tries++) {
      if (tries === 10) throw new Error('the router never forwarded between a and b');
    }
    const child = spawn('ip', ['netns', 'exec', ns.b, process.execPath, '-e', ECHO_SERVER, '--', '1'], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    const port = await new Promise<number>((resolve, reject) => {
      createInterface({ input: child.stdout }).once('line', (line) => resolve((JSON.parse(line) as { tcp: number[] }).tcp[0] as number));
      child.once('exit', (code) => reject(new Error(`echo server exited with ${code}`)));
    });
    datapath = Datapath.load({
      pinDir: opts.pinDir,
      objects: buildDatapath({ cacheDir: cacheDir() }),
      sizes: { blocklistV4: 1024, blocklistV6: 1024, hostsV4: 1024, hostsV6: 1024, conntrack: opts.conntrackMax },
    });
    const dp = datapath;
    const attach = (on: boolean) => {
      for (const dev of ['ra', 'rb']) {
        if (on) dp.attach({ interface: dev, netns: ns.r });
        else Datapath.detach({ interface: dev, netns: ns.r });
      }
    };
    const zoned = (on: boolean) => {
      dp.setInterfaceZone({ interface: 'ra', netns: ns.r }, on ? 1 : 0);
      dp.setInterfaceZone({ interface: 'rb', netns: ns.r }, on ? 2 : 0);
    };
    // Zone 1 may open anything; zone 2's default decides whether its replies need the state.
    dp.setZoneDefault(1, { action: 'allow', ruleId: 0 });
    const scenarios: Array<{ name: string; setup: () => void; check?: () => void }> = [
      { name: 'forwarded, no filter', setup: () => (attach(false), masquerade(false)) },
      { name: 'forwarded, fos1 on both router interfaces, not zoned', setup: () => (attach(true), zoned(false)) },
      { name: 'forwarded, zoned, stateless (conntrack off)', setup: () => (zoned(true), dp.setConntrack(false), dp.setZoneDefault(2, { action: 'allow', ruleId: 0 })) },
      { name: 'forwarded, zoned, conntrack on, replies by state (zone 2 default deny)', setup: () => (dp.setConntrack(true), dp.setZoneDefault(2, { action: 'deny', ruleId: 0 })) },
      {
        name: 'the same through masquerade (nftables): two entries per connection',
        setup: () => masquerade(true),
        // The post-NAT entry (the router's address towards the server) is what the replies found.
        check: () => {
          if (!dp.conntrackEntries().some((e) => e.protocol === 6 && e.source === '10.98.2.1' && e.dport === port)) throw new Error('no post-NAT conntrack entry for the masqueraded connection');
        },
      },
    ];
    const runs = new Map<string, number[]>(scenarios.map((s) => [s.name, []]));
    for (let round = 0; round < opts.repeat; round++) {
      for (const s of scenarios) {
        s.setup();
        dp.flushConntrack();
        const r = spawnSync('ip', ['netns', 'exec', ns.a, process.execPath, '-e', ECHO_CLIENT, '--', 'tcp', '10.98.2.2', String(port), '600000', String(opts.rounds)], { encoding: 'utf8' });
        if (r.status !== 0) throw new Error(`${s.name}: TCP round trips failed: ${(r.stderr || String(r.status)).trim()}`);
        s.check?.();
        const us = (JSON.parse(r.stdout) as { ns: number }).ns / 1000 / opts.rounds;
        runs.get(s.name)?.push(us);
        opts.log(`round ${round + 1}, ${s.name}: ${us.toFixed(2)} µs per round trip`);
      }
    }
    return scenarios.map((s) => ({ scenario: s.name, usPerRoundTrip: median(runs.get(s.name) ?? []), runs: runs.get(s.name) ?? [] }));
  } finally {
    for (const c of children) c.kill();
    if (datapath) {
      datapath.unpin();
      datapath.close();
    }
    for (const n of Object.values(ns)) spawnSync('ip', ['netns', 'del', n], { stdio: 'ignore' });
  }
}

/** Runs the suite; `pinDir` is a fresh bpffs folder (removed by the caller). */
export async function runConntrackSuite(opts: { pinDir: string; rounds: number; repeat: number; conntrackMax: number; log: (msg: string) => void }): Promise<ConntrackResults> {
  const local = await measurePair(opts);
  const forwarded = await measureForwarded({ ...opts, pinDir: join(opts.pinDir, 'forwarded') });
  return { ...local, forwarded };
}

/** Two namespaces, fos1 on the server's veth; then the conntrack map's memory. */
async function measurePair(opts: { pinDir: string; rounds: number; repeat: number; conntrackMax: number; log: (msg: string) => void }): Promise<Omit<ConntrackResults, 'forwarded'>> {
  const pair = NetnsPair.create();
  let datapath: Datapath | undefined;
  try {
    const server = await pair.startEchoServer(1);
    const port = server.tcp[0] as number;
    datapath = Datapath.load({
      pinDir: opts.pinDir,
      objects: buildDatapath({ cacheDir: cacheDir() }),
      sizes: { blocklistV4: 1024, blocklistV6: 1024, hostsV4: 1024, hostsV6: 1024, conntrack: opts.conntrackMax },
    });
    const dp = datapath;
    const attach = () => dp.attach({ interface: pair.ifB, netns: pair.b });
    const detach = () => Datapath.detach({ interface: pair.ifB, netns: pair.b });
    const zoned = (on: boolean) => dp.setInterfaceZone({ interface: pair.ifB, netns: pair.b }, on ? ZONE : 0);
    const scenarios: Array<{ name: string; setup: () => void }> = [
      { name: 'no filter', setup: () => detach() },
      { name: 'fos1 TC ingress+egress, not zoned', setup: () => (attach(), zoned(false)) },
      { name: 'fos1, zoned, stateless (conntrack off): zone policy on every packet', setup: () => (attach(), zoned(true), dp.setConntrack(false), dp.setZoneDefault(ZONE_HOST, { action: 'allow', ruleId: 0 })) },
      { name: 'fos1, zoned, conntrack on, policy allows both ways', setup: () => (attach(), zoned(true), dp.setConntrack(true), dp.setZoneDefault(ZONE_HOST, { action: 'allow', ruleId: 0 })) },
      { name: 'fos1, zoned, conntrack on, replies pass by state (host → zone default deny)', setup: () => (attach(), zoned(true), dp.setConntrack(true), dp.setZoneDefault(ZONE_HOST, { action: 'deny', ruleId: 0 })) },
    ];
    const runs = new Map<string, number[]>(scenarios.map((s) => [s.name, []]));
    for (let round = 0; round < opts.repeat; round++) {
      for (const s of scenarios) {
        s.setup();
        dp.flushConntrack();
        const r = pair.echo('tcp', ADDR.b4, port, 600_000, opts.rounds);
        if (!r.ok) throw new Error(`${s.name}: TCP round trips failed: ${r.error}`);
        const us = (r.ns ?? 0) / 1000 / opts.rounds;
        runs.get(s.name)?.push(us);
        opts.log(`round ${round + 1}, ${s.name}: ${us.toFixed(2)} µs per round trip`);
      }
    }
    // The last scenario tracked the connection; its entry is there.
    if (!dp.conntrackEntries().some((e) => e.protocol === 6 && e.dport === port)) throw new Error('the benchmark connection is not in conntrack');
    server.stop();
    const ctMap = dp.map(CONNTRACK_MAP);
    opts.log(`loaded conntrack map: max_entries ${ctMap.info.maxEntries}, memlock ${memlockOf(ctMap)} bytes`);
    const sizes = [...new Set([CONNTRACK_DEFAULT_MAX, opts.conntrackMax, 262_144, 1_048_576])].sort((a, b) => a - b);
    const memory = sizes.map((n) => {
      const m = measureMemory(n);
      opts.log(`conntrack max_entries ${n}: ${m.filled} filled, memlock ${m.memlockBytes} bytes`);
      return m;
    });
    return { scenarios: scenarios.map((s) => ({ scenario: s.name, usPerRoundTrip: median(runs.get(s.name) ?? []), runs: runs.get(s.name) ?? [] })), memory };
  } finally {
    if (datapath) {
      try {
        Datapath.detach({ interface: pair.ifB, netns: pair.b });
      } catch {
        // the namespace goes away below anyway
      }
      datapath.unpin();
      datapath.close();
    }
    pair.destroy();
  }
}

/** The suite's results as Markdown. */
export function conntrackReport(command: string, machine: string[], results: ConntrackResults, when: string): string {
  // Ratios against the first scenario (no filter) and the stateless zoned one of the same table.
  const scenarioRows = (rows: ConntrackScenario[]) => {
    const base = rows[0]?.usPerRoundTrip ?? 1;
    const stateless = rows.find((s) => s.scenario.includes('stateless'))?.usPerRoundTrip ?? 1;
    return rows.map(
      (s) => `| ${s.scenario} | ${s.usPerRoundTrip.toFixed(2)} | ${(s.usPerRoundTrip / base).toFixed(2)}× | ${(s.usPerRoundTrip / stateless).toFixed(2)}× | ${s.runs.map((x) => x.toFixed(2)).join(', ')} |`,
    );
  };
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  return [
    '# Datapath benchmark: connection tracking',
    '',
    'Produced by one run of',
    '',
    '```',
    command,
    '```',
    '',
    `on ${when} (root; everything inside fresh network namespaces). Machine:`,
    '',
    ...machine,
    '',
    '## Per-packet cost: TCP request/response between two namespaces, with and without conntrack',
    '',
    "fos1's TC programs on the server's veth (ingress + egress), which is in zone 1; the server's answers leave as",
    'locally sent packets (source zone: the host). Scenarios interleaved round by round; median of the rounds.',
    '',
    '| scenario | µs per round trip | vs no filter | vs stateless zoned | runs (µs) |',
    '| --- | ---: | ---: | ---: | --- |',
    ...scenarioRows(results.scenarios),
    '',
    '## Per-packet cost through a router: forwarded, with and without NAT',
    '',
    "Client and server in two namespaces, a router namespace between them with fos1's TC programs on both of its",
    'interfaces (zones 1 and 2, zone 1 may open anything). Every packet crosses TC ingress and TC egress of the router:',
    "at egress the (post-NAT) tuple is looked up again, so a masqueraded connection's replies find the entry made",
    'there. Interleaved round by round; median of the rounds.',
    '',
    '| scenario | µs per round trip | vs no filter | vs stateless zoned | runs (µs) |',
    '| --- | ---: | ---: | ---: | --- |',
    ...scenarioRows(results.forwarded),
    '',
    '## Memory of the conntrack map (LRU hash, 40-byte key, 32-byte value, preallocated)',
    '',
    '| max_entries | entries after filling | kernel memory (memlock) | per entry |',
    '| ---: | ---: | ---: | ---: |',
    ...results.memory.map((m) => `| ${m.maxEntries.toLocaleString('en')} | ${m.filled.toLocaleString('en')} | ${mib(m.memlockBytes)} | ${(m.memlockBytes / m.maxEntries).toFixed(0)} B |`),
    '',
  ].join('\n');
}
