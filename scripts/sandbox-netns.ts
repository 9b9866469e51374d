/**
 * Network namespaces standing in for router nodes, for the dev stack and tests.
 *
 * One node: loopback up and a veth pair (`lan0` ↔ `lan1`, both inside) with the given
 * addresses on `lan0`, so routes via the `.1` / `::1` of those networks have an on-link
 * gateway. A fleet: such nodes `router-1..N`, each also with `up0`, a veth to the bridge of
 * an "upstream" namespace (10.200.255.1, with a tiny TCP service), so probes between nodes
 * and to the upstream are real traffic.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';

/** Creates namespace `name` (it must not exist) with `lan0` carrying `addresses` (CIDR, v4 or v6). */
export function createSandboxNamespace(name: string, addresses: readonly string[]): void {
  execFileSync('ip', ['netns', 'add', name]);
  const run = (...args: string[]) => execFileSync('ip', ['-n', name, ...args]);
  run('link', 'set', 'lo', 'up');
  run('link', 'add', 'lan0', 'type', 'veth', 'peer', 'name', 'lan1');
  run('link', 'set', 'lan0', 'up');
  run('link', 'set', 'lan1', 'up');
  // IPv6 without duplicate address detection: the address is usable at once.
  for (const address of addresses) run('addr', 'add', address, 'dev', 'lan0', ...(address.includes(':') ? ['nodad'] : []));
}

/** The sandbox "upstream" every fleet node is wired to (bridge `br0` in its own namespace). */
export const UPSTREAM_V4 = '10.200.255.1';
export const UPSTREAM_V6 = 'fd00:200:ffff::1';
/** Port of the upstream's tiny TCP service (answers one line and closes). */
export const UPSTREAM_TCP_PORT = 8000;
/** Largest fleet the address plan holds (10.200.255.11 … .250, LANs 10.200.0–239.0/24). */
export const MAX_SANDBOX_FLEET = 240;

/** One sandbox router node of a fleet. */
export interface SandboxFleetNode {
  /** `router-<i>`. */
  name: string;
  /** Its network namespace. */
  netns: string;
  /** 1-based position. */
  index: number;
  /** Address of `up0` (on the upstream bridge), v4 and v6. */
  upstream: { v4: string; v6: string };
  /** Addresses of `lan0` (CIDR); gateways are the .1 / ::1 of those networks. */
  lan: [string, string];
}

/** A fleet's layout: pure, so tests and the dev stack agree on names and addresses. */
export interface SandboxFleet {
  upstream: { netns: string; v4: string; v6: string; tcpPort: number };
  nodes: SandboxFleetNode[];
}

/**
 * The layout of `size` sandbox routers `router-1..size`: node 1 in `firstNetns` (the dev
 * stack's `fos1-dev`, whose addresses the README's first change uses), node i in
 * `<prefix>-<i>`, the upstream in `<prefix>-upstream`.
 */
export function sandboxFleetLayout(options: { prefix: string; size: number; firstNetns?: string }): SandboxFleet {
  const { prefix, size } = options;
  if (!Number.isInteger(size) || size < 1 || size > MAX_SANDBOX_FLEET) throw new RangeError(`fleet size must be 1–${MAX_SANDBOX_FLEET}, got ${size}`);
  const nodes = Array.from({ length: size }, (_, k): SandboxFleetNode => {
    const i = k + 1;
    return {
      name: `router-${i}`,
      netns: i === 1 && options.firstNetns ? options.firstNetns : `${prefix}-${i}`,
      index: i,
      upstream: { v4: `10.200.255.${10 + i}`, v6: `fd00:200:ffff::${(10 + i).toString(16)}` },
      lan: [`10.200.${i - 1}.2/24`, `fd00:200:${(i - 1).toString(16)}::2/64`],
    };
  });
  return { upstream: { netns: `${prefix}-upstream`, v4: UPSTREAM_V4, v6: UPSTREAM_V6, tcpPort: UPSTREAM_TCP_PORT }, nodes };
}

function namespaces(): Set<string> {
  const out = execFileSync('ip', ['-json', 'netns', 'list']).toString();
  return new Set((JSON.parse(out || '[]') as { name: string }[]).map((n) => n.name));
}

function linkExists(netns: string, name: string): boolean {
  try {
    execFileSync('ip', ['-n', netns, 'link', 'show', 'dev', name], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * Creates what is missing of a fleet (idempotent: existing namespaces and what fos1 put
 * in them stay): the upstream namespace with bridge `br0` carrying 10.200.255.1/24 and
 * fd00:200:ffff::1/64, and per node a sandbox namespace whose `up0` is a veth to the
 * bridge, so probes between nodes and to the upstream are real traffic.
 */
export function ensureSandboxFleet(fleet: SandboxFleet): void {
  const existing = namespaces();
  const up = fleet.upstream.netns;
  const inUp = (...args: string[]) => execFileSync('ip', ['-n', up, ...args]);
  if (!existing.has(up)) {
    execFileSync('ip', ['netns', 'add', up]);
    inUp('link', 'set', 'lo', 'up');
    inUp('link', 'add', 'br0', 'type', 'bridge');
    inUp('addr', 'add', `${fleet.upstream.v4}/24`, 'dev', 'br0');
    inUp('addr', 'add', `${fleet.upstream.v6}/64`, 'dev', 'br0', 'nodad');
    inUp('link', 'set', 'br0', 'up');
  }
  for (const node of fleet.nodes) {
    if (!existing.has(node.netns)) createSandboxNamespace(node.netns, node.lan);
    if (linkExists(node.netns, 'up0')) continue;
    const peer = `r${node.index}`;
    const inNode = (...args: string[]) => execFileSync('ip', ['-n', node.netns, ...args]);
    inNode('link', 'add', 'up0', 'type', 'veth', 'peer', 'name', peer, 'netns', up);
    inUp('link', 'set', peer, 'master', 'br0');
    inUp('link', 'set', peer, 'up');
    inNode('addr', 'add', `${node.upstream.v4}/24`, 'dev', 'up0');
    inNode('addr', 'add', `${node.upstream.v6}/64`, 'dev', 'up0', 'nodad');
    inNode('link', 'set', 'up0', 'up');
  }
}

/** Deletes a fleet's namespaces (tests; the dev stack keeps its fleet across restarts). */
export function removeSandboxFleet(fleet: SandboxFleet): void {
  const existing = namespaces();
  for (const ns of [...fleet.nodes.map((n) => n.netns), fleet.upstream.netns]) {
    if (existing.has(ns)) execFileSync('ip', ['netns', 'del', ns]);
  }
}

/** The upstream's TCP service: accepts, writes one line, closes. Run by `node -e` inside the namespace. */
const UPSTREAM_SERVICE_SOURCE = `
const net = require('node:net');
const port = Number(process.argv[1]);
const server = net.createServer((s) => { s.on('error', () => {}); s.end('fos1 upstream\\n'); });
server.on('error', (e) => { console.error('upstream service: ' + e.code); process.exit(e.code === 'EADDRINUSE' ? 3 : 1); });
server.listen({ port, host: '::', ipv6Only: false }, () => console.log('listening'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
`;

/**
 * Starts the upstream's TCP service in `fleet.upstream.netns` (a child process; kill it to
 * stop the service). Resolves once it listens; exit code 3 means another process already
 * serves the port (a dev stack that did not stop cleanly): treated as running.
 */
export function startUpstreamService(fleet: SandboxFleet): Promise<ChildProcess> {
  const child = spawn('ip', ['netns', 'exec', fleet.upstream.netns, process.execPath, '-e', UPSTREAM_SERVICE_SOURCE, String(fleet.upstream.tcpPort)], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout?.once('data', () => resolve(child));
    child.once('exit', (code) => (code === 3 ? resolve(child) : reject(new Error(`upstream TCP service exited (${code}): ${stderr.trim().slice(0, 200)}`))));
    child.once('error', reject);
  });
}
