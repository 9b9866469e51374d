/**
 * The TypeScript codecs against the BTF of the compiled BPF objects (what Cilium's
 * alignchecker does for Go): every struct shared with the programs must have the
 * size and member offsets the codecs use, and every map the key/value size the
 * control plane writes. Compiles the programs with clang (cached) and reads the BTF
 * with bpftool; opening an object with libbpf needs no privileges.
 */
import { execFileSync } from 'node:child_process';
import { LPM_V4_KEY_SIZE, LPM_V6_KEY_SIZE, BLOCK_VALUE_SIZE } from '../../bpf/blocklist-codec';
import { IMAGE_KEY_SIZE } from '../../bpf/blocklist-image';
import { buildDatapath, type BuiltObjects } from '../../bpf/build';
import { DATAPATH_LAYOUTS, DROP_STATS_SLOTS, DropReason } from '../../bpf/datapath-codec';
import { DROP_REASONS } from '../../model/gates';
import { libbpfObjects } from '../../bpf/libbpf';
import { cacheDir } from '../../scripts/paths';

interface BtfMember {
  name: string;
  bits_offset: number;
}
interface BtfType {
  id: number;
  kind: string;
  name: string;
  size?: number;
  members?: BtfMember[];
}

let objects: BuiltObjects;
const btf: Record<string, Map<string, BtfType>> = {};

beforeAll(() => {
  objects = buildDatapath({ cacheDir: cacheDir() });
  for (const [kind, path] of Object.entries(objects)) {
    const dump = JSON.parse(execFileSync('bpftool', ['-j', 'btf', 'dump', 'file', path], { encoding: 'utf8', maxBuffer: 64 << 20 })) as { types: BtfType[] };
    btf[kind] = new Map(dump.types.filter((t) => t.kind === 'STRUCT').map((t) => [t.name, t]));
  }
});

describe.each(['tc', 'xdp'] as const)('BTF of fos1-%s.bpf.o', (kind) => {
  it.each(Object.entries(DATAPATH_LAYOUTS))('%s has the size and member offsets of the TypeScript codec', (name, layout) => {
    const type = btf[kind]?.get(name);
    expect(type).toBeDefined();
    const offsets = Object.fromEntries((type?.members ?? []).map((m) => [m.name, m.bits_offset / 8]));
    expect({ size: type?.size, offsets }).toEqual({ size: layout.size, offsets: layout.offsets });
  });

  it('declares every map with the key and value sizes the control plane encodes', () => {
    const lib = libbpfObjects();
    const obj = lib.bpf_object__open_file(objects[kind], null);
    expect(obj).toBeTruthy();
    const maps: Record<string, [number, number]> = {};
    try {
      for (let m = lib.bpf_object__next_map(obj, null); m; m = lib.bpf_object__next_map(obj, m)) {
        maps[lib.bpf_map__name(m)] = [lib.bpf_map__key_size(m), lib.bpf_map__value_size(m)];
      }
    } finally {
      lib.bpf_object__close(obj);
    }
    const L = DATAPATH_LAYOUTS;
    expect(maps).toEqual({
      blocklist_v4: [LPM_V4_KEY_SIZE, BLOCK_VALUE_SIZE],
      blocklist_v6: [LPM_V6_KEY_SIZE, BLOCK_VALUE_SIZE],
      blockhost_v4: [IMAGE_KEY_SIZE.hostV4, BLOCK_VALUE_SIZE],
      blockhost_v6: [IMAGE_KEY_SIZE.hostV6, BLOCK_VALUE_SIZE],
      ratelimit_v4: [IMAGE_KEY_SIZE.hostV4, L.fos1_ratelimit_value.size],
      ratelimit_v6: [IMAGE_KEY_SIZE.hostV6, L.fos1_ratelimit_value.size],
      ratelimit_tat: [L.fos1_entry_key.size, 8],
      zone_ifaces: [4, 4],
      zone_policy: [L.fos1_zone_policy_key.size, L.fos1_zone_verdict.size],
      zone_default: [4, L.fos1_zone_verdict.size],
      conntrack: [L.fos1_ct_key.size, L.fos1_ct_value.size],
      settings: [4, L.fos1_settings.size],
      rule_stats: [4, L.fos1_counter.size],
      entry_stats: [L.fos1_entry_key.size, L.fos1_counter.size],
      drop_events: [0, 0],
      last_drop: [4, L.fos1_drop_event.size],
      drop_stats: [4, L.fos1_counter.size],
    });
  });
});

it('sizes drop_stats with one slot per drop reason, named as the gates name them', () => {
  const lib = libbpfObjects();
  for (const path of Object.values(objects)) {
    const obj = lib.bpf_object__open_file(path, null);
    try {
      let slots: number | undefined;
      for (let m = lib.bpf_object__next_map(obj, null); m; m = lib.bpf_object__next_map(obj, m)) {
        if (lib.bpf_map__name(m) === 'drop_stats') slots = lib.bpf_map__max_entries(m);
      }
      expect(slots).toBe(DROP_STATS_SLOTS);
    } finally {
      lib.bpf_object__close(obj);
    }
  }
  // Reason ids 1..5 fit the slots, and model/gates.ts names them in the same order.
  expect(Math.max(...Object.keys(DropReason).map(Number))).toBeLessThan(DROP_STATS_SLOTS);
  expect(Object.values(DropReason)).toEqual([...DROP_REASONS]);
});

it('lays out the libbpf option structs as <bpf/libbpf.h> does (size_t :0 pads to 8)', () => {
  const { layouts, tcHookSize, tcOptsSize } = libbpfObjects();
  expect(tcHookSize).toBe(24);
  expect(layouts.bpf_tc_hook.offsets).toEqual({ sz: 0, ifindex: 8, attach_point: 12, parent: 16 });
  expect(tcOptsSize).toBe(32);
  expect(layouts.bpf_tc_opts.offsets).toEqual({ sz: 0, prog_fd: 8, flags: 12, prog_id: 16, handle: 20, priority: 24 });
});
