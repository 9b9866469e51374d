/**
 * Datapath benchmark (issue 3, point 5): every contender in one run on this machine.
 *
 *   npx tsx bench/datapath/run.ts [--hosts 1000000] [--prefixes 100000] [--rounds 20000] [--repeat 3] [--out bench/datapath/RESULTS.md]
 *   npx tsx bench/datapath/run.ts --suite conntrack [--rounds 20000] [--repeat 5] [--conntrack-max 65536]   (→ CONNTRACK.md, see conntrack.ts)
 *
 * Load: H random IPv4 /32 plus P random prefixes (disjoint, so nft's interval set takes
 * them without auto-merge), then one more entry into each full set —
 *   (a) fos1's activity path end to end (read file, parse, dump, diff, batch apply,
 *       digest read-back) into the pinned maps the attached programs use;
 *   (b) `nft -f` with an interval set;  (c) `ipset restore` with hash:net;
 *   (d) `iptables-restore` with 100,000 rules.
 * Time is wall time of the command; peak memory is the process's max RSS (GNU time
 * for the CLI tools, getrusage in fos1's own child process).
 *
 * Per packet: TCP request/response round trips between two namespaces (client → server
 * on the veth that carries the filter), median of `repeat` runs of `rounds` round trips:
 * no filter, fos1 empty, fos1 with the full set, nft set, ipset match, iptables 10,000
 * and 100,000 linear rules (the client matches none, so every rule is evaluated).
 *
 * Everything runs inside namespaces created here (nft tables, ipsets and iptables
 * rules are per namespace), pins live under a fresh /sys/fs/bpf folder, all removed at
 * the end. Root, bpffs, clang, bpftool, nft, ipset, iptables and GNU time are needed.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpus, loadavg, totalmem } from 'node:os';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { z } from 'zod';
import { buildDatapath } from '../../bpf/build';
import { Datapath } from '../../bpf/datapath';
import { removePinnedBlocklist } from '../../bpf/blocklist-maps';
import { cacheDir } from '../../scripts/paths';
import { conntrackReport, runConntrackSuite } from './conntrack';
import { generate } from './lists';
import { ADDR, NetnsPair } from './netns-pair';

const argsSchema = z.object({
  hosts: z.coerce.number().int().min(1000).max(5_000_000).default(1_000_000),
  prefixes: z.coerce.number().int().min(100).max(400_000).default(100_000),
  rounds: z.coerce.number().int().min(100).default(20_000),
  repeat: z.coerce.number().int().min(1).max(10).default(3),
  /** `all`: every contender (RESULTS.md); `conntrack`: connection tracking's per-packet cost and memory (CONNTRACK.md). */
  suite: z.enum(['all', 'conntrack']).default('all'),
  /** `max_entries` of the conntrack LRU the programs run with in the conntrack suite. */
  'conntrack-max': z.coerce.number().int().min(1024).max(16_777_216).default(65_536),
  out: z.string().optional(),
});

function parseArgs(argv: string[]): z.output<typeof argsSchema> {
  const raw: Record<string, string> = {};
  for (let i = 0; i < argv.length; i += 2) {
    const flag = argv[i] ?? '';
    if (!flag.startsWith('--') || argv[i + 1] === undefined) throw new Error(`expected --name value pairs, got "${flag}"`);
    raw[flag.slice(2)] = argv[i + 1] as string;
  }
  const parsed = argsSchema.strict().safeParse(raw);
  if (!parsed.success) throw new Error(parsed.error.issues.map((i) => `--${i.path.join('.')}: ${i.message}`).join('; '));
  return parsed.data;
}

interface Timed {
  seconds: number;
  maxRssKiB: number;
  ok: boolean;
  stderr: string;
}

/** Runs argv under GNU time; returns wall seconds and max RSS. */
function timed(argv: string[], input?: string): Timed {
  const r = spawnSync('/usr/bin/time', ['-f', 'FOS1TIME %e %M', ...argv], { encoding: 'utf8', input, maxBuffer: 256 << 20 });
  const m = /FOS1TIME ([\d.]+) (\d+)/.exec(r.stderr ?? '');
  return { seconds: Number(m?.[1] ?? NaN), maxRssKiB: Number(m?.[2] ?? NaN), ok: r.status === 0, stderr: (r.stderr ?? '').replace(/FOS1TIME.*\n?/, '').trim().slice(0, 500) };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.suite === 'conntrack') return conntrack(args);
  const work = mkdtempSync(join(tmpdir(), 'fos1-bench-'));
  const pinDir = `/sys/fs/bpf/fos1-bench-${randomBytes(4).toString('hex')}`;
  const log = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);
  const total = args.hosts + args.prefixes;

  log(`generating ${args.hosts} hosts + ${args.prefixes} prefixes in ${work}`);
  const { hostList, prefixList } = generate(args.hosts, args.prefixes);
  const all = [...hostList, ...prefixList];
  const listFile = join(work, 'fos1.txt');
  writeFileSync(listFile, `${all.join('\n')}\n`);
  writeFileSync(join(work, 'nft.conf'), `table inet fos1bench {\n  set bl4 {\n    type ipv4_addr\n    flags interval\n    elements = { ${all.join(', ')} }\n  }\n}\n`);
  writeFileSync(
    join(work, 'ipset.restore'),
    `create fos1b hash:net family inet hashsize 1048576 maxelem ${total * 2}\n${all.map((e) => `add fos1b ${e}`).join('\n')}\n`,
  );
  // With fewer hosts than rules asked for (small trial runs) the rule sets shrink too.
  const rules10k = Math.min(10_000, args.hosts);
  const rules100k = Math.min(100_000, args.hosts);
  const iptablesRules = (n: number) => `*filter\n:INPUT ACCEPT [0:0]\n${hostList.slice(0, n).map((h) => `-A INPUT -s ${h}/32 -j DROP`).join('\n')}\nCOMMIT\n`;
  writeFileSync(join(work, 'iptables-10k.rules'), iptablesRules(rules10k));
  writeFileSync(join(work, 'iptables-100k.rules'), iptablesRules(rules100k));

  const pair = NetnsPair.create();
  const inB = (...argv: string[]) => ['ip', 'netns', 'exec', pair.b, ...argv];
  const run = (argv: string[]) => execFileSync(argv[0] as string, argv.slice(1), { encoding: 'utf8' });
  const results: Record<string, unknown> = {};
  const rr: Array<{ scenario: string; usPerRoundTrip: number; runs: number[] }> = [];
  let datapath: Datapath | undefined;
  try {
    const server = await pair.startEchoServer(1);
    const port = server.tcp[0] as number;
    const measure = (scenario: string) => {
      const runs: number[] = [];
      for (let i = 0; i < args.repeat; i++) {
        const r = pair.echo('tcp', ADDR.b4, port, 600_000, args.rounds);
        if (!r.ok) throw new Error(`${scenario}: TCP round trips failed: ${r.error}`);
        runs.push((r.ns ?? 0) / 1000 / args.rounds);
      }
      rr.push({ scenario, usPerRoundTrip: median(runs), runs });
      log(`${scenario}: ${median(runs).toFixed(2)} µs per round trip`);
    };
    measure('no filter');

    datapath = Datapath.load({
      pinDir,
      objects: buildDatapath({ cacheDir: cacheDir() }),
      sizes: { blocklistV4: 200_000, blocklistV6: 1024, hostsV4: 1_200_000, hostsV6: 1024 },
    });
    datapath.attach({ interface: pair.ifB, netns: pair.b });
    measure('fos1 TC ingress+egress, empty maps');

    log('(a) fos1 load');
    const fos1 = spawnSync(process.execPath, ['--import', 'tsx', join(__dirname, 'fos1-load.ts'), pinDir, listFile, work], { encoding: 'utf8', maxBuffer: 64 << 20 });
    if (fos1.status !== 0) throw new Error(`fos1-load failed: ${fos1.stderr}`);
    results.fos1 = JSON.parse(fos1.stdout.trim().split('\n').pop() as string);
    log(`fos1: ${JSON.stringify(results.fos1)}`);
    measure(`fos1 TC ingress+egress, ${total.toLocaleString('en')} entries`);
    Datapath.detach({ interface: pair.ifB, netns: pair.b });
    datapath.close();
    datapath = undefined;
    removePinnedBlocklist(pinDir);
    rmSync(pinDir, { recursive: true, force: true });

    log('(b) nft -f');
    const nftLoad = timed(inB('nft', '-f', join(work, 'nft.conf')));
    if (!nftLoad.ok) throw new Error(`nft -f failed: ${nftLoad.stderr}`);
    const nftAdd = timed(inB('nft', 'add', 'element', 'inet', 'fos1bench', 'bl4', '{ 10.200.0.1 }'));
    results.nft = { load: nftLoad, addOne: nftAdd };
    log(`nft: ${JSON.stringify(results.nft)}`);
    // nft joins its argv into one command line; the words are constants.
    run(inB('nft', 'add', 'chain', 'inet', 'fos1bench', 'input', '{', 'type', 'filter', 'hook', 'input', 'priority', '0;', 'policy', 'accept;', '}'));
    run(inB('nft', 'add', 'rule', 'inet', 'fos1bench', 'input', 'ip', 'saddr', '@bl4', 'drop'));
    measure(`nft interval set, ${total.toLocaleString('en')} elements`);
    run(inB('nft', 'delete', 'table', 'inet', 'fos1bench'));

    log('(c) ipset restore');
    const ipsetLoad = timed(inB('ipset', 'restore', '-f', join(work, 'ipset.restore')));
    if (!ipsetLoad.ok) throw new Error(`ipset restore failed: ${ipsetLoad.stderr}`);
    const ipsetAdd = timed(inB('ipset', 'add', 'fos1b', '10.200.0.1'));
    const ipsetMem = /Size in memory: (\d+)/.exec(run(inB('ipset', 'list', '-t', 'fos1b')))?.[1];
    results.ipset = { load: ipsetLoad, addOne: ipsetAdd, kernelBytes: Number(ipsetMem) };
    log(`ipset: ${JSON.stringify(results.ipset)}`);
    run(inB('iptables', '-A', 'INPUT', '-m', 'set', '--match-set', 'fos1b', 'src', '-j', 'DROP'));
    measure(`ipset hash:net (iptables -m set), ${total.toLocaleString('en')} elements`);
    run(inB('iptables', '-F', 'INPUT'));
    run(inB('ipset', 'destroy', 'fos1b'));

    log('(d) iptables-restore');
    const ipt10 = timed(inB('iptables-restore', join(work, 'iptables-10k.rules')));
    if (!ipt10.ok) throw new Error(`iptables-restore failed: ${ipt10.stderr}`);
    measure(`iptables ${rules10k.toLocaleString('en')} rules`);
    const ipt100 = timed(inB('iptables-restore', join(work, 'iptables-100k.rules')));
    if (!ipt100.ok) throw new Error(`iptables-restore failed: ${ipt100.stderr}`);
    const iptAdd = timed(inB('iptables', '-A', 'INPUT', '-s', '10.200.0.1/32', '-j', 'DROP'));
    results.iptables = { load10k: ipt10, load100k: ipt100, addOne: iptAdd };
    log(`iptables: ${JSON.stringify(results.iptables)}`);
    measure(`iptables ${rules100k.toLocaleString('en')} rules`);
    run(inB('iptables', '-F', 'INPUT'));
    server.stop();
  } finally {
    if (datapath) {
      try {
        Datapath.detach({ interface: pair.ifB, netns: pair.b });
      } catch {
        // the namespace goes away below anyway
      }
      datapath.close();
    }
    pair.destroy();
    rmSync(pinDir, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true });
  }

  const out = args.out ?? join(__dirname, 'RESULTS.md');
  writeFileSync(out, report(args, results, rr));
  log(`wrote ${relative(process.cwd(), out)}`);
}

/** `--suite conntrack`: see conntrack.ts. */
async function conntrack(args: z.output<typeof argsSchema>): Promise<void> {
  const pinDir = `/sys/fs/bpf/fos1-bench-ct-${randomBytes(4).toString('hex')}`;
  const log = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);
  const when = new Date().toISOString();
  // The machine is shared: the load around the run says how far to trust the per-packet figures.
  const load = () => loadavg().map((x) => x.toFixed(2)).join(' / ');
  const loadBefore = load();
  try {
    const results = await runConntrackSuite({ pinDir, rounds: args.rounds, repeat: args.repeat, conntrackMax: args['conntrack-max'], log });
    const loadLine = `- Load average (1 / 5 / 15 min): ${loadBefore} at the start, ${load()} at the end, on ${cpus().length} cores`;
    const command = `npx tsx bench/datapath/run.ts --suite conntrack --rounds ${args.rounds} --repeat ${args.repeat} --conntrack-max ${args['conntrack-max']}`;
    const out = args.out ?? join(__dirname, 'CONNTRACK.md');
    writeFileSync(out, conntrackReport(command, [...machine(), loadLine], results, when));
    log(`wrote ${relative(process.cwd(), out)}`);
  } finally {
    rmSync(pinDir, { recursive: true, force: true });
  }
}

function machine(): string[] {
  const text = (cmd: string, argv: string[]) => {
    try {
      return execFileSync(cmd, argv, { encoding: 'utf8' }).trim();
    } catch {
      return 'n/a';
    }
  };
  const os = /PRETTY_NAME="([^"]+)"/.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? 'n/a';
  return [
    `- CPU: ${cpus()[0]?.model ?? 'n/a'}, ${cpus().length} cores visible (shared with other workloads while this ran)`,
    `- Memory: ${(totalmem() / 2 ** 30).toFixed(1)} GiB`,
    `- OS: ${os}, kernel ${text('uname', ['-r'])}`,
    `- Node ${process.version}, libbpf 1.1 (libbpf1 ${text('dpkg-query', ['-W', '-f=${Version}', 'libbpf1'])}), clang ${text('clang', ['-dumpversion'])}`,
    `- ${text('nft', ['--version'])}; ${text('ipset', ['--version']).split('\n')[0]}; ${text('iptables', ['--version'])}`,
  ];
}

function report(args: z.output<typeof argsSchema>, results: Record<string, unknown>, rr: Array<{ scenario: string; usPerRoundTrip: number; runs: number[] }>): string {
  type T = Timed;
  const f = results.fos1 as {
    loadMs: number;
    loadTimings: Record<string, number>;
    patchMs: number[];
    fullPlusOneMs: number;
    fullPlusOneTimings: Record<string, number>;
    maxRssKiB: number;
    kernelBytes: number;
  };
  const nft = results.nft as { load: T; addOne: T };
  const ipset = results.ipset as { load: T; addOne: T; kernelBytes: number };
  const ipt = results.iptables as { load10k: T; load100k: T; addOne: T };
  const total = args.hosts + args.prefixes;
  const mib = (kib: number) => `${(kib / 1024).toFixed(0)} MiB`;
  const s = (sec: number) => (sec < 1 ? `${(sec * 1000).toFixed(0)} ms` : `${sec.toFixed(2)} s`);
  const fosLoad = f.loadMs / 1000;
  const phases = (t: Record<string, number>) =>
    Object.entries(t)
      .map(([phase, ms]) => `${phase} ${s(ms / 1000)}`)
      .join(', ');
  const lines = [
    '# Datapath benchmark: fos1 eBPF maps vs nftables, ipset, iptables',
    '',
    'Produced by one run of',
    '',
    '```',
    `npx tsx bench/datapath/run.ts --hosts ${args.hosts} --prefixes ${args.prefixes} --rounds ${args.rounds} --repeat ${args.repeat}`,
    '```',
    '',
    `on ${new Date().toISOString()} (root; everything inside fresh network namespaces). Machine:`,
    '',
    ...machine(),
    '',
    `## Load ${args.hosts.toLocaleString('en')} random /32 + ${args.prefixes.toLocaleString('en')} random prefixes, then add one entry`,
    '',
    '| contender | load (wall) | vs fos1 | add one entry to the full set | peak RSS of the loader | kernel memory |',
    '| --- | ---: | ---: | ---: | ---: | ---: |',
    `| (a) fos1 activity path (${phases(f.loadTimings)}) | ${s(fosLoad)} | 1× | patch: ${f.patchMs.map((m) => m.toFixed(2)).join(' / ')} ms; full-state sync of ${(total + 6).toLocaleString('en')} entries (${phases(f.fullPlusOneTimings)}): ${s(f.fullPlusOneMs / 1000)} | ${mib(f.maxRssKiB)} (Node process) | ${mib(f.kernelBytes / 1024)} (bpf memlock, host hash prealloc + trie) |`,
    `| (b) \`nft -f\`, interval set | ${s(nft.load.seconds)} | ${(nft.load.seconds / fosLoad).toFixed(1)}× | ${s(nft.addOne.seconds)} (\`nft add element\`) | ${mib(nft.load.maxRssKiB)} (add: ${mib(nft.addOne.maxRssKiB)}) | n/a |`,
    `| (c) \`ipset restore\`, hash:net | ${s(ipset.load.seconds)} | ${(ipset.load.seconds / fosLoad).toFixed(1)}× | ${s(ipset.addOne.seconds)} (\`ipset add\`) | ${mib(ipset.load.maxRssKiB)} | ${mib(ipset.kernelBytes / 1024)} (ipset "Size in memory") |`,
    `| (d) \`iptables-restore\`, 100,000 rules (10,000: ${s(ipt.load10k.seconds)}) | ${s(ipt.load100k.seconds)} | n/a (100,000 rules) | ${s(ipt.addOne.seconds)} (\`iptables -A\`) | ${mib(ipt.load100k.maxRssKiB)} (add: ${mib(ipt.addOne.maxRssKiB)}) | n/a |`,
    '',
    'CLI times are wall times from GNU time (10 ms resolution), including `ip netns exec`. fos1 times are measured',
    'inside its own Node process (start-up and module loading excluded; everything from reading the file to the',
    'verified read-back included). "Patch" is the activity path for a single added entry (exact-state probe, write,',
    'read-back, snapshot of the touched key); five different entries are shown.',
    '',
    '## Per-packet cost: TCP request/response between two namespaces',
    '',
    `Median of ${args.repeat} runs of ${args.rounds.toLocaleString('en')} round trips (one client connection, 9-byte payload, Nagle off).`,
    'The filter sits on the server\'s veth (fos1: TC ingress + egress; netfilter: INPUT hook). The client address',
    'matches no entry, so the lookup runs in full for every packet.',
    '',
    '| scenario | µs per round trip | vs no filter | runs (µs) |',
    '| --- | ---: | ---: | --- |',
    ...rr.map((r) => `| ${r.scenario} | ${r.usPerRoundTrip.toFixed(2)} | ${(r.usPerRoundTrip / (rr[0]?.usPerRoundTrip ?? 1)).toFixed(2)}× | ${r.runs.map((x) => x.toFixed(2)).join(', ')} |`),
    '',
  ];
  return `${lines.join('\n')}\n`;
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
