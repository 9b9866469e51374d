/**
 * Two network namespaces joined by a veth pair — a client (`a`) and a server (`b`) —
 * with IPv4 and IPv6 addresses, for the datapath tests and the benchmark. Every
 * command is an argv array; nothing leaves the namespaces.
 *
 *   netns a: veth a0  10.99.0.1/24  fd00:99::1/64
 *   netns b: veth b0  10.99.0.2/24  fd00:99::2/64   ← fos1's programs attach here
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { ECHO_CLIENT, ECHO_SERVER } from './echo-scripts';

export const ADDR = { a4: '10.99.0.1', b4: '10.99.0.2', a6: 'fd00:99::1', b6: 'fd00:99::2' } as const;

/** Result of one client run. */
export interface EchoResult {
  ok: boolean;
  rounds?: number;
  ns?: number;
  error?: string;
}

/** Ports of a running echo server in namespace b. */
export interface EchoServer {
  tcp: number[];
  udp: number[];
  stop(): void;
}

export class NetnsPair {
  readonly a: string;
  readonly b: string;
  readonly ifA = 'a0';
  readonly ifB = 'b0';
  readonly #servers: ChildProcess[] = [];

  private constructor(tag: string) {
    this.a = `fos1dp-${tag}-a`;
    this.b = `fos1dp-${tag}-b`;
  }

  static create(): NetnsPair {
    const pair = new NetnsPair(randomBytes(3).toString('hex'));
    try {
      const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe' });
      ip('netns', 'add', pair.a);
      ip('netns', 'add', pair.b);
      ip('-n', pair.a, 'link', 'add', pair.ifA, 'type', 'veth', 'peer', 'name', pair.ifB, 'netns', pair.b);
      for (const [ns, dev, v4, v6] of [
        [pair.a, pair.ifA, ADDR.a4, ADDR.a6],
        [pair.b, pair.ifB, ADDR.b4, ADDR.b6],
      ] as const) {
        ip('-n', ns, 'link', 'set', 'lo', 'up');
        ip('-n', ns, 'addr', 'add', `${v4}/24`, 'dev', dev);
        ip('-n', ns, 'addr', 'add', `${v6}/64`, 'dev', dev, 'nodad');
        ip('-n', ns, 'link', 'set', dev, 'up');
      }
      // A fresh veth needs a moment (carrier, IPv6 routes, neighbour discovery):
      // wait until both families answer so the first real test does not see it.
      for (const to of [ADDR.b4, ADDR.b6]) {
        let tries = 0;
        while (!pair.ping(to, 1)) {
          if (++tries === 10) throw new Error(`${to} never answered from ${pair.a}`);
        }
      }
    } catch (err) {
      pair.destroy();
      throw err;
    }
    return pair;
  }

  /** One ping from a to `to` (default b's IPv4), waiting at most `timeoutSec`. */
  ping(to: string = ADDR.b4, timeoutSec = 1): boolean {
    const r = spawnSync('ip', ['netns', 'exec', this.a, 'ping', '-n', '-q', '-c', '1', '-W', String(timeoutSec), to], { stdio: 'ignore' });
    return r.status === 0;
  }

  /** Starts the echo server in b with `count` TCP and `count` UDP ports. */
  async startEchoServer(count = 1): Promise<EchoServer> {
    const child = spawn('ip', ['netns', 'exec', this.b, process.execPath, '-e', ECHO_SERVER, '--', String(count)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    this.#servers.push(child);
    const line = await new Promise<string>((resolve, reject) => {
      const rl = createInterface({ input: child.stdout! });
      rl.once('line', resolve);
      child.once('exit', (code) => reject(new Error(`echo server exited with ${code}`)));
    });
    const ports = JSON.parse(line) as { tcp: number[]; udp: number[] };
    return { ...ports, stop: () => child.kill() };
  }

  /** Runs the echo client in a: `rounds` request/response exchanges over TCP or UDP. */
  echo(proto: 'tcp' | 'udp', host: string, port: number, timeoutMs = 800, rounds = 1): EchoResult {
    const r = spawnSync(
      'ip',
      ['netns', 'exec', this.a, process.execPath, '-e', ECHO_CLIENT, '--', proto, host, String(port), String(timeoutMs), String(rounds)],
      { encoding: 'utf8' },
    );
    if (r.status === 0) return { ok: true, ...(JSON.parse(r.stdout) as { rounds: number; ns: number }) };
    return { ok: false, error: (r.stderr || String(r.error ?? r.status)).trim() };
  }

  /** Kills servers and deletes both namespaces (the veth pair goes with them). */
  destroy(): void {
    for (const s of this.#servers.splice(0)) s.kill();
    for (const ns of [this.a, this.b]) spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  }
}
