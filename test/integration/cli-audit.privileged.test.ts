/**
 * The CLI's approval, revision and audit commands end to end: bin/fos1.js as a child process
 * (argv, no shell) against the real HTTP API, a real Temporal dev server, two real nodes
 * (network namespaces + pinned maps) and the real file audit store (the embedded default).
 *
 * - approve/reject: the author's own approval exits 3, an approver's applies the change; a
 *   rejection ends it with nothing applied; reject without --reason is a usage error;
 * - revisions / revisions show / diff / rollback NODE REV, and rollback --fleet CHANGE:
 *   through a staged rollout (two waves), every node is left exactly as it was (read back
 *   from the kernel);
 * - audit query filters; audit verify exits 0, then 6 naming the record with one edited byte,
 *   then naming the gap of a deleted record.
 *
 * Privileged: root, netns, bpffs, the built Temporal CLI.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import pino from 'pino';
import { stringify as toYaml } from 'yaml';
import { openAuditStore, openRevisionStore } from '../../activities/audit-store';
import { AuditFiles } from '../../activities/audit-store/file-store';
import { DEFAULT_ROUTE_PROTOCOL } from '../../activities/system/route-table';
import { startApiServer, type ApiServer } from '../../api/server';
import { removePinnedBlocklist } from '../../bpf/blocklist-maps';
import { testTokens } from '../helpers/api-tokens';
import { testAuditStores, type TestAuditStores } from '../helpers/audit-stores';
import { describePrivileged } from '../helpers/capabilities';
import { eventually } from '../helpers/eventually';
import { LAN_GATEWAY_V4, TestNamespace } from '../helpers/netns';
import { startTemporal, startWorkers, type RunningWorkers } from '../helpers/temporal';

const NODES = ['cla-one', 'cla-two'] as const;
const REPO = resolve(__dirname, '..', '..');
const BIN = join(REPO, 'bin', 'fos1.js');
const IDENTITY_KEY = randomBytes(32);
const { authenticator, tokens } = testTokens({ carol: ['admin'], frank: ['operator', 'approver'], ann: ['approver'], vic: ['viewer'] });

describePrivileged('fos1 approve/reject, revisions, rollback and audit against the real API (privileged)', ['root', 'netns', 'bpffs', 'temporal-cli'], () => {
  let env: TestWorkflowEnvironment;
  const namespaces: TestNamespace[] = [];
  const pinDirs: string[] = [];
  const workers: RunningWorkers[] = [];
  let stores: TestAuditStores;
  let reader: { store: ReturnType<typeof openAuditStore>; revisions: ReturnType<typeof openRevisionStore> };
  let api: ApiServer;
  let base: string;
  let dir: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'fos1-cli-audit-'));
    // Changes written by an operator need one approval (frank is one, and an approver too: he still may not approve his own) from the approver role; an admin's need none.
    const policyFile = join(dir, 'policy.yaml');
    writeFileSync(policyFile, 'rules:\n  - name: operators-need-one\n    match: { authorRoles: [operator] }\n    approvals: 1\n    approverRole: approver\n    expiresAfter: 10m\n');
    env = await startTemporal();
    stores = testAuditStores();
    for (const [i, node] of NODES.entries()) {
      const ns = TestNamespace.create(`fos1cla${i}`);
      const pinDir = `/sys/fs/bpf/fos1-test-cli-audit-${i}-${randomBytes(4).toString('hex')}`;
      namespaces.push(ns);
      pinDirs.push(pinDir);
      const target = { netns: ns.name, routeProtocol: DEFAULT_ROUTE_PROTOCOL, bpfPinDir: pinDir, blocklistMaxEntries: { v4: 64, v6: 64 } };
      workers.push(await startWorkers(env, node, target, i === 0 ? { identityKey: IDENTITY_KEY, approvalPolicyFile: policyFile, audit: stores } : { clusterWorker: false }));
    }
    // The API reads what the cluster worker writes, read-only and without the signing key.
    reader = { store: openAuditStore(stores.config.store), revisions: openRevisionStore(stores.config.store, true) };
    api = await startApiServer({
      client: env.client,
      port: 0,
      host: '127.0.0.1',
      logger: pino({ level: 'silent' }),
      security: { authenticator },
      identityKey: IDENTITY_KEY,
      audit: { store: reader.store, revisions: reader.revisions, publicKeyFiles: stores.config.publicKeyFiles },
    });
    base = `http://127.0.0.1:${(api.address() as AddressInfo).port}`;
    for (const [name, token] of Object.entries(tokens)) writeFileSync(join(dir, `${name}.token`), `${token}\n`, { mode: 0o600 });
  }, 180_000);

  afterAll(async () => {
    api?.close();
    for (const w of workers) await w.stop();
    await reader?.store.close();
    await reader?.revisions.close();
    await stores?.close();
    for (const p of pinDirs) removePinnedBlocklist(p);
    for (const ns of namespaces) ns.destroy();
    await env?.teardown();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Runs `fos1 args…` as `who` (a token file), without the caller's config or state. */
  function fos1(args: string[], who: keyof typeof tokens = 'carol'): Promise<{ code: number; stdout: string; stderr: string }> {
    const childEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir, XDG_CONFIG_HOME: join(dir, 'config'), XDG_STATE_HOME: join(dir, 'state'), FOS1_API_URL: base, FOS1_API_TOKEN_FILE: join(dir, `${who}.token`) };
    return new Promise((done) => {
      execFile(process.execPath, [BIN, ...args], { env: childEnv, cwd: REPO, timeout: 170_000 }, (err, stdout, stderr) => {
        const code = err ? ((err as { code?: unknown }).code as number) : 0;
        done({ code: typeof code === 'number' ? code : -1, stdout: String(stdout), stderr: String(stderr) });
      });
    });
  }
  const json = async (args: string[], who: keyof typeof tokens = 'carol') => {
    const r = await fos1([...args, '--output', 'json'], who);
    return { code: r.code, body: JSON.parse(r.stdout) as Record<string, unknown>, stderr: r.stderr };
  };
  const newId = (prefix: string) => `${prefix}-${randomBytes(3).toString('hex')}`;
  const routes = (...nets: string[]) => nets.map((destination) => ({ destination, gateway: LAN_GATEWAY_V4 }));
  /** Every node's fos1 routes as the kernel has them. */
  const readBack = () => namespaces.map((ns) => JSON.stringify(ns.routesJson(DEFAULT_ROUTE_PROTOCOL)));
  /** Applies a full desired state to every node, two waves (canary, then the rest), through `fos1 apply --watch`. */
  async function applyToFleet(id: string, desired: object, who: keyof typeof tokens = 'carol'): Promise<number> {
    const file = join(dir, `${id}.yaml`);
    writeFileSync(file, toYaml({ id, reason: `cli audit ${id}`, targets: [...NODES], desired, strategy: { waves: [{ name: 'canary', nodes: [NODES[0]], bakeSeconds: 0 }, { name: 'rest', bakeSeconds: 0 }] } }));
    return (await fos1(['apply', '-f', file, '--watch', '--interval', '200'], who)).code;
  }
  const phaseOf = (id: string, phase: string) =>
    eventually(() => json(['status', id]), (r) => r.body.phase === phase, `change ${id} to be ${phase}`, 60_000, 250).then((r) => r.body);

  test('approve: the author\'s own approval exits 3; an approver\'s applies the change. reject: nothing applied', async () => {
    const id = newId('cla-appr');
    const file = join(dir, `${id}.yaml`);
    writeFileSync(file, toYaml({ id, reason: 'needs approval', targets: [NODES[0]], patch: { routes: { upsert: routes('10.71.0.0/24') } } }));
    expect((await fos1(['apply', '-f', file], 'frank')).code).toBe(0);
    const pending = await phaseOf(id, 'awaiting-approval');
    expect(pending.approval).toMatchObject({ state: 'pending', eligibleRoles: ['approver'], excluded: ['frank'] });

    const self = await fos1(['approve', id], 'frank');
    expect(self.code).toBe(3);
    expect(self.stderr).toContain('frank is the author');
    const bad = await fos1(['approve', id, '--plan', 'sha256:nope'], 'ann');
    expect(bad.code).toBe(2);
    const approved = await fos1(['approve', id, '--reason', 'reviewed'], 'ann');
    // The update answers with the approval as of the vote: the change settles it right after.
    expect(approved).toMatchObject({ code: 0, stdout: expect.stringMatching(new RegExp(`^change ${id}: approval recorded; approval (pending|approved) \\(1 of 1 from role approver`)) });
    expect((await phaseOf(id, 'applied')).phase).toBe('applied');
    expect(readBack()[0]).toContain('10.71.0.0/24');
    // The revision names its approver.
    const revisions = await json(['revisions', NODES[0]]);
    expect((revisions.body.revisions as { changeId: string; approvers: string[] }[]).find((r) => r.changeId === id)).toMatchObject({ approvers: ['ann'] });

    const rejectedId = newId('cla-rej');
    const rejectFile = join(dir, `${rejectedId}.yaml`);
    writeFileSync(rejectFile, toYaml({ id: rejectedId, reason: 'will be rejected', targets: [NODES[0]], patch: { routes: { upsert: routes('10.72.0.0/24') } } }));
    expect((await fos1(['apply', '-f', rejectFile], 'frank')).code).toBe(0);
    await phaseOf(rejectedId, 'awaiting-approval');
    expect((await fos1(['reject', rejectedId], 'ann')).code).toBe(2); // --reason is required
    const rejected = await json(['reject', rejectedId, '--reason', 'not in this window'], 'ann');
    // As for approve: the answer is the approval as of the vote; the change settles it right after.
    expect(rejected.code).toBe(0);
    expect(['pending', 'rejected']).toContain((rejected.body as { state: string }).state);
    const final = await phaseOf(rejectedId, 'rejected');
    expect(final.message).toContain('rejected by ann: not in this window; nothing was applied');
    expect((await fos1(['status', rejectedId])).code).toBe(1);
    expect(readBack()[0]).not.toContain('10.72.0.0/24');
  }, 200_000);

  test('revisions, show, diff, rollback NODE REV, and rollback --fleet CHANGE through a staged rollout (read back on every node)', async () => {
    const a = newId('cla-a');
    expect(await applyToFleet(a, { routes: routes('10.73.1.0/24', '10.73.2.0/24') })).toBe(0);
    const atA = readBack();
    const b = newId('cla-b');
    expect(await applyToFleet(b, { routes: routes('10.73.1.0/24', '10.73.3.0/24') })).toBe(0);
    expect(readBack()).not.toEqual(atA);

    const listed = await json(['revisions', NODES[1]]);
    expect(listed.code).toBe(0);
    const revs = listed.body.revisions as { id: string; number: number; changeId: string; author: string }[];
    const [revB, revA] = revs;
    expect(revB).toMatchObject({ changeId: b, author: 'carol', number: revA!.number + 1 });
    expect(revA).toMatchObject({ changeId: a });
    const text = await fos1(['revisions', NODES[1]]);
    expect(text.stdout.split('\n')[1]).toMatch(new RegExp(`^\\s+${revB!.number}\\s+${revB!.id.slice(0, 12)}\\s.*${b}\\s+carol`));

    // show by an id prefix; diff by numbers, in fos1's diff words.
    const shown = await fos1(['revisions', 'show', NODES[1], revA!.id.slice(0, 8)]);
    expect(shown).toMatchObject({ code: 0, stdout: expect.stringContaining(`node ${NODES[1]} revision ${revA!.number}  ${revA!.id}`) });
    expect(shown.stdout).toContain('destination: 10.73.2.0/24');
    const diff = await fos1(['diff', NODES[1], String(revA!.number), String(revB!.number)]);
    expect(diff.code).toBe(0);
    expect(diff.stdout.split('\n')).toEqual(expect.arrayContaining([`  + route 10.73.3.0/24 via ${LAN_GATEWAY_V4} table 254 metric 0`, `  - route 10.73.2.0/24 via ${LAN_GATEWAY_V4} table 254 metric 0`]));
    expect((await fos1(['diff', NODES[1], '999', String(revB!.number)])).code).toBe(4);
    expect((await fos1(['revisions', 'show', NODES[1], 'xyz'])).code).toBe(2);

    // One node back to its revision A, as a new change.
    const single = newId('cla-rb1');
    expect(await fos1(['rollback', NODES[1], String(revA!.number), '--id', single, '--bake', '0', '--watch', '--interval', '200'])).toMatchObject({ code: 0 });
    expect(readBack()[1]).toEqual(atA[1]);
    expect(readBack()[0]).not.toEqual(atA[0]);
    // A viewer may not roll back.
    expect((await fos1(['rollback', '--fleet', a], 'vic')).code).toBe(3);

    // The fleet back to change A's revisions: one change, two waves, every node read back.
    const fleet = newId('cla-fleet');
    const submitted = await json(['rollback', '--fleet', a, '--id', fleet, '--bake', '0']);
    expect(submitted).toMatchObject({ code: 0, body: { changeId: fleet, nodes: [...NODES] } });
    expect((await fos1(['status', fleet, '--watch', '--interval', '200'])).code).toBe(0);
    expect(readBack()).toEqual(atA);
    const status = (await json(['status', fleet])).body as { waves?: { name: string; nodes: string[] }[]; phase: string };
    expect(status.phase).toBe('applied');
    expect(status.waves?.map((w) => w.nodes.length)).toEqual([1, 1]); // the default canary + rest rollout
    // A node the fleet change changed has a new revision with A's state; the one already back at A was unchanged (no revision).
    const outcomes = (status as unknown as { nodes: Record<string, { outcome: string }> }).nodes;
    expect([outcomes[NODES[0]]?.outcome, outcomes[NODES[1]]?.outcome]).toEqual(['applied', 'unchanged']);
    for (const node of NODES) {
      const now = (await json(['revisions', node])).body.revisions as { changeId: string; id: string; stateHash: string }[];
      expect(now[0]?.changeId).toBe(node === NODES[0] ? fleet : single);
      const atRevA = now.find((r) => r.changeId === a)!;
      expect(now[0]?.stateHash).toBe(atRevA.stateHash);
      expect((await json(['diff', node, atRevA.id, now[0]!.id])).body.diff).toEqual([]);
    }
  }, 400_000);

  test('audit query filters by change, action, actor and time; bad times exit 2', async () => {
    const id = newId('cla-q');
    expect(await applyToFleet(id, { routes: routes('10.74.0.0/24') })).toBe(0);
    const all = await json(['audit', 'query', '--change', id]);
    expect(all.code).toBe(0);
    const entries = all.body.entries as { seq: number; record: { changeId: string; step: string; node?: string; actor: string } }[];
    expect(entries.every((e) => e.record.changeId === id)).toBe(true);
    expect(entries.map((e) => e.seq)).toEqual([...entries.map((e) => e.seq)].sort((x, y) => x - y));
    expect(new Set(entries.map((e) => e.record.node).filter(Boolean))).toEqual(new Set(NODES));
    const validate = await json(['audit', 'query', '--change', id, '--action', 'validate', '--actor', 'carol', '--since', '1h']);
    expect((validate.body.entries as unknown[]).length).toBe(1);
    const byNode = await json(['audit', 'query', '--change', id, '--node', NODES[1], '--action', 'verify']);
    expect((byNode.body.entries as unknown[]).length).toBe(1);
    expect((await json(['audit', 'query', '--change', id, '--until', '2000-01-01T00:00:00Z'])).body.entries).toEqual([]);
    const text = await fos1(['audit', 'query', '--change', id, '--action', 'validate']);
    expect(text.stdout).toMatch(new RegExp(`^\\s+\\d+\\s+\\S+\\s+${id}\\s+carol\\s+validate ok`, 'm'));
    const bad = await fos1(['audit', 'query', '--since', 'yesterday']);
    expect(bad).toMatchObject({ code: 2, stderr: expect.stringContaining('--since must be an ISO 8601 time') });
  }, 200_000);

  test('audit verify: 0 when intact; one edited byte in the file exits 6 naming that record; a deleted record names the gap', async () => {
    const intact = await fos1(['audit', 'verify']);
    expect(intact).toMatchObject({ code: 0, stdout: expect.stringContaining('audit intact') });
    const chain = join(stores.config.dir, AuditFiles.chain);
    const lines = readFileSync(chain, 'utf8').split('\n').filter(Boolean);
    const victimLine = lines.findIndex((l) => l.includes('"step":"routes"'));
    expect(victimLine).toBeGreaterThan(0);
    const victim = JSON.parse(lines[victimLine]!) as { seq: number; id: string };
    // "routes" → "routeS" in place: one byte, nothing else moved (the worker keeps appending).
    const offset = Buffer.byteLength(lines.slice(0, victimLine).join('\n') + '\n') + Buffer.byteLength(lines[victimLine]!.slice(0, lines[victimLine]!.indexOf('"step":"routes"') + '"step":"route'.length));
    const fd = openSync(chain, 'r+');
    const original = Buffer.alloc(1);
    try {
      readSync(fd, original, 0, 1, offset);
      expect(original.toString()).toBe('s');
      writeSync(fd, Buffer.from('S'), 0, 1, offset);
    } finally {
      closeSync(fd);
    }
    const edited = await json(['audit', 'verify']);
    expect(edited).toMatchObject({ code: 6, body: { ok: false, validThrough: victim.seq - 1, firstProblem: { kind: 'hash-mismatch', seq: victim.seq, id: victim.id } } });
    const editedText = await fos1(['audit', 'verify']);
    expect(editedText.code).toBe(6);
    expect(editedText.stdout).toContain(`first bad: hash-mismatch at entry ${victim.seq} (record ${victim.id})`);

    // Put the byte back, then delete a whole record: the gap is named.
    const back = openSync(chain, 'r+');
    writeSync(back, original, 0, 1, offset);
    closeSync(back);
    expect((await fos1(['audit', 'verify'])).code).toBe(0);
    const now = readFileSync(chain, 'utf8').split('\n').filter(Boolean);
    const gone = JSON.parse(now[2]!) as { seq: number; id: string };
    writeFileSync(chain, [...now.slice(0, 2), ...now.slice(3)].map((l) => l + '\n').join(''));
    const gap = await json(['audit', 'verify']);
    expect(gap).toMatchObject({ code: 6, body: { ok: false, firstProblem: { kind: 'gap', seq: gone.seq, seqTo: gone.seq } } });
  }, 60_000);
});
