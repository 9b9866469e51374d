/**
 * Blocklists too large for a workflow payload go through the change workflow by
 * reference: the node reads the list, plans, snapshots into its store, applies and
 * verifies by digest, and the workflow history only carries counts, a bounded diff and
 * a snapshot hash. Real parts: the Temporal dev server, a network namespace for the
 * node, blocklist maps pinned in bpffs.
 *
 * File references are confined (issue 11): only regular files under the worker's feed
 * directories, no link out of them, size-capped, and an error names the file, the line
 * number and the rule, never the line's content (checked in the status, both workflow
 * histories, the worker's logs and the audit).
 *
 * Privileged: needs root, netns, bpffs and the built Temporal CLI.
 */
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { temporal } from '@temporalio/proto';
import type { WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import pino from 'pino';
import { BlocklistStore } from '../../activities/blocklist-sync';
import { DEFAULT_ROUTE_PROTOCOL } from '../../activities/system/route-table';
import { imageDigest, imageSize, parseBlocklistText } from '../../bpf/blocklist-image';
import { BlocklistMaps, removePinnedBlocklist } from '../../bpf/blocklist-maps';
import type { ChangeRequestInput } from '../../model/change-request';
import { CLUSTER_TASK_QUEUE, changeWorkflowId } from '../../model/naming';
import { changeWorkflow, type ChangeStatus } from '../../workflows/change';
import { describePrivileged } from '../helpers/capabilities';
import { changeFailure, waitForPhase } from '../helpers/change-client';
import { TestNamespace } from '../helpers/netns';
import { startTemporal, startWorkers, type RunningWorkers } from '../helpers/temporal';

const NODE = 'node-ref';
const HOSTS = 200_000;
const PREFIXES = 2_000;
/** What 200,000 entries would weigh inline as JSON: far over Temporal's 2 MB payload limit. */
const INLINE_JSON_BYTES_AT_LEAST = 2 * 1024 * 1024;

/**
 * A list of distinct hosts in 10.0.0.0/8 (an odd stride over 2^24 never repeats) and
 * distinct /24s in 172.16.0.0/12, shifted by `seed` so two lists differ in most entries.
 */
function listText(seed: number): string {
  const lines: string[] = [];
  for (let i = 0; i < HOSTS; i++) {
    const n = (i * 2_654_435 + seed * 7_919) % 2 ** 24;
    lines.push(`10.${n >>> 16}.${(n >>> 8) & 255}.${n & 255}`);
  }
  for (let i = 0; i < PREFIXES; i++) {
    const n = (i + seed * 101) % 4096;
    lines.push(`172.${16 + (n >>> 8)}.${n & 255}.0/24`);
  }
  return `${lines.join('\n')}\n`;
}

describePrivileged('change workflow with a blocklist by reference (privileged)', ['root', 'netns', 'bpffs', 'temporal-cli'], () => {
  let env: TestWorkflowEnvironment;
  let ns: TestNamespace;
  let pinDir: string;
  let storeDir: string;
  let workers: RunningWorkers;
  let maps: BlocklistMaps;
  let filesDir: string;
  let listA: string;
  let listB: string;
  let sequence = 0;
  /** Every line the workers logged (pino JSON), audit records included. */
  const logs: string[] = [];

  beforeAll(async () => {
    env = await startTemporal();
    ns = TestNamespace.create();
    pinDir = `/sys/fs/bpf/fos1-test-${randomBytes(4).toString('hex')}`;
    filesDir = mkdtempSync(join(tmpdir(), 'fos1-ref-lists-'));
    storeDir = join(filesDir, 'store');
    const sizes = { v4: HOSTS + PREFIXES + 1024, v6: 64 };
    // The lists live in filesDir, the one feed directory; the store is inside it too.
    workers = await startWorkers(
      env,
      NODE,
      { netns: ns.name, routeProtocol: DEFAULT_ROUTE_PROTOCOL, bpfPinDir: pinDir, blocklistMaxEntries: sizes, blocklistStoreDir: storeDir, feeds: { dirs: [filesDir], maxBytes: 64 * 1024 * 1024 } },
      { logger: pino({ level: 'debug' }, { write: (line: string) => void logs.push(line) }) },
    );
    maps = BlocklistMaps.open({ pinDir, maxEntriesV4: sizes.v4, maxEntriesV6: sizes.v6, hostMaps: { maxEntriesV4: sizes.v4, maxEntriesV6: sizes.v6 } });
    listA = join(filesDir, 'a.txt');
    listB = join(filesDir, 'b.txt');
    writeFileSync(listA, listText(1));
    writeFileSync(listB, listText(2));
  });

  afterAll(async () => {
    await workers?.stop();
    maps?.close();
    if (pinDir) removePinnedBlocklist(pinDir);
    ns?.destroy();
    if (filesDir) rmSync(filesDir, { recursive: true, force: true });
    await env?.teardown();
  });

  function request(overrides: Partial<ChangeRequestInput>): ChangeRequestInput {
    sequence++;
    return { id: `ref-${sequence}-${randomBytes(2).toString('hex')}`, author: 'alice', reason: 'large blocklist', targets: [NODE], ...overrides } as ChangeRequestInput;
  }

  function start(req: ChangeRequestInput): Promise<WorkflowHandle<typeof changeWorkflow>> {
    return env.client.workflow.start(changeWorkflow, { taskQueue: CLUSTER_TASK_QUEUE, workflowId: changeWorkflowId(req.id), args: [req] });
  }

  /** The maps' contents as a digest, read back through the kernel. */
  const mapsDigest = () => imageDigest(maps.dumpImage());
  /** The digest a list file's contents have once loaded (hosts in the hash maps). */
  const fileDigest = (path: string) => imageDigest(parseBlocklistText(readFileSync(path)));

  /** Bytes of the change workflow's history plus its node child's, as the server stores them. */
  async function historyBytes(handle: WorkflowHandle<typeof changeWorkflow>): Promise<number> {
    const own = await handle.fetchHistory();
    const child = await env.client.workflow.getHandle(`node-change/${NODE}`).fetchHistory();
    return temporal.api.history.v1.History.encode(own).finish().length + temporal.api.history.v1.History.encode(child).finish().length;
  }

  test('a 202,000-entry list by file reference is applied and read back, while the workflow history stays small', async () => {
    // The inline equivalent would not even fit one payload.
    const inline = JSON.stringify(readFileSync(listA, 'utf8').trim().split('\n').map((cidr) => ({ cidr, reason: 'feed' })));
    expect(Buffer.byteLength(inline)).toBeGreaterThan(INLINE_JSON_BYTES_AT_LEAST);

    const handle = await start(request({ desired: { blocklistRef: { file: listA } } }));
    const status = await handle.result();
    expect(status.phase).toBe('applied');
    const node = status.nodes[NODE];
    expect(node?.outcome).toBe('applied');
    expect(imageSize(maps.dumpImage())).toBe(HOSTS + PREFIXES);
    expect(mapsDigest()).toBe(fileDigest(listA));
    // The diff is cut at 1,000 lines, with a last line that gives the complete counts.
    expect(node?.diff).toHaveLength(1001);
    expect(node?.diff[0]).toMatch(/^\+ block 10\.\d+\.\d+\.\d+\/32 \(no expiry\)$/);
    expect(node?.diff.at(-1)).toBe(`… and ${HOSTS + PREFIXES - 1000} more blocklist operations (${HOSTS + PREFIXES} added, 0 changed, 0 removed)`);
    expect(await historyBytes(handle)).toBeLessThan(512 * 1024);
  });

  test('a dry run of another list plans with complete counts, writes no snapshot and changes nothing', async () => {
    const before = mapsDigest();
    const status = await (await start(request({ desired: { blocklistRef: { file: listB } }, options: { dryRun: true } }))).result();
    expect(status.phase).toBe('planned');
    const summary = status.nodes[NODE]?.diff.at(-1) ?? '';
    const [, added, removed] = /\((\d+) added, 0 changed, (\d+) removed\)$/.exec(summary) ?? [];
    // The lists share some entries; everything else of B is added and of A removed, one for one.
    expect(Number(added)).toBeGreaterThan(HOSTS / 2);
    expect(Number(added)).toBe(Number(removed));
    expect(mapsDigest()).toBe(before);
  });

  // The host map holds one list and a little more, not both: the switch deletes unwanted hosts before writing new ones.
  test('an unconfirmed switch to another 202,000-entry list fits the map, then reverts to the previous list exactly from the node store snapshot', async () => {
    const before = mapsDigest();
    expect(before).toBe(fileDigest(listA));
    const handle = await start(request({ patch: { blocklist: { replaceRef: { file: listB } } }, options: { confirmTimeout: '2s' } }));
    await waitForPhase(handle, 'awaiting-confirmation');
    expect(mapsDigest()).toBe(fileDigest(listB)); // applied while provisional
    const status: ChangeStatus = await handle.result();
    expect(status.phase).toBe('reverted');
    expect(status.nodes[NODE]?.outcome).toBe('restored');
    const steps = status.audit.filter((r) => r.node === NODE).map((r) => `${r.step}:${r.result}`);
    expect(steps).toEqual(expect.arrayContaining(['restore blocklist:ok', 'verify rollback:ok']));
    expect(mapsDigest()).toBe(before);
  });

  test('a content-hash reference is resolved in the node store and checked', async () => {
    const store = new BlocklistStore(storeDir);
    const small = Buffer.from('192.0.2.1\n198.51.100.0/24 expires=4102444800\n');
    const ref = store.put(small);
    const status = await (await start(request({ desired: { blocklistRef: ref } }))).result();
    expect(status.phase).toBe('applied');
    expect(maps.readAll()).toEqual([{ cidr: '192.0.2.1/32' }, { cidr: '198.51.100.0/24', expiresAt: 4102444800 }]);

    // A blob whose content no longer matches its name is refused before anything changes.
    writeFileSync(join(storeDir, ref.sha256), '203.0.113.9\n');
    const { type, status: failed } = await changeFailure(await start(request({ desired: { blocklistRef: ref } })));
    expect(type).toBe('ChangeRolledBack');
    expect(failed.nodes[NODE]?.outcome).toBe('not-applied');
    expect(failed.nodes[NODE]?.error).toMatchObject({ type: 'InvalidBlocklist', message: expect.stringMatching(/the content changed after it was referenced/) });
    expect(maps.readAll()).toEqual([{ cidr: '192.0.2.1/32' }, { cidr: '198.51.100.0/24', expiresAt: 4102444800 }]);
  });

  test('a missing file or a bad line fails the change before anything is applied, naming the file or the line', async () => {
    const before = mapsDigest();
    const missing = await changeFailure(await start(request({ desired: { blocklistRef: { file: join(filesDir, 'nope.txt') } } })));
    expect(missing.status.nodes[NODE]?.outcome).toBe('not-applied');
    expect(missing.status.nodes[NODE]?.error).toMatchObject({ type: 'BlocklistRefNotFound', message: expect.stringContaining('nope.txt') });
    expect(missing.status.message).toMatch(/nothing was applied to it/);

    const bad = join(filesDir, 'bad.txt');
    writeFileSync(bad, '192.0.2.1\n192.0.2.2\n10.0.0.300\n');
    const invalid = await changeFailure(await start(request({ desired: { blocklistRef: { file: bad } } })));
    expect(invalid.status.nodes[NODE]?.error).toMatchObject({ type: 'InvalidBlocklist', message: `blocklist file ${bad} line 3: the first field is not an IPv4 or IPv6 prefix (expected e.g. 192.0.2.0/24 or 2001:db8::/32)` });
    expect(mapsDigest()).toBe(before);
  });

  /** A dry run by file reference that must fail on the node: its error, and how long it took. */
  async function refusedDryRun(file: string): Promise<{ error: { type: string; message: string } | undefined; ms: number; handle: WorkflowHandle<typeof changeWorkflow> }> {
    const started = Date.now();
    const handle = await start(request({ patch: { blocklist: { replaceRef: { file } } }, options: { dryRun: true } }));
    const { type, status } = await changeFailure(handle);
    expect(type).toBe('ChangeRolledBack');
    expect(status.nodes[NODE]?.outcome).toBe('not-applied');
    return { error: status.nodes[NODE]?.error, ms: Date.now() - started, handle };
  }

  test('a dry run naming /etc/shadow, a FIFO, a link out of the feed directory or a 10 GB sparse file fails fast, naming the file and the rule', async () => {
    const before = mapsDigest();
    const outside = mkdtempSync(join(tmpdir(), 'fos1-outside-'));
    try {
      writeFileSync(join(outside, 'secret.txt'), 'root:$6$outside-secret:19000:0:99999:7:::\n');
      const link = join(filesDir, 'evil.txt');
      symlinkSync(join(outside, 'secret.txt'), link);
      const fifo = join(filesDir, 'pipe');
      execFileSync('mkfifo', [fifo]);
      const sparse = join(filesDir, 'huge.txt');
      closeSync(openSync(sparse, 'w'));
      truncateSync(sparse, 10 * 1024 ** 3);

      const cases: [string, RegExp][] = [
        ['/etc/shadow', /^blocklist file \/etc\/shadow is outside the feed directories \(FOS1_FEED_DIRS\)/],
        [fifo, /is a FIFO, not a regular file: only regular files are read$/],
        [link, /resolves through a link to a path outside its directory/],
        [sparse, /is 10737418240 bytes, more than the limit of 67108864 \(FOS1_FEED_MAX_BYTES\)$/],
      ];
      for (const [file, rule] of cases) {
        const { error, ms, handle } = await refusedDryRun(file);
        expect(error).toMatchObject({ type: 'InvalidBlocklist', message: expect.stringMatching(rule) });
        expect(error?.message).toContain(`blocklist file ${file}`);
        // Not retried (InvalidBlocklist is not retryable) and nothing waited on: seconds, not minutes.
        expect(ms).toBeLessThan(15_000);
        expect(await historyText(handle)).not.toContain('outside-secret');
      }
      expect(logs.join('')).not.toContain('outside-secret');
      expect(mapsDigest()).toBe(before);
    } finally {
      rmSync(outside, { recursive: true, force: true });
    }
  });

  /** The change's and its node workflow's histories as text, payloads decoded (a secret in any of them shows). */
  async function historyText(handle: WorkflowHandle<typeof changeWorkflow>): Promise<string> {
    const decode = (_key: string, value: unknown) => (value instanceof Uint8Array ? Buffer.from(value).toString('utf8') : value);
    const own = await handle.fetchHistory();
    const child = await env.client.workflow.getHandle(`${handle.workflowId}/dry-run/${NODE}`).fetchHistory();
    return JSON.stringify(own, decode) + JSON.stringify(child, decode);
  }

  test('a secret on a bad line of a feed file appears nowhere: status, history, worker logs, audit; the next change still runs', async () => {
    const secret = `s3cr3t-${randomBytes(6).toString('hex')}`;
    const file = join(filesDir, 'leaky.txt');
    for (const line of [`root:$6$${secret}:19000:0:99999:7:::`, `192.0.2.9 ${secret}=1`, `10.0.0.1/24 # ${secret}`]) {
      writeFileSync(file, `192.0.2.1\n${line}\n198.51.100.0/24\n`);
      const logsBefore = logs.length;
      const { error, handle } = await refusedDryRun(file);
      expect(error).toMatchObject({ type: 'InvalidBlocklist', message: expect.stringMatching(new RegExp(`^blocklist file ${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} line 2: `)) });
      const status = await handle.query('status');
      expect(JSON.stringify(status)).not.toContain(secret);
      expect(JSON.stringify((status as ChangeStatus).audit)).not.toContain(secret);
      expect(await historyText(handle)).not.toContain(secret);
      // The audit reaches the logs through the sink: the refusal was logged, without the content.
      const logged = logs.slice(logsBefore).join('');
      expect(logged).toContain('audit snapshot failed');
      expect(logged).not.toContain(secret);
    }
    const next = await (await start(request({ patch: { blocklist: { upsert: [{ cidr: '203.0.113.77', reason: 'after the refusals' }] } } }))).result();
    expect(next.phase).toBe('applied');
    expect(maps.getExact('203.0.113.77/32')).toEqual({ cidr: '203.0.113.77/32' });
  });
});
