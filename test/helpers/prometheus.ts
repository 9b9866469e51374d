/**
 * A real Prometheus server (Debian's `prometheus`, scripts/bootstrap.d/65-prometheus.sh) for
 * gate tests: its own process with a temp config and data folder on a free port, scraping
 * a tiny in-test exporter every second. Readiness is Prometheus's own `/-/ready`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eventually } from './eventually';

/** An HTTP exporter serving gauges in the Prometheus text format at `/metrics`. */
export interface GaugeExporter {
  port: number;
  /** Sets a gauge (with optional labels) that the next scrape sees. */
  set(name: string, value: number, labels?: Record<string, string>): void;
  stop(): Promise<void>;
}

/** Starts the exporter on 127.0.0.1, a free port. */
export async function startGaugeExporter(): Promise<GaugeExporter> {
  const gauges = new Map<string, { name: string; labels: Record<string, string>; value: number }>();
  const server: Server = createServer((req, res) => {
    if (req.url !== '/metrics') return void res.writeHead(404).end();
    const lines: string[] = [];
    for (const g of gauges.values()) {
      const labels = Object.entries(g.labels).map(([k, v]) => `${k}="${v}"`).join(',');
      lines.push(`# TYPE ${g.name} gauge`, `${g.name}${labels ? `{${labels}}` : ''} ${g.value}`);
    }
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(`${lines.join('\n')}\n`);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    set(name, value, labels = {}) {
      gauges.set(`${name}${JSON.stringify(labels)}`, { name, labels, value });
    },
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** A running Prometheus. */
export interface RunningPrometheus {
  /** `http://127.0.0.1:<port>`. */
  address: string;
  /** Runs an instant query, returning the raw JSON body. */
  query(promql: string): Promise<{ status: string; data?: { resultType: string; result: { metric: Record<string, string>; value: [number, string] }[] } }>;
  stop(): Promise<void>;
}

/** A port nobody listens on at the moment (127.0.0.1). */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** Starts Prometheus scraping `targets` (host:port) every second; resolves once `/-/ready` answers 200. */
export async function startPrometheus(targets: string[]): Promise<RunningPrometheus> {
  const dir = mkdtempSync(join(tmpdir(), 'fos1-prometheus-'));
  const config = join(dir, 'prometheus.yml');
  writeFileSync(
    config,
    ['global:', '  scrape_interval: 1s', '  evaluation_interval: 1s', 'scrape_configs:', '  - job_name: fos1-test', '    static_configs:', `      - targets: [${targets.map((t) => `'${t}'`).join(', ')}]`, ''].join('\n'),
  );
  const port = await freePort();
  const address = `http://127.0.0.1:${port}`;
  const child: ChildProcess = spawn(
    'prometheus',
    [`--config.file=${config}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
  const stop = async () => {
    if (child.exitCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await eventually(
      async () => {
        if (child.exitCode !== null) throw new Error(`prometheus exited (${child.exitCode}): ${stderr}`);
        try {
          return (await fetch(`${address}/-/ready`, { signal: AbortSignal.timeout(1000) })).status;
        } catch {
          return 0;
        }
      },
      (status) => status === 200,
      'Prometheus /-/ready',
      60_000,
      100,
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    address,
    async query(promql) {
      const r = await fetch(`${address}/api/v1/query?query=${encodeURIComponent(promql)}`);
      return (await r.json()) as Awaited<ReturnType<RunningPrometheus['query']>>;
    },
    stop,
  };
}
