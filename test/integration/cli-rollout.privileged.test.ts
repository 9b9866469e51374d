/**
 * The `fos1` CLI's rollout controls end to end on a three-node sandbox fleet (as `npm start`
 * runs): bin/fos1.js as a child process (argv, no shell) against the real API and Temporal dev
 * server. A staged rollout of three waves (one node each, a reachability gate on the upstream)
 * is followed by `status --watch` (plain lines: not a TTY) while `pause`, `resume`,
 * `extend-bake`, `promote` and `promote --skip-bakes` steer it; the watch shows it move wave by
 * wave. Privileged: root, netns, bpffs, iproute2 and the built Temporal CLI.
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
import { changeStatusSchema } from '../../api/schemas';
import { startApiServer } from '../../api/server';
import { testTokens } from '../helpers/api-tokens';
import { describePrivileged } from '../helpers/capabilities';
import { eventually } from '../helpers/eventually';
import { createTestFleet, startFleetWorkers, type FleetWorkers, type TestFleet } from '../helpers/fleet';
import { startTemporal } from '../helpers/temporal';

const REPO = resolve(__dirname, '..', '..');
const BIN = join(REPO, 'bin', 'fos1.js');
const { authenticator, tokens } = testTokens({ carol: ['admin'] });

describePrivileged('fos1 rollout controls and status --watch on a 3-node fleet (privileged)', ['root', 'netns', 'bpffs', 'iproute2', 'temporal-cli'], () => {
  let env: TestWorkflowEnvironment;
  let fleet: TestFleet;
  let workers: FleetWorkers;
  let server: Server;
  let base: string;
  let dir: string;

  beforeAll(async () => {
    env = await startTemporal();
    fleet = await createTestFleet(3);
    workers = await startFleetWorkers(env, fleet);
    server = await startApiServer({ client: env.client, port: 0, host: '127.0.0.1', logger: pino({ level: 'silent' }), security: { authenticator } });
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    dir = mkdtempSync(join(tmpdir(), 'fos1-cli-rollout-'));
    writeFileSync(join(dir, 'carol.token'), `${tokens.carol}\n`, { mode: 0o600 });
  }, 180_000);

  afterAll(async () => {
    server?.close();
    await workers?.stop();
    fleet?.destroy();
    await env?.teardown();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  function fos1(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    const childEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir, XDG_CONFIG_HOME: join(dir, 'config'), XDG_STATE_HOME: join(dir, 'state'), FOS1_API_URL: base, FOS1_API_TOKEN_FILE: join(dir, 'carol.token') };
    return new Promise((done) => {
      execFile(process.execPath, [BIN, ...args], { env: childEnv, cwd: REPO, timeout: 170_000 }, (err, stdout, stderr) => {
        const code = err ? ((err as { code?: unknown }).code as number) : 0;
        done({ code: typeof code === 'number' ? code : -1, stdout: String(stdout), stderr: String(stderr) });
      });
    });
  }
  const status = async (id: string) => changeStatusSchema.parse(JSON.parse((await fos1(['status', id, '--output', 'json'])).stdout));
  const waitFor = (id: string, what: string, ok: (s: Awaited<ReturnType<typeof status>>) => boolean) => eventually(() => status(id), ok, what, 60_000, 200);

  test('pause, resume, extend-bake, promote, promote --skip-bakes steer the rollout; status --watch shows it wave by wave; a bad DURATION exits 2', async () => {
    const id = `cli-ro-${randomBytes(2).toString('hex')}`;
    const reach = { kind: 'reachability', intervalSeconds: 1, count: 2, targets: [{ protocol: 'icmp', address: fleet.upstream.v4, timeoutMs: 500 }] };
    const file = join(dir, 'rollout.yaml');
    writeFileSync(
      file,
      toYaml({
        id,
        reason: 'cli rollout test',
        targets: fleet.nodes.map((n) => n.name),
        patch: { blocklist: { upsert: [{ cidr: '192.0.2.77/32', reason: 'cli rollout test' }] } },
        strategy: {
          waves: [
            { name: 'canary', nodes: ['router-1'], bakeSeconds: 600, gates: ['upstream'] },
            { name: 'second', nodes: ['router-2'], bakeSeconds: 600 },
            { name: 'rest', bakeSeconds: 600 },
          ],
          gates: { upstream: reach },
        },
      }),
    );
    expect((await fos1(['apply', '-f', file])).code).toBe(0);
    const watching = fos1(['status', id, '--watch', '--interval', '200']);

    await waitFor(id, 'the canary baking', (s) => s.phase === 'baking' && s.currentWave === 'canary');
    const paused = await fos1(['pause', id, '--reason', 'look first']);
    expect(paused).toMatchObject({ code: 0, stdout: expect.stringMatching(new RegExp(`^change ${id} paused — paused: `)) });
    // A control in the wrong phase is refused by the workflow: exit 2 with its reason.
    const again = await fos1(['pause', id]);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/cannot pause: the change is paused/);
    expect((await fos1(['resume', id])).code).toBe(0);
    await waitFor(id, 'baking again', (s) => s.phase === 'baking');
    const bakeEnd = (s: Awaited<ReturnType<typeof status>>) => (s.waves as { bakeEndsAt?: string }[] | undefined)?.[0]?.bakeEndsAt;
    const before = bakeEnd(await status(id));
    const extended = await fos1(['extend-bake', id, '10m']);
    expect(extended).toMatchObject({ code: 0, stdout: expect.stringContaining(`change ${id}: bake extended by 600s`) });
    await waitFor(id, 'the bake end moved by 10 minutes', (s) => Date.parse(bakeEnd(s) ?? '') - Date.parse(before ?? '') >= 590_000);
    const bad = await fos1(['extend-bake', id, 'ten minutes']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/DURATION "ten minutes" is not a duration/);

    // Promote: the next wave now; then every remaining bake skipped.
    expect((await fos1(['promote', id])).code).toBe(0);
    await waitFor(id, 'the second wave baking', (s) => s.currentWave === 'second' && s.phase === 'baking');
    const full = await fos1(['promote', id, '--skip-bakes', '--output', 'json']);
    expect(full.code).toBe(0);
    expect(changeStatusSchema.parse(JSON.parse(full.stdout)).changeId).toBe(id);

    const watched = await watching;
    expect(watched.code).toBe(0);
    const lines = watched.stdout.trim().split('\n');
    const at = (line: string) => {
      const i = lines.indexOf(line);
      if (i < 0) throw new Error(`status --watch never printed "${line}":\n${watched.stdout}`);
      return i;
    };
    const starting = (prefix: string) => lines.findIndex((l) => l.startsWith(prefix));
    // Wave by wave: the canary bakes (paused, resumed) with its gate, then the second wave, then the rest.
    // The canary's node shows "holding, applied" from the bake's first report, so whether the watch
    // printed it before or after the pause depends on when it polled: both only precede wave 2.
    const canaryHolding = at('wave 1/3 canary node router-1: holding, applied');
    const order = [
      starting(`change ${id}: paused`),
      starting('wave 2/3 second node router-2: holding'),
      starting('wave 3/3 rest node router-3: holding'),
      starting('wave 3/3 rest: committed'),
    ];
    expect(order.every((i) => i >= 0)).toBe(true);
    expect([...order].sort((a, b) => a - b)).toEqual(order);
    expect(canaryHolding).toBeLessThan(order[1] as number);
    expect(lines.some((l) => /^wave 1\/3 canary gate upstream \[reachability\] (running|success)/.test(l))).toBe(true);
    expect(lines.at(-1)).toMatch(/node router-\d: done, applied|: committed|applied 3\/3 nodes/);
    expect(lines.join('\n')).not.toContain('\x1b[');
    const final = await status(id);
    expect(final.phase).toBe('applied');
    expect(final.audit.map((r) => r.step)).toEqual(expect.arrayContaining(['pause', 'resume', 'promote']));
  }, 180_000);
});
