/**
 * Real traffic between network namespaces for the datapath tests: the echo server and client
 * of bench/datapath/echo-scripts.ts run inside a namespace (`ip netns exec`, argv only), and
 * a one-packet ping. Each probe answers "did the reply come back", which is what a zone,
 * conntrack or NAT test asserts.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { ECHO_CLIENT, ECHO_SERVER } from '../../bench/datapath/echo-scripts';

/** Runs `ip` with these arguments (throws with its stderr on failure). */
export function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: 'pipe' });
}

/** The TCP and UDP port an echo server listens on. */
export interface EchoPorts {
  tcp: number;
  udp: number;
}

/** Echo servers started in namespaces; `stopAll()` ends them (call it in `afterAll`). */
export class EchoServers {
  private readonly children: ChildProcess[] = [];

  /** Starts an echo server in `ns`; resolves to its ports once it listens. */
  async start(ns: string): Promise<EchoPorts> {
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', ECHO_SERVER, '--', '1'], { stdio: ['ignore', 'pipe', 'inherit'] });
    this.children.push(child);
    const line = await new Promise<string>((resolve, reject) => {
      createInterface({ input: child.stdout! }).once('line', resolve);
      child.once('exit', (code) => reject(new Error(`echo server in ${ns} exited with ${code}`)));
    });
    const ports = JSON.parse(line) as { tcp: number[]; udp: number[] };
    return { tcp: ports.tcp[0] as number, udp: ports.udp[0] as number };
  }

  stopAll(): void {
    for (const child of this.children) child.kill();
  }
}

/** One request/response from `ns` to `host:port`: true when the answer came back within the timeout. */
export function echo(ns: string, proto: 'tcp' | 'udp', host: string, port: number, timeoutMs = 1500): boolean {
  return spawnSync('ip', ['netns', 'exec', ns, process.execPath, '-e', ECHO_CLIENT, '--', proto, host, String(port), String(timeoutMs), '1'], { stdio: 'ignore' }).status === 0;
}

/** One ping from `ns` to `to` (1 s): true when it was answered. */
export function ping(ns: string, to: string): boolean {
  return spawnSync('ip', ['netns', 'exec', ns, 'ping', '-n', '-q', '-c', '1', '-W', '1', to], { stdio: 'ignore' }).status === 0;
}
