/**
 * The `fos1` CLI end to end: bin/fos1.js run as a child process (argv, no shell) against
 * the real HTTP API on a real Temporal dev server and a real node (netns + pinned maps),
 * authenticated with a token file like the dev stack's. Privileged: root, netns, bpffs,
 * the built Temporal CLI.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import pino from 'pino';
import { stringify as toYaml } from 'yaml';
import { DEFAULT_ROUTE_PROTOCOL } from '../../activities/system/route-table';
import { changeListSchema, changeStatusSchema } from '../../api/schemas';
import { startApiServer } from '../../api/server';
import { removePinnedBlocklist } from '../../bpf/blocklist-maps';
import { testTokens } from '../helpers/api-tokens';
import { describePrivileged } from '../helpers/capabilities';
import { eventually } from '../helpers/eventually';
import { LAN_GATEWAY_V4, TestNamespace } from '../helpers/netns';
import { startTemporal, startWorkers, type RunningWorkers } from '../helpers/temporal';

const NODE = 'cli-node';
const REPO = resolve(__dirname, '..', '..');
const BIN = join(REPO, 'bin', 'fos1.js');
const { authenticator, tokens } = testTokens({ carol: ['admin'], frank: ['operator'], vic: ['viewer'] });

describePrivileged('fos1 CLI against the real API (privileged)', ['root', 'netns', 'bpffs', 'temporal-cli'], () => {
  let env: TestWorkflowEnvironment;
  let ns: TestNamespace;
  let pinDir: string;
  let workers: RunningWorkers;
  let server: Server;
  let base: string;
  let dir: string;

  beforeAll(async () => {
    env = await startTemporal();
    ns = TestNamespace.create('fos1cli');
    pinDir = `/sys/fs/bpf/fos1-test-cli-${randomBytes(4).toString('hex')}`;
    workers = await startWorkers(env, NODE, { netns: ns.name, routeProtocol: DEFAULT_ROUTE_PROTOCOL, bpfPinDir: pinDir, blocklistMaxEntries: { v4: 64, v6: 64 } });
    server = await startApiServer({ client: env.client, port: 0, host: '127.0.0.1', logger: pino({ level: 'silent' }), security: { authenticator } });
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    dir = mkdtempSync(join(tmpdir(), 'fos1-cli-'));
    for (const [name, token] of Object.entries(tokens)) writeFileSync(join(dir, `${name}.token`), `${token}\n`, { mode: 0o600 });
  });

  afterAll(async () => {
    server?.close();
    await workers?.stop();
    if (pinDir) removePinnedBlocklist(pinDir);
    ns?.destroy();
    await env?.teardown();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Runs `fos1 args…` as `who` (a token file), in an environment without the caller's config or state. */
  function fos1(args: string[], who: keyof typeof tokens | null = 'carol', extraEnv: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
    const childEnv: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: dir,
      XDG_CONFIG_HOME: join(dir, 'config'),
      XDG_STATE_HOME: join(dir, 'state'),
      FOS1_API_URL: base,
      ...(who ? { FOS1_API_TOKEN_FILE: join(dir, `${who}.token`) } : {}),
      ...extraEnv,
    };
    return new Promise((done) => {
      execFile(process.execPath, [BIN, ...args], { env: childEnv, cwd: REPO, timeout: 90_000 }, (err, stdout, stderr) => {
        const code = err ? ((err as { code?: unknown }).code as number) : 0;
        done({ code: typeof code === 'number' ? code : -1, stdout: String(stdout), stderr: String(stderr) });
      });
    });
  }
  const id = () => `cli-${randomBytes(3).toString('hex')}`;
  const change = (changeId: string, patch: object, extra: object = {}) => ({ id: changeId, reason: 'cli test', targets: [NODE], patch, ...extra });
  const writeChange = (name: string, body: object, yaml = true) => {
    const file = join(dir, name);
    writeFileSync(file, yaml ? toYaml(body) : JSON.stringify(body));
    return file;
  };
  const statusJson = async (changeId: string) => {
    const { code, stdout } = await fos1(['status', changeId, '--output', 'json']);
    return code === 0 || code === 1 ? changeStatusSchema.parse(JSON.parse(stdout)) : undefined;
  };

  test('apply -f change.yaml submits; status --watch --output json follows it to applied (exit 0); the route is on the node', async () => {
    const changeId = id();
    const file = writeChange(`${changeId}.yaml`, change(changeId, { routes: { upsert: [{ destination: '10.60.0.0/24', gateway: LAN_GATEWAY_V4 }] } }));
    const applied = await fos1(['apply', '-f', file]);
    expect(applied).toMatchObject({ code: 0, stdout: expect.stringContaining(`change ${changeId} submitted`) });
    const watched = await fos1(['status', changeId, '--watch', '--interval', '200', '--output', 'json']);
    expect(watched.code).toBe(0);
    const lines = watched.stdout.trim().split('\n').map((l) => changeStatusSchema.parse(JSON.parse(l)));
    expect(lines.at(-1)).toMatchObject({ changeId, phase: 'applied', nodes: { [NODE]: { outcome: 'applied' } } });
    const [v4] = ns.routesJson(DEFAULT_ROUTE_PROTOCOL) as { dst: string }[][];
    expect(v4?.map((r) => r.dst)).toContain('10.60.0.0/24');
    // Single-use ids: applying it again is an invalid request (409) → exit 2.
    const again = await fos1(['apply', '-f', file]);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain('already exists');
  });

  test('apply -f - reads JSON from stdin; an invalid change exits 2 naming the field and rule', async () => {
    const changeId = id();
    const bad = writeChange(`${changeId}.json`, change(changeId, { routes: { upsert: [{ destination: '10.61.0.0/24', gateway: LAN_GATEWAY_V4 }] } }, { targets: ['Bad_Node'] }), false);
    const refused = await fos1(['apply', '-f', bad]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('400: invalid change request');
    expect(refused.stderr).toMatch(/targets\[0\]: must be a node name/);
    const child = execFile(process.execPath, [BIN, 'apply', '-f', '-', '--output', 'json'], { env: { PATH: process.env.PATH ?? '', HOME: dir, FOS1_API_URL: base, FOS1_API_TOKEN_FILE: join(dir, 'carol.token') } });
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    child.stdin?.end(JSON.stringify(change(changeId, { blocklist: { upsert: [{ cidr: '192.0.2.61', reason: 'cli stdin' }] } })));
    const code = await new Promise<number | null>((r) => child.on('close', r));
    expect(code).toBe(0);
    expect(JSON.parse(out)).toMatchObject({ changeId, workflowId: `change-${changeId}` });
  });

  test('plan shows each node\'s diff (plain text when not a TTY) and changes nothing', async () => {
    const before = ns.routesJson(DEFAULT_ROUTE_PROTOCOL);
    const file = writeChange('plan.yaml', change(id(), { routes: { upsert: [{ destination: '10.62.0.0/24', gateway: LAN_GATEWAY_V4 }] } }));
    const planned = await fos1(['plan', '-f', file]);
    expect(planned.code).toBe(0);
    expect(planned.stdout.split('\n')).toEqual(expect.arrayContaining([`node ${NODE}`, `  + route 10.62.0.0/24 via ${LAN_GATEWAY_V4} table 254 metric 0`]));
    expect(planned.stdout).not.toContain('\x1b[');
    expect(ns.routesJson(DEFAULT_ROUTE_PROTOCOL)).toEqual(before);
  });

  test('list filters by author and status; --output json is the API\'s answer', async () => {
    const changeId = id();
    const file = writeChange(`${changeId}.yaml`, change(changeId, { blocklist: { upsert: [{ cidr: '192.0.2.62', reason: 'cli list' }] } }));
    expect((await fos1(['apply', '-f', file], 'frank')).code).toBe(0);
    await eventually(() => statusJson(changeId), (s) => s?.phase === 'applied', `${changeId} applied`);
    // Visibility is eventually consistent.
    const listed = await eventually(
      async () => changeListSchema.parse(JSON.parse((await fos1(['list', '--author', 'frank', '--status', 'applied', '--output', 'json'])).stdout)),
      (l) => l.changes.some((c) => c.workflowId === `change-${changeId}`),
      'the change in the filtered list',
    );
    expect(listed.changes.map((c) => c.workflowId)).toEqual([`change-${changeId}`]);
    const table = await fos1(['list', '--author', 'frank']);
    expect(table.code).toBe(0);
    expect(table.stdout.split('\n')[0]).toMatch(/^ID\s+PHASE\s+AUTHOR\s+NODES\s+STARTED$/);
    expect(table.stdout).toMatch(new RegExp(`^${changeId}\\s+applied\\s+frank\\s+${NODE}\\s`, 'm'));
    expect((await fos1(['list', '--author', 'nobody-at-all'])).stdout.trim()).toBe('no changes match');
  });

  test('confirm ends a commit-confirmed change applied; abort --reason reverts one and status --watch exits 1 with plain lines', async () => {
    const confirmed = id();
    expect((await fos1(['apply', '-f', writeChange(`${confirmed}.yaml`, change(confirmed, { blocklist: { upsert: [{ cidr: '192.0.2.63', reason: 'cli confirm' }] } }, { options: { confirmTimeout: '30s' } }))])).code).toBe(0);
    await eventually(() => statusJson(confirmed), (s) => s?.phase === 'awaiting-confirmation', `${confirmed} awaiting confirmation`);
    const ok = await fos1(['confirm', confirmed, '--reason', 'looks good']);
    expect(ok.code).toBe(0);
    expect((await eventually(() => statusJson(confirmed), (s) => s?.phase === 'applied', `${confirmed} applied`))?.audit).toEqual(expect.arrayContaining([expect.objectContaining({ step: 'confirm', detail: expect.stringContaining('confirmed by carol') })]));
    // Nothing left to confirm: a conflict, exit 2.
    expect((await fos1(['confirm', confirmed])).code).toBe(2);

    const aborted = id();
    expect((await fos1(['apply', '-f', writeChange(`${aborted}.yaml`, change(aborted, { routes: { upsert: [{ destination: '10.63.0.0/24', gateway: LAN_GATEWAY_V4 }] } }, { options: { confirmTimeout: '30s' } }))])).code).toBe(0);
    await eventually(() => statusJson(aborted), (s) => s?.phase === 'awaiting-confirmation', `${aborted} awaiting confirmation`);
    expect((await fos1(['abort', aborted, '--reason', 'wrong table'])).code).toBe(0);
    const watched = await fos1(['status', aborted, '--watch', '--interval', '200']);
    expect(watched.code).toBe(1);
    expect(watched.stdout).not.toContain('\x1b[');
    // The change's final line is among the last few: its node's line may follow it in the same redraw.
    const lastLines = watched.stdout.trim().split('\n').slice(-4);
    expect(lastLines).toEqual(expect.arrayContaining([expect.stringMatching(new RegExp(`^change ${aborted}: reverted .*aborted by carol: wrong table`))]));
    const [v4] = ns.routesJson(DEFAULT_ROUTE_PROTOCOL) as { dst: string }[][];
    expect(v4?.map((r) => r.dst)).not.toContain('10.63.0.0/24');
  });

  test('auth errors exit 3 and say what to do; an unknown id exits 4; no server exits 5', async () => {
    const none = await fos1(['list'], null);
    expect(none.code).toBe(3);
    expect(none.stderr).toContain('401: no token — set FOS1_API_TOKEN or FOS1_API_TOKEN_FILE, or run `npm start` once to create');
    expect(none.stderr).toContain(join(dir, 'state', 'fos1', 'admin-token'));
    const wrong = await fos1(['list'], null, { FOS1_API_TOKEN: 'not-a-token' });
    expect(wrong.code).toBe(3);
    expect(wrong.stderr).toContain('401: the token from FOS1_API_TOKEN is not valid');
    const viewer = await fos1(['apply', '-f', writeChange('viewer.yaml', change(id(), { blocklist: { upsert: [{ cidr: '192.0.2.64', reason: 'x' }] } }))], 'vic');
    expect(viewer.code).toBe(3);
    expect(viewer.stderr).toContain('403: vic may not submit changes.fos1.io');
    const missing = await fos1(['status', 'no-such-change', '--output', 'json']);
    expect(missing.code).toBe(4);
    expect(JSON.parse(missing.stdout)).toMatchObject({ exitCode: 4, answer: { error: 'no such change' } });
    const closed = await fos1(['list'], 'carol', { FOS1_API_URL: 'http://127.0.0.1:1' });
    expect(closed.code).toBe(5);
    expect(closed.stderr).toContain('cannot reach the fos1 API at http://127.0.0.1:1');
  });

  test('the config file names the server and the token file', async () => {
    const config = join(dir, 'cli-config.yaml');
    writeFileSync(config, toYaml({ server: base, tokenFile: join(dir, 'carol.token') }));
    const listed = await fos1(['list', '--config', config], null, { FOS1_API_URL: '' });
    expect(listed.code).toBe(0);
    writeFileSync(config, toYaml({ server: 'ftp://x', token: 'inline' }));
    const bad = await fos1(['list', '--config', config], null);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/server: must be an http/);
  });
});
