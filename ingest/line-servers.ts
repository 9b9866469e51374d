/**
 * Two more ways EVE reaches fos1:
 *
 * - a unix stream socket: Suricata's `eve-log` with `filetype: unix_stream` connects to
 *   a socket the collector listens on and writes one record per line;
 * - NDJSON over HTTP: `POST /v1/eve` with `Content-Type: application/x-ndjson` (any
 *   body of newline-separated records), answered with how many lines were accepted and
 *   why the others were not.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer } from 'node:http';
import { createServer as createNetServer, type Server as NetServer } from 'node:net';
import { rmSync, statSync } from 'node:fs';
import type { LineResult } from './pipeline';
import { LineSplitter } from './line-splitter';

/** Handles one line; returns what became of it. */
export type LineHandler = (line: string) => Promise<LineResult>;

/**
 * Listens on a unix socket at `path` and feeds every line of every connection to
 * `onLine` (in order per connection; the socket is paused while a line is handled, so a
 * slow consumer pushes back on the sensor instead of buffering without bound).
 */
export async function listenUnixSocket(path: string, onLine: LineHandler): Promise<NetServer> {
  // A socket file left by a crashed collector makes listen() fail with EADDRINUSE.
  try {
    if (statSync(path).isSocket()) rmSync(path);
  } catch {
    // not there
  }
  const server = createNetServer((socket) => {
    const splitter = new LineSplitter();
    let chain = Promise.resolve();
    socket.on('data', (chunk: Buffer) => {
      const lines = splitter.push(chunk);
      if (lines.length === 0) return;
      socket.pause();
      chain = chain
        .then(async () => {
          for (const line of lines) await onLine(line);
        })
        .finally(() => socket.resume());
    });
    socket.on('end', () => {
      chain = chain.then(async () => {
        for (const line of splitter.end()) await onLine(line);
      });
    });
    socket.on('error', () => socket.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}

/** Answer of `POST /v1/eve`. */
export interface NdjsonResponse {
  lines: number;
  accepted: number;
  rejected: number;
  /** The first rejections, with their line numbers and reasons. */
  errors: { line: number; reason: string }[];
}

/**
 * An HTTP server taking NDJSON EVE at `POST /v1/eve`. Listens on 127.0.0.1 by default:
 * it is an ingestion port, not something to expose.
 */
export async function listenNdjsonHttp(port: number, onLine: LineHandler, host = '127.0.0.1'): Promise<HttpServer> {
  const server = createHttpServer((req, res) => {
    if (req.method !== 'POST' || (req.url ?? '').split('?')[0] !== '/v1/eve') {
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'POST NDJSON to /v1/eve' }));
      return;
    }
    handleNdjson(req, onLine).then(
      (result) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(result)),
      (err: unknown) => res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ error: err instanceof Error ? err.message : String(err) })),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}

async function handleNdjson(req: IncomingMessage, onLine: LineHandler): Promise<NdjsonResponse> {
  const splitter = new LineSplitter();
  const result: NdjsonResponse = { lines: 0, accepted: 0, rejected: 0, errors: [] };
  const handle = async (line: string) => {
    const outcome = await onLine(line);
    if ('skipped' in outcome) return;
    result.lines++;
    if (outcome.ok) result.accepted++;
    else {
      result.rejected++;
      if (result.errors.length < 20) result.errors.push({ line: result.lines, reason: outcome.reason });
    }
  };
  // Streaming: a large body is processed as it arrives, never held whole.
  for await (const chunk of req) for (const line of splitter.push(chunk as Buffer)) await handle(line);
  for (const line of splitter.end()) await handle(line);
  return result;
}
