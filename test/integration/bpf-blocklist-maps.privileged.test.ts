/**
 * Real pinned LPM tries on bpffs. Every test gets its own pin directory under
 * /sys/fs/bpf/fos1-test-<random> and removes it afterwards, so runs never see each
 * other's maps and a failed run leaves nothing behind.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BLOCK_VALUE_SIZE, LPM_V4_KEY_SIZE, LPM_V6_KEY_SIZE, encodeBlockValue, encodeLpmKey } from '../../bpf/blocklist-codec';
import {
  BLOCKLIST_V4_MAP,
  BLOCKLIST_V6_MAP,
  BlocklistMaps,
  blocklistPinPath,
  removePinnedBlocklist,
} from '../../bpf/blocklist-maps';
import { BpfMapFullError, BpfNotFoundError, BpfPermissionError, libbpf } from '../../bpf/libbpf';
import {
  BPF_F_NO_PREALLOC,
  BPF_MAP_TYPE_HASH,
  BPF_MAP_TYPE_LPM_TRIE,
  BPF_NOEXIST,
  BpfMap,
  BpfMapMismatchError,
} from '../../bpf/map';
import { type BlocklistImage, emptyImage, imageDigest } from '../../bpf/blocklist-image';
import { describePrivileged } from '../helpers/capabilities';

describePrivileged('pinned eBPF blocklist maps', ['root', 'bpffs'], () => {
  let pinDir: string;
  const opened: Array<{ close(): void }> = [];

  /** Tracks anything with close() so afterEach can release fds even when a test fails. */
  function track<T extends { close(): void }>(thing: T): T {
    opened.push(thing);
    return thing;
  }

  function openMaps(maxEntries = 64): BlocklistMaps {
    return track(BlocklistMaps.open({ pinDir, maxEntriesV4: maxEntries, maxEntriesV6: maxEntries }));
  }

  beforeEach(() => {
    pinDir = `/sys/fs/bpf/fos1-test-${randomBytes(6).toString('hex')}`;
  });

  afterEach(() => {
    for (const thing of opened.splice(0)) thing.close();
    removePinnedBlocklist(pinDir);
    rmSync(pinDir, { recursive: true, force: true });
    expect(existsSync(pinDir)).toBe(false);
  });

  it('binds libbpf structs with the layout of the C headers', () => {
    const { layouts } = libbpf();
    expect(layouts.bpf_map_create_opts.size).toBe(48);
    expect(layouts.bpf_map_create_opts.offsets).toMatchObject({ sz: 0, btf_fd: 8, inner_map_fd: 24, map_flags: 28, map_extra: 32, numa_node: 40, map_ifindex: 44 });
    expect(layouts.bpf_map_info.size).toBe(88);
    expect(layouts.bpf_map_info.offsets).toMatchObject({
      type: 0,
      id: 4,
      key_size: 8,
      value_size: 12,
      max_entries: 16,
      map_flags: 20,
      name: 24,
      ifindex: 40,
      netns_dev: 48,
      btf_id: 64,
      map_extra: 80,
    });
    expect(layouts.bpf_map_batch_opts).toEqual({ size: 24, offsets: { sz: 0, elem_flags: 8, flags: 16 } });
  });

  it('creates and pins missing maps, and a reopen from the pins sees the same contents', () => {
    const first = openMaps();
    expect(existsSync(join(pinDir, BLOCKLIST_V4_MAP))).toBe(true);
    expect(existsSync(join(pinDir, BLOCKLIST_V6_MAP))).toBe(true);
    expect(first.readAll()).toEqual([]);

    first.upsert([
      { cidr: '198.51.100.0/24', expiresAt: 1_900_000_000 },
      { cidr: '2001:db8::/48' },
      { cidr: '192.0.2.1' },
    ]);
    const written = first.readAll();
    first.close();
    first.close(); // idempotent

    const second = openMaps();
    expect(second.readAll()).toEqual(written);
    expect(written).toEqual([
      { cidr: '192.0.2.1/32' },
      { cidr: '198.51.100.0/24', expiresAt: 1_900_000_000 },
      { cidr: '2001:db8::/48' },
    ]);
  });

  it('keeps LPM semantics: host and prefix entries of both families coexist and read back canonical', () => {
    const maps = openMaps();
    maps.upsert([
      { cidr: '10.0.0.0/8' },
      { cidr: '10.1.2.0/24', expiresAt: 100 },
      { cidr: '10.1.2.3' },
      { cidr: '9.9.9.9/32' },
      { cidr: '2001:DB8:0::/32' },
      { cidr: '2001:db8::1' },
      { cidr: '::/0', expiresAt: 5 },
    ]);
    expect(maps.readAll()).toEqual([
      { cidr: '9.9.9.9/32' },
      { cidr: '10.0.0.0/8' },
      { cidr: '10.1.2.0/24', expiresAt: 100 },
      { cidr: '10.1.2.3/32' },
      { cidr: '::/0', expiresAt: 5 },
      { cidr: '2001:db8::/32' },
      { cidr: '2001:db8::1/128' },
    ]);

    // Kernel lookups are longest-prefix matches: an address inside 10.1.2.0/24 but
    // not 10.1.2.3 finds the /24 value, one outside it the /8.
    const v4 = track(BpfMap.openPinned(blocklistPinPath(pinDir, 4)));
    expect(v4.lookup(encodeLpmKey('10.1.2.200'))).toEqual(encodeBlockValue({ expiresAt: 100 }));
    expect(v4.lookup(encodeLpmKey('10.200.0.1'))).toEqual(encodeBlockValue({}));
    expect(v4.lookup(encodeLpmKey('11.0.0.1'))).toBeNull();
    const v6 = track(BpfMap.openPinned(blocklistPinPath(pinDir, 6)));
    expect(v6.lookup(encodeLpmKey('2001:db9::1'))).toEqual(encodeBlockValue({ expiresAt: 5 }));

    // Upserting an existing prefix replaces its value in place.
    maps.upsert([{ cidr: '10.1.2.0/24' }]);
    expect(maps.readAll()).toContainEqual({ cidr: '10.1.2.0/24' });
    expect(maps.readAll()).toHaveLength(7);
  });

  it('removes entries idempotently, leaving shorter and longer prefixes alone', () => {
    const maps = openMaps();
    maps.upsert([{ cidr: '10.0.0.0/8' }, { cidr: '10.1.0.0/16' }, { cidr: '10.1.2.3/32' }, { cidr: '2001:db8::/32' }]);
    maps.remove(['10.1.0.0/16', '2001:db8::/32']);
    expect(maps.readAll()).toEqual([{ cidr: '10.0.0.0/8' }, { cidr: '10.1.2.3/32' }]);
    // Second time round nothing is there: not an error.
    maps.remove(['10.1.0.0/16', '2001:db8::/32', '192.0.2.0/24', '10.1.0.0/16']);
    expect(maps.readAll()).toEqual([{ cidr: '10.0.0.0/8' }, { cidr: '10.1.2.3/32' }]);
    maps.remove([]);
    // A typo fails before anything is deleted.
    expect(() => maps.remove(['10.0.0.0/8', '10.1.2.3/24'])).toThrow(/host bits/);
    expect(maps.readAll()).toHaveLength(2);
  });

  it('throws BpfMapFullError naming the map and max_entries, and leaves the map as it was', () => {
    const maps = openMaps(4);
    expect(maps.capacity).toEqual({ v4: 4, v6: 4 });
    const four = ['192.0.2.1', '192.0.2.2', '192.0.2.3', '192.0.2.0/24'].map((cidr) => ({ cidr }));
    maps.upsert(four);
    const before = maps.readAll();
    expect(before).toHaveLength(4);

    let error: unknown;
    try {
      maps.upsert([{ cidr: '192.0.2.1', expiresAt: 42 }, { cidr: '2001:db8::/32' }, { cidr: '198.51.100.5' }]);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(BpfMapFullError);
    const full = error as BpfMapFullError;
    expect(full.message).toContain(`eBPF map "${BLOCKLIST_V4_MAP}" is full (max_entries 4)`);
    expect(full.mapName).toBe(BLOCKLIST_V4_MAP);
    expect(full.maxEntries).toBe(4);
    expect(full.op).toBe('bpf_map_update_elem');
    expect(['E2BIG', 'ENOSPC']).toContain(full.code);
    // All or nothing: the replaced value and the v6 insert were undone.
    expect(maps.readAll()).toEqual(before);

    // A full map still accepts new values for prefixes it already holds.
    maps.upsert([{ cidr: '192.0.2.1', expiresAt: 42 }]);
    expect(maps.readAll()).toContainEqual({ cidr: '192.0.2.1/32', expiresAt: 42 });
  });

  it('refuses a pinned map with a different value size instead of replacing it', () => {
    const wrong = track(
      BpfMap.create({ type: BPF_MAP_TYPE_LPM_TRIE, name: BLOCKLIST_V4_MAP, keySize: LPM_V4_KEY_SIZE, valueSize: 8, maxEntries: 16 }),
    );
    mkdirSync(pinDir);
    wrong.pin(blocklistPinPath(pinDir, 4));
    wrong.update(encodeLpmKey('10.0.0.0/8'), Buffer.alloc(8, 1));

    const path = blocklistPinPath(pinDir, 4);
    expect(() => openMaps()).toThrow(BpfMapMismatchError);
    expect(() => openMaps()).toThrow(`pinned eBPF map at ${path} ("${BLOCKLIST_V4_MAP}") is incompatible: value_size 8 (expected 16)`);
    // The old pin and its data are untouched.
    const again = track(BpfMap.openPinned(path));
    expect(again.info.valueSize).toBe(8);
    expect([...again.keys()]).toHaveLength(1);
  });

  it('reports the kernel view of each map', () => {
    openMaps(32);
    const v4 = track(BpfMap.openPinned(blocklistPinPath(pinDir, 4)));
    expect(v4.info).toMatchObject({
      type: BPF_MAP_TYPE_LPM_TRIE,
      name: BLOCKLIST_V4_MAP,
      keySize: LPM_V4_KEY_SIZE,
      valueSize: BLOCK_VALUE_SIZE,
      maxEntries: 32,
      flags: BPF_F_NO_PREALLOC,
    });
    expect(v4.info.id).toBeGreaterThan(0);
    const v6 = track(BpfMap.openPinned(blocklistPinPath(pinDir, 6), { type: BPF_MAP_TYPE_LPM_TRIE, keySize: LPM_V6_KEY_SIZE }));
    expect(v6.info).toMatchObject({ name: BLOCKLIST_V6_MAP, keySize: 20, valueSize: 16, maxEntries: 32 });
  });

  it('keeps an existing map and its max_entries when reopened with other sizes', () => {
    openMaps(8).upsert([{ cidr: '10.0.0.0/8' }]);
    const reopened = track(BlocklistMaps.open({ pinDir, maxEntriesV4: 1000, maxEntriesV6: 1000 }));
    expect(reopened.capacity).toEqual({ v4: 8, v6: 8 });
    expect(reopened.readAll()).toEqual([{ cidr: '10.0.0.0/8' }]);
  });

  describe('two-thread batch apply and dump of large host maps', () => {
    /** `n` distinct IPv4 hosts from `base` as a hostV4 image part, value `ruleId = i + rule0`. */
    function hosts(n: number, base: number, rule0 = 0): BlocklistImage['hostV4'] {
      const keys = Buffer.alloc(n * 4);
      const values = Buffer.alloc(n * BLOCK_VALUE_SIZE);
      for (let i = 0; i < n; i++) {
        keys.writeUInt32BE((base + i * 7) >>> 0, i * 4);
        encodeBlockValue({ ruleId: rule0 + i }).copy(values, i * BLOCK_VALUE_SIZE);
      }
      return { keys, values, count: n };
    }
    /** `n` distinct /24 prefixes in 20.0.0.0/8 as an lpmV4 image part. */
    function prefixes(n: number): BlocklistImage['lpmV4'] {
      const keys = Buffer.concat(Array.from({ length: n }, (_, i) => encodeLpmKey(`20.${i >> 8}.${i & 255}.0/24`)));
      return { keys, values: Buffer.alloc(n * BLOCK_VALUE_SIZE), count: n };
    }
    const digestOf = (part: BlocklistImage['hostV4']) => imageDigest({ ...emptyImage(), hostV4: part });

    it('writes and reads back every entry exactly once, the same as one thread does', () => {
      const map = track(BpfMap.create({ type: BPF_MAP_TYPE_HASH, name: 'fos1_test_t2', keySize: 4, valueSize: BLOCK_VALUE_SIZE, maxEntries: 300_000 }));
      const part = hosts(200_000, 0x64000000);
      map.updateBatchRaw(part.keys, part.values, part.count, 0, 1 << 14, 2);
      const threaded = map.dumpRawThreaded(1 << 12);
      const single = map.dumpRaw();
      // The two dump halves overlap in the kernel's last bucket of the first half; a
      // duplicate (or a lost bucket) would change the count and the digest.
      expect(threaded.count).toBe(200_000);
      expect(single.count).toBe(200_000);
      expect(digestOf(threaded)).toBe(digestOf(part));
      expect(digestOf(single)).toBe(digestOf(part));
    });

    it('when the map fills up half way, both threads stop, the error names the map, and applyImage puts back the exact previous contents', () => {
      const maps = track(
        BlocklistMaps.open({ pinDir, maxEntriesV4: 64, maxEntriesV6: 64, hostMaps: { maxEntriesV4: 150_000, maxEntriesV6: 64 }, batchThreads: 2 }),
      );
      const start: BlocklistImage = { ...emptyImage(), hostV4: hosts(1000, 0x0a000000, 5) };
      maps.applyImage(start);
      const before = imageDigest(maps.dumpImage());
      expect(maps.verifyImage(start)).toBeNull();

      // 200,000 new hosts (and new values for the 1000 present ones) into 150,000 slots:
      // each thread writes half, and at least one of them hits E2BIG part way.
      const tooMany: BlocklistImage = { ...emptyImage(), hostV4: { ...hosts(201_000, 0x0a000000, 9) } };
      let error: unknown;
      try {
        maps.applyImage(tooMany);
      } catch (err) {
        error = err;
      }
      expect(error).toBeInstanceOf(BpfMapFullError);
      expect((error as Error).message).toMatch(/eBPF map "blockhost_v4" is full \(max_entries 150000\)/);
      // Read back: exactly the 1000 entries with their old values, nothing of the new list.
      expect(imageDigest(maps.dumpImage())).toBe(before);
      expect(maps.verifyImage(start)).toBeNull();
      expect(maps.readAll()).toHaveLength(1000);

      // Now the helper thread's trie fills up (65 prefixes into 64 slots) while the host
      // half of the writes succeeds: the same exact restore.
      const trieFull: BlocklistImage = { ...emptyImage(), hostV4: hosts(140_000, 0x0a000000, 3), lpmV4: prefixes(65) };
      error = undefined;
      try {
        maps.applyImage(trieFull);
      } catch (err) {
        error = err;
      }
      expect(error).toBeInstanceOf(BpfMapFullError);
      expect((error as Error).message).toMatch(/eBPF map "blocklist_v4" is full \(max_entries 64\)/);
      expect(imageDigest(maps.dumpImage())).toBe(before);
    });

    it('applies and reads back hosts and prefixes on two threads exactly as one thread sees them', () => {
      const opts = { pinDir, maxEntriesV4: 2000, maxEntriesV6: 64, hostMaps: { maxEntriesV4: 300_000, maxEntriesV6: 64 } };
      const two = track(BlocklistMaps.open({ ...opts, batchThreads: 2 }));
      const one = track(BlocklistMaps.open({ ...opts, batchThreads: 1 }));
      const desired: BlocklistImage = { ...emptyImage(), hostV4: hosts(200_000, 0x64000000, 1), lpmV4: prefixes(1500) };
      two.applyImage(desired);
      expect(two.verifyImage(desired)).toBeNull();
      const viaTwo = two.dumpImage();
      expect([viaTwo.hostV4.count, viaTwo.lpmV4.count]).toEqual([200_000, 1500]);
      expect(imageDigest(viaTwo)).toBe(imageDigest(one.dumpImage()));
      expect(imageDigest(viaTwo)).toBe(imageDigest(desired));
    });
  });

  describe('BpfMap', () => {
    it('gives named errors that say what failed on what', () => {
      const missing = join(pinDir, 'nothing-here');
      expect(() => BpfMap.openPinned(missing)).toThrow(BpfNotFoundError);
      expect(() => BpfMap.openPinned(missing)).toThrow(`bpf_obj_get on pin ${missing} failed: ENOENT`);

      const map = track(BpfMap.create({ type: BPF_MAP_TYPE_HASH, name: 'fos1_test_h', keySize: 4, valueSize: 4, maxEntries: 2 }));
      expect(() => map.pin('/tmp/fos1-not-bpffs')).toThrow(BpfPermissionError);
      expect(() => map.pin('/tmp/fos1-not-bpffs')).toThrow(/bpf_obj_pin on pin \/tmp\/fos1-not-bpffs failed: EPERM — \/tmp is not on bpffs/);
      expect(() => map.lookup(Buffer.alloc(3))).toThrow(/key is 3 bytes, map key_size is 4/);
      expect(() => BpfMap.create({ type: BPF_MAP_TYPE_HASH, name: 'much_too_long_name', keySize: 4, valueSize: 4, maxEntries: 1 })).toThrow(
        /name "much_too_long_name" is invalid/,
      );
    });

    it('supports get/update/delete, iteration and batch calls, with E2BIG as BpfMapFullError for hash maps', () => {
      const u32 = (n: number) => {
        const b = Buffer.alloc(4);
        b.writeUInt32LE(n);
        return b;
      };
      const map = track(BpfMap.create({ type: BPF_MAP_TYPE_HASH, name: 'fos1_test_h', keySize: 4, valueSize: 4, maxEntries: 3 }));
      map.update(u32(1), u32(10));
      expect(map.lookup(u32(1))).toEqual(u32(10));
      expect(map.lookup(u32(9))).toBeNull();
      expect(() => map.update(u32(1), u32(11), BPF_NOEXIST)).toThrow(/EEXIST/);
      map.updateBatch([u32(2), u32(3)], [u32(20), u32(30)]);
      expect(() => map.update(u32(4), u32(40))).toThrow(BpfMapFullError);
      expect(() => map.update(u32(4), u32(40))).toThrow('eBPF map "fos1_test_h" is full (max_entries 3)');
      expect([...map.keys()].map((k) => k.readUInt32LE()).sort()).toEqual([1, 2, 3]);
      expect(map.lookupBatch(1).map(([k, v]) => [k.readUInt32LE(), v.readUInt32LE()]).sort()).toEqual([
        [1, 10],
        [2, 20],
        [3, 30],
      ]);
      expect(map.delete(u32(2))).toBe(true);
      expect(map.delete(u32(2))).toBe(false);
      expect(map.deleteBatch([u32(1), u32(7), u32(3)])).toBe(2);
      expect([...map.entries()]).toEqual([]);
      map.close();
      map.close();
      expect(() => map.lookup(u32(1))).toThrow(/closed/);
    });

    it('runs batch operations on LPM tries', () => {
      const trie = track(
        BpfMap.create({ type: BPF_MAP_TYPE_LPM_TRIE, name: 'fos1_test_lpm', keySize: 8, valueSize: 16, maxEntries: 600 }),
      );
      const cidrs = Array.from({ length: 500 }, (_, i) => `10.${i >> 8}.${i & 0xff}.0/24`);
      trie.updateBatch(
        cidrs.map((c) => encodeLpmKey(c)),
        cidrs.map((_, i) => encodeBlockValue({ ruleId: i })),
      );
      expect(trie.lookupBatch(64)).toHaveLength(500);
      expect([...trie.keys()]).toHaveLength(500);
      expect(trie.deleteBatch(cidrs.slice(0, 250).map((c) => encodeLpmKey(c)))).toBe(250);
      expect(trie.lookupBatch()).toHaveLength(250);
    });
  });
});
