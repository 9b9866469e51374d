/**
 * Blocklists too large for a workflow payload go through the change workflow by
 * reference: the node reads the list, plans, snapshots into its store, applies and
 * verifies by digest, and the workflow history only carries counts, a bounded diff and
 * a snapshot hash. Real parts: the Temporal dev server, a network namespace for the
 * node, blocklist maps pinned in bpffs.
 *
 * Privileged: needs root, netns, bpffs and the built Temporal CLI.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { temporal } from '@temporalio/proto';
import type { WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
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

  beforeAll(async () => {
    env = await startTemporal();
    ns = TestNamespace.create();
    pinDir = `/sys/fs/bpf/fos1-test-${randomBytes(4).toString('hex')}`;
    filesDir = mkdtempSync(join(tmpdir(), 'fos1-ref-lists-'));
    storeDir = join(filesDir, 'store');
    const sizes = { v4: HOSTS + PREFIXES + 1024, v6: 64 };
    workers = await startWorkers(env, NODE, { netns: ns.name, routeProtocol: DEFAULT_ROUTE_PROTOCOL, bpfPinDir: pinDir, blocklistMaxEntries: sizes, blocklistStoreDir: storeDir });
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
    expect(invalid.status.nodes[NODE]?.error).toMatchObject({ type: 'InvalidBlocklist', message: expect.stringMatching(/^blocklist line 3: /) });
    expect(mapsDigest()).toBe(before);
  });
});
