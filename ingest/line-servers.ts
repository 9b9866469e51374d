/**
 * Two more ways EVE reaches fos1:
 *
 * - a unix stream socket: Suricata's `eve-log` with `filetype: unix_stream` connects to
 *   a socket the collector listens on and writes one record per line;
 *   (protected by the socket file's permissions: only who may write the file may send);
 * - NDJSON over HTTP: `POST /v1/eve` with `Content-Type: application/x-ndjson` (any
 *   body of newline-separated records), answered with how many lines were accepted and
 *   why the others were not. A bearer token with `ingest` on `alerts.fos1.io` is required
 *   (auth/http-guard.ts: 401/403), as is the media type (415); a body of more lines than
 *   the cap is cut off with 413 after the cap's lines were handled. The answer comes once
 *   the decisions of the request are handed to Temporal or kept in the decision spool, so a
 *   200 means nothing of it can be lost; while the spool is full the request is cut off
 *   with 503 and `Retry-After`, saying how many lines were taken (resend the rest).
 */
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { applyServerLimits, HttpGuard, HttpRefusal, type HttpSecurityOptions } from '../auth/http-guard';
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
        .then(
          () => void socket.resume(),
          // Not taken (shutting down with the spool full): the sender must not think it was.
          () => void socket.destroy(),
        );
    });
    socket.on('end', () => {
      chain = chain
        .then(async () => {
          for (const line of splitter.end()) await onLine(line);
        })
        .catch(() => void socket.destroy());
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

/** Options of {@link listenNdjsonHttp}. */
export interface NdjsonHttpOptions {
  /** Default 127.0.0.1: an ingestion port, not something to expose. */
  host?: string;
  security: HttpSecurityOptions;
  logger: Logger;
  /** Lines one request may carry (default 10 000); more are answered 413. */
  maxLines?: number;
  /** Awaited before answering: the decisions of the request's lines are handed over or kept. */
  settle?: () => Promise<void>;
  /** Seconds a refused sender is told to wait when the spool is full (default 5). */
  retryAfterSeconds?: number;
}

/** Too many lines in one request. */
class TooManyLines extends Error {}

/** The decision spool is full: the request's remaining lines were not taken. */
class SpoolFull extends Error {}

/** An HTTP server taking NDJSON EVE at `POST /v1/eve` (see the module comment). */
export async function listenNdjsonHttp(port: number, onLine: LineHandler, options: NdjsonHttpOptions): Promise<HttpServer> {
  const guard = new HttpGuard(options.security, options.logger);
  const maxLines = options.maxLines ?? 10_000;
  const json = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) =>
    res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));
  const server = createHttpServer((req, res) => {
    void (async () => {
      try {
        guard.admit(req, res);
        const principal = await guard.authenticate(req);
        if (req.method !== 'POST' || (req.url ?? '').split('?')[0] !== '/v1/eve') return json(res, 404, { error: 'POST NDJSON to /v1/eve' });
        await guard.authorize(req, principal, { resource: 'alerts', verb: 'ingest' });
        guard.requireMediaType(req, 'application/x-ndjson');
        const result = await handleNdjson(req, onLine, maxLines);
        await options.settle?.();
        return json(res, 200, result);
      } catch (err) {
        if (err instanceof HttpRefusal) return json(res, err.status, { error: err.message }, err.headers);
        // The lines taken before the cut are handed over or kept before the answer, too.
        if (err instanceof TooManyLines || err instanceof SpoolFull) await options.settle?.();
        if (err instanceof TooManyLines) return json(res, 413, { error: err.message }, { connection: 'close' });
        if (err instanceof SpoolFull) return json(res, 503, { error: err.message }, { connection: 'close', 'retry-after': String(options.retryAfterSeconds ?? 5) });
        return json(res, 400, { error: err instanceof Error ? err.message : String(err) });
      }
    })();
  });
  applyServerLimits(server, options.security);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, options.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}

async function handleNdjson(req: IncomingMessage, onLine: LineHandler, maxLines: number): Promise<NdjsonResponse> {
  const splitter = new LineSplitter();
  const result: NdjsonResponse = { lines: 0, accepted: 0, rejected: 0, errors: [] };
  let seen = 0;
  const handle = async (line: string) => {
    // Counted before handling: the cap bounds the work one request can cause.
    if (++seen > maxLines) throw new TooManyLines(`more than ${maxLines} lines in one request; the first ${maxLines} were handled (${result.accepted} accepted), send the rest in another`);
    const outcome = await onLine(line);
    if ('skipped' in outcome) return;
    if ('full' in outcome) throw new SpoolFull(`${outcome.reason}: lines after ${result.lines} were not taken (${result.accepted} accepted before); send them again after Retry-After`);
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
