/**
 * The `/metrics` listener of a fos1 process: its own port (`FOS1_METRICS_PORT`), separate from
 * the API's authenticated listener, bound to loopback unless `FOS1_METRICS_HOST` says otherwise
 * (a pod that Prometheus scrapes over the pod network sets 0.0.0.0 and relies on a
 * NetworkPolicy). It serves nothing but `GET /metrics` in the Prometheus text format.
 */
import { createServer, type Server } from 'node:http';
import { registry } from './registry';

/** Serves the registry at `GET /metrics`; resolves once it listens. */
export async function startMetricsServer(options: { port: number; host: string }): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/metrics') return void res.writeHead(404).end();
    if (req.method !== 'GET' && req.method !== 'HEAD') return void res.writeHead(405, { allow: 'GET, HEAD' }).end();
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      () => res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end('collecting metrics failed\n'),
    );
  });
  server.requestTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}
