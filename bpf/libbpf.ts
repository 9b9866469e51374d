/**
 * fos1's own typed binding to the system libbpf (`libbpf.so.1`), through koffi.
 *
 * Only the low-level `bpf(2)` wrappers from `<bpf/bpf.h>` are bound: fos1 manages
 * pinned maps by file descriptor and does not need libbpf's object loader here.
 * libbpf 1.x low-level calls return a negative errno on failure (and set errno too);
 * every wrapper in this project reads the return value, never `errno`, because koffi
 * gives no guarantee that nothing else touched `errno` between the call and the read.
 *
 * Struct layouts below were checked against libbpf 1.1.2's `/usr/include/bpf/bpf.h`
 * and the kernel UAPI `/usr/include/linux/bpf.h`;
 * `test/integration/bpf-blocklist-maps.privileged.test.ts` pins their sizes and offsets
 * so a koffi or header change shows up as a failing test, not as the kernel reading
 * garbage.
 */
import { constants as osConstants } from 'node:os';
import { statfsSync } from 'node:fs';
import { dirname } from 'node:path';
import koffi, { type LibraryHandle } from 'koffi';

/** The shared object fos1 binds to; libbpf's SONAME has been `libbpf.so.1` since 1.0. */
export const LIBBPF_SONAME = 'libbpf.so.1';

/** `BPF_OBJ_NAME_LEN` from the UAPI: map names are at most 15 bytes plus NUL. */
export const BPF_OBJ_NAME_LEN = 16;

/** Magic number of bpffs in `statfs(2)` (`BPF_FS_MAGIC` in `<linux/magic.h>`). */
export const BPF_FS_MAGIC = 0xcafe4a11;

/** Fields of `struct bpf_map_create_opts` that fos1 sets. `sz` is filled in by the binding. */
export interface MapCreateOpts {
  map_flags?: number;
  btf_fd?: number;
  btf_key_type_id?: number;
  btf_value_type_id?: number;
  btf_vmlinux_value_type_id?: number;
  inner_map_fd?: number;
  map_extra?: number | bigint;
  numa_node?: number;
  map_ifindex?: number;
}

/** `struct bpf_map_info` as the kernel fills it (the prefix libbpf 1.1's UAPI header knows). */
export interface RawMapInfo {
  type: number;
  id: number;
  key_size: number;
  value_size: number;
  max_entries: number;
  map_flags: number;
  name: string;
  ifindex: number;
  btf_vmlinux_value_type_id: number;
  netns_dev: number | bigint;
  netns_ino: number | bigint;
  btf_id: number;
  btf_key_type_id: number;
  btf_value_type_id: number;
  map_extra: number | bigint;
}

/** `struct bpf_map_batch_opts` minus `sz`. */
export interface BatchOpts {
  elem_flags?: number;
  flags?: number;
}

/**
 * The bound functions, with libbpf's C names and calling conventions: integers in,
 * `0`/fd or a negative errno out. Pointers are Node `Buffer`s (koffi passes their
 * memory in place, so output buffers are written by the kernel directly). A buffer
 * must be at least as long as the map's key/value size — the kernel copies exactly
 * that many bytes — which is why callers should go through {@link BpfMap} instead.
 *
 * `count` parameters are one-element arrays because koffi maps `_Inout_ __u32 *` to
 * a JS array whose first item is read before and replaced after the call.
 */
export interface Libbpf {
  bpf_map_create(
    mapType: number,
    name: string | null,
    keySize: number,
    valueSize: number,
    maxEntries: number,
    opts: MapCreateOpts & { sz: number },
  ): number;
  bpf_obj_pin(fd: number, path: string): number;
  bpf_obj_get(path: string): number;
  bpf_map_update_elem(fd: number, key: Buffer, value: Buffer, flags: number): number;
  bpf_map_lookup_elem(fd: number, key: Buffer, value: Buffer): number;
  bpf_map_delete_elem(fd: number, key: Buffer): number;
  bpf_map_get_next_key(fd: number, key: Buffer | null, nextKey: Buffer): number;
  bpf_obj_get_info_by_fd(fd: number, info: Partial<RawMapInfo>, infoLen: [number]): number;
  bpf_map_update_batch(fd: number, keys: Buffer, values: Buffer, count: [number], opts: BatchOpts & { sz: number }): number;
  bpf_map_delete_batch(fd: number, keys: Buffer, count: [number], opts: BatchOpts & { sz: number }): number;
  bpf_map_lookup_batch(
    fd: number,
    inBatch: Buffer | null,
    outBatch: Buffer,
    keys: Buffer,
    values: Buffer,
    count: [number],
    opts: BatchOpts & { sz: number },
  ): number;
  libbpf_strerror(err: number, buf: Buffer, size: number): number;
  /** libc `close(2)`; returns -1 and sets errno on failure (libc convention, not libbpf's). */
  close(fd: number): number;
  /** `sizeof(struct bpf_map_create_opts)` as laid out by koffi (48 on x86-64 / arm64). */
  readonly mapCreateOptsSize: number;
  /** `sizeof(struct bpf_map_info)` as laid out by koffi (88 for libbpf 1.1's UAPI). */
  readonly mapInfoSize: number;
  /** `sizeof(struct bpf_map_batch_opts)` (24). */
  readonly batchOptsSize: number;
  /** Size and member offsets of each bound struct, as koffi laid them out (for layout tests). */
  readonly layouts: Readonly<Record<'bpf_map_create_opts' | 'bpf_map_info' | 'bpf_map_batch_opts', StructLayout>>;
}

/** Size and member offsets of a C struct. */
export interface StructLayout {
  size: number;
  offsets: Record<string, number>;
}

/** koffi's (unexported) `TypeSpec`: a type string, TypeObject or direction marker. */
type KoffiTypeSpec = Parameters<typeof koffi.type>[0];

let bound: Libbpf | undefined;

/**
 * Returns the libbpf binding, loading `libbpf.so.1` and libc on first use.
 *
 * Lazy so that importing `bpf/` (e.g. for types, or in unit tests of the codec) works
 * on machines without libbpf; only code that really touches the kernel needs it.
 */
export function libbpf(): Libbpf {
  if (bound) return bound;
  let lib: LibraryHandle;
  let libc: LibraryHandle;
  try {
    lib = koffi.load(LIBBPF_SONAME);
    libc = koffi.load('libc.so.6');
  } catch (cause) {
    throw new Error(
      `cannot load ${LIBBPF_SONAME} (install the libbpf1 package, version 1.0 or later): ${String(cause)}`,
      { cause },
    );
  }

  // Types are anonymous on purpose: koffi registers named types process-wide, and
  // jest evaluates this module once per test file in the same process, so a named
  // `koffi.struct('bpf_map_info', …)` would fail with "duplicate type" the second time.
  const u32 = 'uint32_t';
  const u64 = 'uint64_t';
  const createOpts = koffi.struct({
    sz: 'size_t', // must hold sizeof(struct): libbpf refuses opts whose sz it cannot trust
    btf_fd: u32,
    btf_key_type_id: u32,
    btf_value_type_id: u32,
    btf_vmlinux_value_type_id: u32,
    inner_map_fd: u32,
    map_flags: u32,
    map_extra: u64,
    numa_node: u32,
    map_ifindex: u32,
  });
  const mapInfo = koffi.struct({
    type: u32,
    id: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    name: koffi.array('char', BPF_OBJ_NAME_LEN, 'String'),
    ifindex: u32,
    btf_vmlinux_value_type_id: u32,
    netns_dev: u64,
    netns_ino: u64,
    btf_id: u32,
    btf_key_type_id: u32,
    btf_value_type_id: u32,
    _pad: u32, // `__u32 :32` alignment pad in the UAPI header
    map_extra: u64,
  });
  const batchOpts = koffi.struct({ sz: 'size_t', elem_flags: u64, flags: u64 });
  const inoutU32 = koffi.inout(koffi.pointer(u32));

  const fn = (name: string, result: string, args: KoffiTypeSpec[]) => lib.func(name, result, args);

  bound = {
    bpf_map_create: fn('bpf_map_create', 'int', ['int', 'const char *', u32, u32, u32, koffi.pointer(createOpts)]),
    bpf_obj_pin: fn('bpf_obj_pin', 'int', ['int', 'const char *']),
    bpf_obj_get: fn('bpf_obj_get', 'int', ['const char *']),
    bpf_map_update_elem: fn('bpf_map_update_elem', 'int', ['int', 'const void *', 'const void *', u64]),
    bpf_map_lookup_elem: fn('bpf_map_lookup_elem', 'int', ['int', 'const void *', 'void *']),
    bpf_map_delete_elem: fn('bpf_map_delete_elem', 'int', ['int', 'const void *']),
    bpf_map_get_next_key: fn('bpf_map_get_next_key', 'int', ['int', 'const void *', 'void *']),
    bpf_obj_get_info_by_fd: fn('bpf_obj_get_info_by_fd', 'int', ['int', koffi.out(koffi.pointer(mapInfo)), inoutU32]),
    bpf_map_update_batch: fn('bpf_map_update_batch', 'int', [
      'int',
      'const void *',
      'const void *',
      inoutU32,
      koffi.pointer(batchOpts),
    ]),
    bpf_map_delete_batch: fn('bpf_map_delete_batch', 'int', ['int', 'const void *', inoutU32, koffi.pointer(batchOpts)]),
    bpf_map_lookup_batch: fn('bpf_map_lookup_batch', 'int', [
      'int',
      'void *',
      'void *',
      'void *',
      'void *',
      inoutU32,
      koffi.pointer(batchOpts),
    ]),
    libbpf_strerror: fn('libbpf_strerror', 'int', ['int', 'char *', 'size_t']),
    close: libc.func('close', 'int', ['int']),
    mapCreateOptsSize: createOpts.size,
    mapInfoSize: mapInfo.size,
    batchOptsSize: batchOpts.size,
    layouts: {
      bpf_map_create_opts: layoutOf(createOpts),
      bpf_map_info: layoutOf(mapInfo),
      bpf_map_batch_opts: layoutOf(batchOpts),
    },
  };
  return bound;
}

function layoutOf(type: ReturnType<typeof koffi.struct>): StructLayout {
  const offsets: Record<string, number> = {};
  for (const [name, member] of Object.entries(type.members ?? {})) offsets[name] = member.offset;
  return { size: type.size, offsets };
}

// ---------------------------------------------------------------------------------
// Errors

/** errno values that matter here and are not all in `os.constants.errno`. */
export const ERRNO = {
  EPERM: 1,
  ENOENT: 2,
  EBADF: 9,
  EACCES: 13,
  EEXIST: 17,
  EINVAL: 22,
  ENOSPC: 28,
  E2BIG: 7,
  EOPNOTSUPP: 95,
  /** Kernel-internal "not supported" (524); leaks to userspace from some bpf commands. */
  ENOTSUPP: 524,
} as const;

const errnoNames = new Map<number, string>();
for (const [name, value] of Object.entries(osConstants.errno)) {
  if (!errnoNames.has(value)) errnoNames.set(value, name);
}
// Several names share a number; pick the ones the kernel's bpf code means.
errnoNames.set(ERRNO.EOPNOTSUPP, 'EOPNOTSUPP');
errnoNames.set(ERRNO.ENOTSUPP, 'ENOTSUPP');

/** Symbolic name of a (positive) errno, e.g. `EPERM`; `E<number>` when unknown. */
export function errnoCode(errno: number): string {
  return errnoNames.get(errno) ?? `E${errno}`;
}

/** Human text for a (positive) errno via `libbpf_strerror`, which also knows libbpf's own codes. */
export function describeErrno(errno: number): string {
  try {
    const buf = Buffer.alloc(256);
    libbpf().libbpf_strerror(errno, buf, buf.length);
    const end = buf.indexOf(0);
    return buf.toString('utf8', 0, end === -1 ? buf.length : end);
  } catch {
    return errnoCode(errno);
  }
}

/**
 * A failed bpf operation. `op` is the libbpf function (or fos1 step) that failed,
 * `target` what it was applied to (a map name or pin path), `errno` the positive
 * error number and `code` its symbolic name.
 */
export class BpfError extends Error {
  override name = 'BpfError';
  readonly op: string;
  readonly errno: number;
  readonly code: string;
  readonly target: string;

  constructor(op: string, errno: number, target: string, message?: string) {
    const code = errnoCode(errno);
    super(message ?? `${op} on ${target} failed: ${code} (${describeErrno(errno)})`);
    this.op = op;
    this.errno = errno;
    this.code = code;
    this.target = target;
  }
}

/** EPERM/EACCES: the process lacks the capabilities for `bpf(2)` or cannot write to bpffs. */
export class BpfPermissionError extends BpfError {
  override name = 'BpfPermissionError';
  constructor(op: string, errno: number, target: string, hint?: string) {
    super(
      op,
      errno,
      target,
      `${op} on ${target} failed: ${errnoCode(errno)} — ` +
        (hint ?? 'missing CAP_BPF / CAP_SYS_ADMIN or bpffs not writable'),
    );
  }
}

/** ENOENT: no such pin, or no such key. */
export class BpfNotFoundError extends BpfError {
  override name = 'BpfNotFoundError';
}

/**
 * E2BIG/ENOSPC from an update: the map holds `max_entries` elements and the key is
 * new. Hash maps report E2BIG, LPM tries ENOSPC; both mean the same to operators.
 */
export class BpfMapFullError extends BpfError {
  override name = 'BpfMapFullError';
  readonly mapName: string;
  readonly maxEntries: number;
  constructor(op: string, errno: number, mapName: string, maxEntries: number, target = `eBPF map "${mapName}"`) {
    super(
      op,
      errno,
      target,
      `eBPF map "${mapName}" is full (max_entries ${maxEntries}): ${op} failed with ${errnoCode(errno)}`,
    );
    this.mapName = mapName;
    this.maxEntries = maxEntries;
  }
}

/**
 * Turns a negative libbpf return value into the matching error class.
 * `target` names what the operation was applied to, e.g. `eBPF map "blocklist_v4"`
 * or `pin /sys/fs/bpf/fos1/blocklist_v4`.
 */
export function bpfError(op: string, ret: number, target: string): BpfError {
  const errno = Math.abs(ret);
  switch (errno) {
    case ERRNO.EPERM:
    case ERRNO.EACCES:
      return new BpfPermissionError(op, errno, target, permissionHint(op, target));
    case ERRNO.ENOENT:
      return new BpfNotFoundError(op, errno, target);
    default:
      return new BpfError(op, errno, target);
  }
}

/**
 * The kernel answers EPERM both for "no CAP_BPF" and for "pin path is not on bpffs",
 * which sends people hunting for capabilities they already have. When the target is
 * a path, check the filesystem so the message names the real cause.
 */
function permissionHint(op: string, target: string): string | undefined {
  if (op !== 'bpf_obj_pin' && op !== 'bpf_obj_get') return undefined;
  const path = target.replace(/^pin /, '');
  try {
    const fs = statfsSync(op === 'bpf_obj_pin' ? dirname(path) : path);
    if (fs.type !== BPF_FS_MAGIC) {
      return `${op === 'bpf_obj_pin' ? dirname(path) : path} is not on bpffs (mount -t bpf bpf /sys/fs/bpf)`;
    }
  } catch {
    // Path not inspectable: fall through to the generic capability hint.
  }
  return undefined;
}

// ---------------------------------------------------------------------------------
// Object loader, TC/XDP attachment and ring buffers (libbpf's high-level API)

/** An opaque libbpf pointer (`struct bpf_object *`, `struct bpf_map *`, …) as koffi returns it. */
export type LibbpfPointer = unknown;

/** `struct bpf_tc_hook` minus `sz`. `attach_point`: 1 ingress, 2 egress (`enum bpf_tc_attach_point`). */
export interface TcHook {
  ifindex: number;
  attach_point: number;
  parent?: number;
}

/** `struct bpf_tc_opts` minus `sz`; `prog_id` is filled in by `bpf_tc_attach`/`bpf_tc_query`. */
export interface TcOpts {
  prog_fd?: number;
  flags?: number;
  prog_id?: number;
  handle?: number;
  priority?: number;
}

/** Bound functions of libbpf's object, attach and ring-buffer API (C names, C conventions). */
export interface LibbpfObjects {
  /** Returns NULL and sets errno on failure (read it with `koffi.errno()` right after). */
  bpf_object__open_file(path: string, opts: null): LibbpfPointer;
  bpf_object__load(obj: LibbpfPointer): number;
  bpf_object__close(obj: LibbpfPointer): void;
  bpf_object__next_map(obj: LibbpfPointer, prev: LibbpfPointer | null): LibbpfPointer;
  bpf_object__next_program(obj: LibbpfPointer, prev: LibbpfPointer | null): LibbpfPointer;
  bpf_map__name(map: LibbpfPointer): string;
  bpf_map__type(map: LibbpfPointer): number;
  bpf_map__key_size(map: LibbpfPointer): number;
  bpf_map__value_size(map: LibbpfPointer): number;
  bpf_map__max_entries(map: LibbpfPointer): number;
  bpf_map__set_max_entries(map: LibbpfPointer, maxEntries: number): number;
  bpf_map__set_pin_path(map: LibbpfPointer, path: string): number;
  bpf_map__reuse_fd(map: LibbpfPointer, fd: number): number;
  bpf_map__fd(map: LibbpfPointer): number;
  bpf_program__name(prog: LibbpfPointer): string;
  bpf_program__fd(prog: LibbpfPointer): number;
  bpf_tc_hook_create(hook: TcHook & { sz: number }): number;
  bpf_tc_hook_destroy(hook: TcHook & { sz: number }): number;
  bpf_tc_attach(hook: TcHook & { sz: number }, opts: TcOpts & { sz: number }): number;
  bpf_tc_detach(hook: TcHook & { sz: number }, opts: TcOpts & { sz: number }): number;
  bpf_tc_query(hook: TcHook & { sz: number }, opts: TcOpts & { sz: number }): number;
  bpf_xdp_attach(ifindex: number, progFd: number, flags: number, opts: null): number;
  bpf_xdp_detach(ifindex: number, flags: number, opts: null): number;
  bpf_xdp_query_id(ifindex: number, flags: number, progId: [number]): number;
  /** `sampleCb` is a koffi-registered callback pointer; NULL + errno on failure. */
  ring_buffer__new(mapFd: number, sampleCb: unknown, ctx: null, opts: null): LibbpfPointer;
  ring_buffer__consume(rb: LibbpfPointer): number;
  ring_buffer__free(rb: LibbpfPointer): void;
  libbpf_num_possible_cpus(): number;
  /** The koffi prototype of `ring_buffer_sample_fn` (for `koffi.register`). */
  readonly ringBufferSampleFn: ReturnType<typeof koffi.proto>;
  readonly tcHookSize: number;
  readonly tcOptsSize: number;
  readonly layouts: Readonly<Record<'bpf_tc_hook' | 'bpf_tc_opts', StructLayout>>;
}

let boundObjects: LibbpfObjects | undefined;

/** Returns the binding of libbpf's object/attach/ring-buffer API, loading it on first use. */
export function libbpfObjects(): LibbpfObjects {
  if (boundObjects) return boundObjects;
  libbpf(); // same library, same load error message
  const lib = koffi.load(LIBBPF_SONAME);
  const u32 = 'uint32_t';
  // Anonymous types for the same reason as above (one koffi registry per process).
  const tcHook = koffi.struct({ sz: 'size_t', ifindex: 'int', attach_point: 'int', parent: u32 });
  const tcOpts = koffi.struct({ sz: 'size_t', prog_fd: 'int', flags: u32, prog_id: u32, handle: u32, priority: u32 });
  // koffi only accepts named prototypes as callback types, and names are process-wide:
  // make it unique so a second evaluation of this module (jest) does not collide.
  const sampleFn = koffi.proto(`fos1_ring_buffer_sample_fn_${process.hrtime.bigint()}`, 'int', ['void *', 'void *', 'size_t']);
  const fn = (name: string, result: string, args: KoffiTypeSpec[]) => lib.func(name, result, args);
  const ptr = 'void *';
  boundObjects = {
    bpf_object__open_file: fn('bpf_object__open_file', ptr, ['const char *', ptr]),
    bpf_object__load: fn('bpf_object__load', 'int', [ptr]),
    bpf_object__close: fn('bpf_object__close', 'void', [ptr]),
    bpf_object__next_map: fn('bpf_object__next_map', ptr, [ptr, ptr]),
    bpf_object__next_program: fn('bpf_object__next_program', ptr, [ptr, ptr]),
    bpf_map__name: fn('bpf_map__name', 'const char *', [ptr]),
    bpf_map__type: fn('bpf_map__type', 'int', [ptr]),
    bpf_map__key_size: fn('bpf_map__key_size', u32, [ptr]),
    bpf_map__value_size: fn('bpf_map__value_size', u32, [ptr]),
    bpf_map__max_entries: fn('bpf_map__max_entries', u32, [ptr]),
    bpf_map__set_max_entries: fn('bpf_map__set_max_entries', 'int', [ptr, u32]),
    bpf_map__set_pin_path: fn('bpf_map__set_pin_path', 'int', [ptr, 'const char *']),
    bpf_map__reuse_fd: fn('bpf_map__reuse_fd', 'int', [ptr, 'int']),
    bpf_map__fd: fn('bpf_map__fd', 'int', [ptr]),
    bpf_program__name: fn('bpf_program__name', 'const char *', [ptr]),
    bpf_program__fd: fn('bpf_program__fd', 'int', [ptr]),
    bpf_tc_hook_create: fn('bpf_tc_hook_create', 'int', [koffi.pointer(tcHook)]),
    bpf_tc_hook_destroy: fn('bpf_tc_hook_destroy', 'int', [koffi.pointer(tcHook)]),
    bpf_tc_attach: fn('bpf_tc_attach', 'int', [koffi.pointer(tcHook), koffi.inout(koffi.pointer(tcOpts))]),
    bpf_tc_detach: fn('bpf_tc_detach', 'int', [koffi.pointer(tcHook), koffi.pointer(tcOpts)]),
    bpf_tc_query: fn('bpf_tc_query', 'int', [koffi.pointer(tcHook), koffi.inout(koffi.pointer(tcOpts))]),
    bpf_xdp_attach: fn('bpf_xdp_attach', 'int', ['int', 'int', u32, ptr]),
    bpf_xdp_detach: fn('bpf_xdp_detach', 'int', ['int', u32, ptr]),
    bpf_xdp_query_id: fn('bpf_xdp_query_id', 'int', ['int', 'int', koffi.out(koffi.pointer(u32))]),
    ring_buffer__new: fn('ring_buffer__new', ptr, ['int', koffi.pointer(sampleFn), ptr, ptr]),
    ring_buffer__consume: fn('ring_buffer__consume', 'int', [ptr]),
    ring_buffer__free: fn('ring_buffer__free', 'void', [ptr]),
    libbpf_num_possible_cpus: fn('libbpf_num_possible_cpus', 'int', []),
    ringBufferSampleFn: sampleFn,
    tcHookSize: tcHook.size,
    tcOptsSize: tcOpts.size,
    layouts: { bpf_tc_hook: layoutOf(tcHook), bpf_tc_opts: layoutOf(tcOpts) },
  };
  return boundObjects;
}
