/**
 * The blocklist map-update activity logic against real pinned maps with fos1's
 * firewall attached between two namespaces: by-reference sync, snapshots and
 * rollback (exact previous contents, and the traffic pattern that went with them),
 * all-or-nothing on a full map, patches, and input errors that change nothing.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BlocklistMaps } from '../../bpf/blocklist-maps';
import { deserializeImage, imageDigest, serializeImage } from '../../bpf/blocklist-image';
import { buildDatapath } from '../../bpf/build';
import { Datapath } from '../../bpf/datapath';
import { BpfMapFullError } from '../../bpf/libbpf';
import { ApplicationFailure } from '@temporalio/common';
import { createBlocklistSubsystem } from '../../activities/subsystems/blocklist';
import { prepareSubsystem } from '../../activities/subsystems';
import { BlocklistStore, createBlocklistSync } from '../../activities/blocklist-sync';
import { cacheDir } from '../../scripts/paths';
import { ADDR, NetnsPair } from '../../bench/datapath/netns-pair';
import { describePrivileged } from '../helpers/capabilities';

const HOSTS_V4 = 20_000;
/** Enough hosts for the two-thread batch path (weight ≥ 2^17) and a host map of > 2^16 buckets. */
const THREADED_HOSTS = 150_000;
const HOST_CAPACITY = THREADED_HOSTS + 10_000;

describePrivileged('blocklist sync on the live datapath', ['root', 'netns', 'bpffs', 'iproute2'], () => {
  let pair: NetnsPair;
  let pinDir: string;
  let storeDir: string;
  let datapath: Datapath;
  let maps: BlocklistMaps;
  let store: BlocklistStore;
  let sync: ReturnType<typeof createBlocklistSync>;

  beforeAll(() => {
    pair = NetnsPair.create();
    pinDir = `/sys/fs/bpf/fos1-bs-${randomBytes(4).toString('hex')}`;
    storeDir = mkdtempSync(join(tmpdir(), 'fos1-blocklist-store-'));
    datapath = Datapath.load({ pinDir, objects: buildDatapath({ cacheDir: cacheDir() }), sizes: { blocklistV4: 64, blocklistV6: 64, hostsV4: HOST_CAPACITY, hostsV6: 64 } });
    datapath.attach({ interface: pair.ifB, netns: pair.b });
    maps = BlocklistMaps.open({ pinDir, maxEntriesV4: 64, maxEntriesV6: 64, hostMaps: { maxEntriesV4: HOST_CAPACITY, maxEntriesV6: 64 }, batchThreads: 2 });
    // Feed files are written next to the store: the store's folder is the one feed directory.
    store = new BlocklistStore(storeDir, undefined, { dirs: [storeDir] });
    sync = createBlocklistSync({ maps: () => maps, store });
  });

  afterAll(() => {
    maps?.close();
    datapath?.close();
    pair?.destroy();
    if (pinDir) rmSync(pinDir, { recursive: true, force: true });
    if (storeDir) rmSync(storeDir, { recursive: true, force: true });
  });

  beforeEach(async () => {
    await sync.syncEntries([]);
  });

  const traffic = () => ({ v4: pair.ping(ADDR.b4), v6: pair.ping(ADDR.b6) });

  /** `n` distinct IPv4 hosts in 100.64.0.0/10 (never the test addresses). */
  function hostLines(n: number): string[] {
    return Array.from({ length: n }, (_, i) => `100.${64 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`);
  }

  it('syncs a large list given by file reference, and restoring its snapshot puts back the exact contents and traffic', async () => {
    await sync.syncEntries([{ cidr: `${ADDR.a6}/128` }, { cidr: '192.0.2.0/24', expiresAt: 4_000_000_000 }]);
    const beforeDigest = imageDigest(maps.dumpImage());
    expect(traffic()).toEqual({ v4: true, v6: false });

    const file = join(storeDir, 'feed.txt');
    writeFileSync(file, ['# feed', ...hostLines(HOSTS_V4), `${ADDR.a4}`, '198.51.100.0/24 rule=7', 'fd00:99::/120 expires=4000000000', ''].join('\n'));
    const result = await sync.syncFromRef({ file });
    expect(result.counts).toEqual({ added: HOSTS_V4 + 3, changed: 0, removed: 2, total: HOSTS_V4 + 3 });
    expect(result.operations).toHaveLength(1000); // capped; the counts are complete
    expect(result.snapshotRef?.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(traffic()).toEqual({ v4: false, v6: false });
    expect(maps.getExact('198.51.100.0/24')).toEqual({ cidr: '198.51.100.0/24' });
    expect(maps.getExact('198.51.0.0/16')).toBeNull(); // LPM would match; exact does not

    const restored = await sync.restore(result.snapshotRef!);
    expect(restored.counts.total).toBe(2);
    expect(imageDigest(maps.dumpImage())).toBe(beforeDigest);
    expect(maps.readAll()).toEqual([{ cidr: '192.0.2.0/24', expiresAt: 4_000_000_000 }, { cidr: `${ADDR.a6}/128` }]);
    expect(traffic()).toEqual({ v4: true, v6: false });
  });

  it('loads a list big enough for two threads (hosts split, trie on the helper) into the maps the programs use, and restores its snapshot exactly', async () => {
    await sync.syncEntries([{ cidr: '192.0.2.0/24', expiresAt: 4_000_000_000 }]);
    const beforeDigest = imageDigest(maps.dumpImage());
    const file = join(storeDir, 'big.txt');
    writeFileSync(file, [...hostLines(THREADED_HOSTS), ADDR.a4, '198.51.100.0/24 rule=3', ''].join('\n'));
    const result = await sync.syncFromRef({ file }); // verified by read-back of every entry, or it throws
    expect(result.counts).toEqual({ added: THREADED_HOSTS + 2, changed: 0, removed: 1, total: THREADED_HOSTS + 2 });
    const image = maps.dumpImage();
    expect([image.hostV4.count, image.lpmV4.count]).toEqual([THREADED_HOSTS + 1, 1]);
    expect(maps.getExact('100.66.38.15')).toEqual({ cidr: '100.66.38.15/32' }); // host number 140,815: in the helper thread's share
    expect(traffic()).toEqual({ v4: false, v6: true });

    await sync.restore(result.snapshotRef!);
    expect(imageDigest(maps.dumpImage())).toBe(beforeDigest);
    expect(traffic()).toEqual({ v4: true, v6: true });
  });

  it('resolves content-hash references from the store and refuses content that changed', async () => {
    const ref = store.put(Buffer.from(`${ADDR.a4}\n`));
    await sync.syncFromRef(ref);
    expect(traffic()).toEqual({ v4: false, v6: true });

    const file = join(storeDir, 'changed.txt');
    writeFileSync(file, `${ADDR.a6}\n`);
    const before = maps.readAll();
    await expect(sync.syncFromRef({ file, sha256: ref.sha256 })).rejects.toThrow(/has sha256 [0-9a-f]{64}, but the reference says/);
    await expect(sync.syncFromRef({ sha256: 'f'.repeat(64) })).rejects.toThrow(/cannot be read/);
    await expect(sync.syncFromRef({ file: 'relative.txt' })).rejects.toThrow(/field "file": must be an absolute path/);
    expect(maps.readAll()).toEqual(before);
  });

  it('rejects a bad line naming the file, the line and the rule, and changes nothing', async () => {
    await sync.syncEntries([{ cidr: `${ADDR.a4}/32` }]);
    const before = maps.readAll();
    const file = join(storeDir, 'bad.txt');
    writeFileSync(file, '10.0.0.1\n10.0.0.0/8\n10.1.2.3/24\n');
    await expect(sync.syncFromRef({ file })).rejects.toThrow(/^blocklist file .*bad\.txt line 3: the first field has host bits set$/);
    writeFileSync(file, '10.0.0.1 ttl=5\n');
    await expect(sync.syncFromRef({ file })).rejects.toThrow(`blocklist file ${file} line 1: field 2 is not an option; expected expires=UNIX_SECONDS or rule=ID`);
    expect(maps.readAll()).toEqual(before);
    expect(traffic()).toEqual({ v4: false, v6: true });
  });

  it('is all or nothing when a map is full: the previous contents and traffic pattern stay', async () => {
    await sync.syncEntries([{ cidr: `${ADDR.a6}/128` }, { cidr: '203.0.113.0/24' }]);
    const before = serializeImage(maps.dumpImage());
    const tooMany = Array.from({ length: 70 }, (_, i) => `10.${i}.0.0/16`);
    let error: unknown;
    try {
      await sync.syncEntries([{ cidr: `${ADDR.a4}/32` }, ...tooMany.map((cidr) => ({ cidr }))]);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(BpfMapFullError);
    expect((error as Error).message).toMatch(/eBPF map "blocklist_v4" is full \(max_entries 64\)/);
    // Byte for byte the same maps (order aside), and the same traffic pattern.
    expect(imageDigest(maps.dumpImage())).toBe(imageDigest(deserializeImage(before)));
    expect(maps.readAll()).toEqual([{ cidr: '203.0.113.0/24' }, { cidr: `${ADDR.a6}/128` }]);
    expect(traffic()).toEqual({ v4: true, v6: false });
  });

  it('patches single entries without a full diff, and restores the patch exactly', async () => {
    await sync.syncEntries([{ cidr: '10.99.0.0/28', expiresAt: 4_000_000_000 }]);
    expect(traffic()).toEqual({ v4: false, v6: true });
    const result = sync.patch({ upsert: [{ cidr: ADDR.a6 }, { cidr: '10.99.0.0/28' }], remove: ['10.99.0.0/28', '10.99.0.0/29'] });
    // Upsert wins over remove for the same prefix; its value changed (no expiry now).
    expect(result.operations).toEqual([`+ block ${ADDR.a6}/128`, '~ block 10.99.0.0/28']);
    expect(result.previous).toEqual({ present: [{ cidr: '10.99.0.0/28', expiresAt: 4_000_000_000 }], absent: [`${ADDR.a6}/128`, '10.99.0.0/29'] });
    expect(maps.getExact('10.99.0.0/28')).toEqual({ cidr: '10.99.0.0/28' });
    expect(traffic()).toEqual({ v4: false, v6: false });

    sync.restorePatch(result.previous);
    expect(maps.readAll()).toEqual([{ cidr: '10.99.0.0/28', expiresAt: 4_000_000_000 }]);
    expect(traffic()).toEqual({ v4: false, v6: true });
  });

  it('moves host entries written into the trie by older versions into the host map', async () => {
    const legacy = BlocklistMaps.open({ pinDir, maxEntriesV4: 64, maxEntriesV6: 64 }); // no host maps: hosts go to the trie
    try {
      legacy.upsert([{ cidr: `${ADDR.a4}/32` }]);
    } finally {
      legacy.close();
    }
    expect(maps.dumpImage().lpmV4.count).toBe(1);
    const result = await sync.syncEntries([{ cidr: `${ADDR.a4}/32` }]);
    expect(result.counts).toMatchObject({ added: 1, removed: 1 });
    const image = maps.dumpImage();
    expect([image.lpmV4.count, image.hostV4.count]).toEqual([0, 1]);
    expect(traffic()).toEqual({ v4: false, v6: true });
  });

  it('prepare then apply of a file reference: a file replaced in between is read again, so the maps hold what the file says at apply time', async () => {
    const blocklist = createBlocklistSubsystem({ maps: () => maps, store });
    const file = join(storeDir, 'feed.txt');
    writeFileSync(file, `${ADDR.a6}\n`);
    const intent = { mode: 'replace-ref' as const, ref: { file } };
    const prepared = await prepareSubsystem(blocklist, intent, { dryRun: false });
    expect(prepared.plan.operations).toEqual([`+ block ${ADDR.a6}/128 (no expiry)`]);
    // Replaced the way feeds are (new file renamed over the old one) between plan and apply.
    writeFileSync(`${file}.new`, `${ADDR.a4}\n`);
    renameSync(`${file}.new`, file);
    await blocklist.apply(intent);
    expect(maps.readAll().map((e) => e.cidr)).toEqual([`${ADDR.a4}/32`]);
    // The workflow's verify step would catch it: the maps no longer match the plan's expectation.
    expect(await blocklist.check(prepared.expected, { once: (_k, read) => read() })).toEqual([expect.stringMatching(/blocklist maps differ from the expected contents/)]);
    if (prepared.snapshot) await blocklist.restore(prepared.snapshot);
  });

  it('as a subsystem: a by-reference list applies, its store snapshot restores exactly, kernel errors are typed non-retryable failures', async () => {
    const blocklist = createBlocklistSubsystem({ maps: () => maps, store });
    await sync.syncEntries([{ cidr: `${ADDR.a6}/128` }]);
    const before = maps.readAll();
    const intent = { mode: 'replace-ref' as const, ref: store.put(Buffer.from(`${ADDR.a4}\n`)) };
    const prepared = await prepareSubsystem(blocklist, intent, { dryRun: false });
    expect(prepared.snapshot?.ref?.sha256).toMatch(/^[0-9a-f]{64}$/); // by reference: the maps' image is in the node's store
    await blocklist.apply(intent);
    expect(traffic()).toEqual({ v4: false, v6: true });
    await blocklist.restore(prepared.snapshot!);
    expect(await blocklist.check(prepared.snapshot!.check, { once: (_k, read) => read() })).toEqual([]);
    expect(maps.readAll()).toEqual(before);
    expect(traffic()).toEqual({ v4: true, v6: false });

    const tooMany = Array.from({ length: 70 }, (_, i) => `10.${i}.0.0/16`).join('\n');
    let failure: unknown;
    try {
      await blocklist.apply({ mode: 'replace-ref', ref: store.put(Buffer.from(tooMany)) });
    } catch (err) {
      failure = err;
    }
    expect(failure).toBeInstanceOf(ApplicationFailure);
    expect(failure).toMatchObject({ type: 'BlocklistMapFull', nonRetryable: true });
    expect((failure as Error).message).toMatch(/blocklist_v4.*64/);
    await expect(prepareSubsystem(blocklist, { mode: 'replace-ref', ref: { sha256: 'nothex' } }, { dryRun: false })).rejects.toMatchObject({ type: 'InvalidBlocklist', nonRetryable: true });
    expect(maps.readAll()).toEqual(before);
  });
});
