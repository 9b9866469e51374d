/**
 * EVE inputs on real files and sockets: the file tail across rotation (rename + create,
 * like logrotate), truncation (copytruncate) and lines written in pieces; the unix socket
 * Suricata's `unix_stream` output connects to; NDJSON over HTTP. Bad lines are counted
 * with their reason and do not stop the stream.
 */
import { appendFileSync, mkdtempSync, renameSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import type { Server as HttpServer } from 'node:http';
import { createConnection, type AddressInfo, type Server as NetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { EveFileTail } from '../../ingest/eve-tail';
import { listenNdjsonHttp, listenUnixSocket, type NdjsonResponse } from '../../ingest/line-servers';
import { IngestPipeline } from '../../ingest/pipeline';
import { DEFAULT_RULES_FILE } from '../../ingest/config';
import { RuleEvaluator } from '../../rules/evaluator';
import { EnforcementGuard, guardConfigSchema } from '../../model/enforcement-guard';
import { loadRuleSetFile } from '../../rules/rule-set';
import { DEFAULT_ROLES, hashToken, TokenFileAuthenticator } from '../../auth/token-file';
import { until } from '../helpers/eventually';
import { describePrivileged } from '../helpers/capabilities';
import { sharedLines } from '../helpers/shared-data';

const SAMPLE = sharedLines('suricata', 'eve', 'eve-alerts.log');

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'fos1-eve-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** Polls until `check` holds (the tail also reacts to inotify; this only bounds the wait). */

describePrivileged('EVE file tail', ['shared-data'], () => {
  test('follows appends, a line written in two pieces, rotation and truncation without losing or repeating a line', async () => {
    const path = join(dir, 'eve.json');
    writeFileSync(path, `${SAMPLE[0]}\n`);
    const seen: string[] = [];
    const tail = new EveFileTail(path, { from: 'end', pollMs: 50, onLine: (l) => void seen.push(l) });
    await tail.start();
    try {
      // from: 'end' skips what was there before.
      appendFileSync(path, `${SAMPLE[1]}\n`);
      await until(() => seen.length === 1, 'the appended line');
      expect(seen).toEqual([SAMPLE[1]]);

      // A line arriving in two writes is one line, emitted once complete.
      appendFileSync(path, SAMPLE[2]!.slice(0, 40));
      await tail.poll();
      expect(seen).toHaveLength(1);
      appendFileSync(path, `${SAMPLE[2]!.slice(40)}\n`);
      await until(() => seen.length === 2, 'the completed line');
      expect(seen[1]).toBe(SAMPLE[2]);

      // Rotation: a last line lands in the old file after the rename, then a new file appears.
      renameSync(path, `${path}.1`);
      appendFileSync(`${path}.1`, `${SAMPLE[3]}\n`);
      writeFileSync(path, `${SAMPLE[4]}\n`);
      await until(() => seen.length === 4, 'the lines around the rotation');
      expect(seen.slice(2)).toEqual([SAMPLE[3], SAMPLE[4]]);
      expect(tail.stats.rotations).toBe(1);

      // Truncation in place (copytruncate), refilled past the old size before the tail
      // looks again: noticed by content, not by size.
      await tail.poll();
      truncateSync(path, 0);
      appendFileSync(path, `${SAMPLE[5]}\n${SAMPLE[6]}\n`);
      await tail.poll();
      await until(() => seen.length === 6, 'the lines after truncation');
      expect(seen.slice(4)).toEqual([SAMPLE[5], SAMPLE[6]]);
      expect(tail.stats.truncations).toBe(1);

      // And a plain truncation to a shorter file.
      truncateSync(path, 0);
      appendFileSync(path, '{"timestamp":"2026-01-01T00:00:00Z","event_type":"dns"}\n');
      await until(() => seen.length === 7, 'the short line');
      expect(tail.stats.truncations).toBe(2);
    } finally {
      await tail.stop();
    }
  });

  test('waits for a file that does not exist yet, and reads from the start when asked', async () => {
    const path = join(dir, 'later.json');
    const seen: string[] = [];
    const tail = new EveFileTail(path, { from: 'start', pollMs: 50, onLine: (l) => void seen.push(l) });
    await tail.start();
    try {
      writeFileSync(path, `${SAMPLE[0]}\n${SAMPLE[1]}\n`);
      await until(() => seen.length === 2, 'both lines');
      expect(seen).toEqual([SAMPLE[0], SAMPLE[1]]);
    } finally {
      await tail.stop();
    }
  });
});

describePrivileged('EVE through the pipeline from every input', ['shared-data'], () => {
  function pipeline(): IngestPipeline {
    const evaluator = new RuleEvaluator(loadRuleSetFile(DEFAULT_RULES_FILE), new EnforcementGuard(guardConfigSchema.parse({})));
    return new IngestPipeline({ evaluator, logger: pino({ level: 'silent' }) });
  }

  test('tail: bad lines are counted with their reason and the stream goes on', async () => {
    const path = join(dir, 'eve.json');
    writeFileSync(path, '');
    const p = pipeline();
    const tail = new EveFileTail(path, { from: 'start', pollMs: 50, onLine: (l) => p.eveLine(l) });
    await tail.start();
    try {
      appendFileSync(path, ['{"broken', SAMPLE[21], '{"timestamp":"2026-01-01T00:00:00Z"}', SAMPLE[0], ''].join('\n'));
      await until(() => p.stats.lines === 4, 'four lines');
      expect(p.stats).toMatchObject({ lines: 4, accepted: 2, rejected: 2, decisions: { 'rate-limit': 1, notify: 1 } });
      expect(Object.keys(p.stats.rejectedBy).sort()).toEqual(['event_type', 'not JSON']);
    } finally {
      await tail.stop();
    }
  });

  test('unix socket: lines from a connected sensor, split across writes', async () => {
    const p = pipeline();
    const path = join(dir, 'eve.sock');
    const server: NetServer = await listenUnixSocket(path, (l) => p.eveLine(l, 'socket'));
    try {
      await new Promise<void>((resolve, reject) => {
        const client = createConnection(path, () => {
          const text = `${SAMPLE[0]}\n${SAMPLE[21]}\nnot json\n`;
          client.write(text.slice(0, 100));
          client.end(text.slice(100));
        });
        client.on('close', () => resolve());
        client.on('error', reject);
      });
      await until(() => p.stats.lines === 3, 'three lines');
      expect(p.stats).toMatchObject({ accepted: 2, rejected: 1, decisions: { notify: 1, 'rate-limit': 1 } });
    } finally {
      await new Promise((r) => server.close(r));
    }
  });

  const INGEST_TOKEN = 'ingest-token-for-tests';
  const VIEWER_TOKEN = 'viewer-token-for-tests';
  const authenticator = new TokenFileAuthenticator({
    tokens: [
      { sha256: hashToken(INGEST_TOKEN), principal: 'suricata', roles: ['ingest'] },
      { sha256: hashToken(VIEWER_TOKEN), principal: 'grafana', roles: ['viewer'] },
    ],
    roles: DEFAULT_ROLES,
  });
  const listen = (p: IngestPipeline, maxLines?: number) =>
    listenNdjsonHttp(0, (l) => p.eveLine(l, 'http'), { security: { authenticator }, logger: pino({ level: 'silent' }), ...(maxLines ? { maxLines } : {}) });
  const ndjson = (token: string) => ({ authorization: `Bearer ${token}`, 'content-type': 'application/x-ndjson' });

  test('HTTP: POST /v1/eve NDJSON answers with counts and the reasons of refused lines', async () => {
    const p = pipeline();
    const server: HttpServer = await listen(p);
    try {
      const { port } = server.address() as AddressInfo;
      const body = [...SAMPLE.slice(0, 6), '{"event_type":"alert"}', ''].join('\n');
      const res = await fetch(`http://127.0.0.1:${port}/v1/eve`, { method: 'POST', headers: ndjson(INGEST_TOKEN), body });
      expect(res.status).toBe(200);
      expect((await res.json()) as NdjsonResponse).toEqual({
        lines: 7,
        accepted: 6,
        rejected: 1,
        errors: [{ line: 7, reason: 'timestamp: Invalid input: expected string, received undefined' }],
      });
      // The 3rd leak alert within 10 minutes was the 5th line: quarantine, as documented.
      expect(p.stats.decisions).toEqual({ notify: 5, quarantine: 1 });
      expect((await fetch(`http://127.0.0.1:${port}/other`, { headers: ndjson(INGEST_TOKEN) })).status).toBe(404);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });

  test('HTTP: no token is 401 on every route, a token without ingest is 403, a non-NDJSON body 415, a foreign Origin 403 — and no line is read', async () => {
    const p = pipeline();
    const server: HttpServer = await listen(p);
    try {
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const body = `${SAMPLE[0]}\n`;
      for (const [method, path] of [['POST', '/v1/eve'], ['GET', '/v1/eve'], ['GET', '/other']] as const) {
        const res = await fetch(base + path, { method, ...(method === 'POST' ? { body, headers: { 'content-type': 'application/x-ndjson' } } : {}) });
        expect(res.status).toBe(401);
        expect(res.headers.get('www-authenticate')).toMatch(/^Bearer/);
      }
      expect((await fetch(`${base}/v1/eve`, { method: 'POST', headers: ndjson('not-a-token'), body })).status).toBe(401);
      const forbidden = await fetch(`${base}/v1/eve`, { method: 'POST', headers: ndjson(VIEWER_TOKEN), body });
      expect(forbidden.status).toBe(403);
      expect(((await forbidden.json()) as { error: string }).error).toBe('grafana may not ingest alerts.fos1.io');
      const plain = await fetch(`${base}/v1/eve`, { method: 'POST', headers: { authorization: `Bearer ${INGEST_TOKEN}`, 'content-type': 'text/plain' }, body });
      expect(plain.status).toBe(415);
      const foreign = await fetch(`${base}/v1/eve`, { method: 'POST', headers: { ...ndjson(INGEST_TOKEN), origin: 'http://evil.example' }, body });
      expect(foreign.status).toBe(403);
      expect(p.stats.lines).toBe(0);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });

  test('HTTP: a request over the line cap is cut off with 413 after the cap', async () => {
    const p = pipeline();
    const server: HttpServer = await listen(p, 3);
    try {
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const res = await fetch(`${base}/v1/eve`, { method: 'POST', headers: ndjson(INGEST_TOKEN), body: `${SAMPLE.slice(0, 5).join('\n')}\n` });
      expect(res.status).toBe(413);
      expect(((await res.json()) as { error: string }).error).toContain('more than 3 lines');
      expect(p.stats.lines).toBe(3);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});
