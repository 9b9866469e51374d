/**
 * Loads fos1's compiled BPF objects with libbpf and pins their maps, so that every
 * program of a node (TC ingress/egress, XDP) and the control plane share one set of
 * maps through `<pinDir>/<map name>`.
 *
 * Maps already pinned (by an earlier load, or by `BlocklistMaps.open`) are reused as
 * they are, including their `max_entries`; a pin whose type or key/value size differs
 * from what the program expects is an error, never silently replaced (running programs
 * may hold it). Missing maps are created with the configured sizes and pinned by libbpf
 * during load.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import koffi from 'koffi';
import { BpfError, BpfNotFoundError, bpfError, libbpfObjects, type LibbpfPointer } from './libbpf';
import { BpfMap } from './map';

/** A map as declared in an object file, before or after load. */
export interface ObjectMapInfo {
  name: string;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
}

/** Options of {@link BpfObject.load}. */
export interface LoadOptions {
  /** bpffs folder for the pins (created if missing). */
  pinDir: string;
  /** `max_entries` for maps that are created by this load, by map name. */
  maxEntries?: Readonly<Record<string, number>>;
}

/** A loaded BPF object file: its programs (by name) and pinned maps. */
export class BpfObject {
  #obj: LibbpfPointer | null;
  readonly #programs = new Map<string, number>();
  readonly #maps = new Map<string, ObjectMapInfo>();

  private constructor(
    obj: LibbpfPointer,
    readonly path: string,
    readonly pinDir: string,
  ) {
    this.#obj = obj;
  }

  /** Opens `path`, reuses or creates+pins its maps in `opts.pinDir`, and loads it into the kernel. */
  static load(path: string, opts: LoadOptions): BpfObject {
    const lib = libbpfObjects();
    const obj = lib.bpf_object__open_file(path, null);
    if (!obj) throw bpfError('bpf_object__open_file', -koffi.errno(), `object ${path}`);
    const self = new BpfObject(obj, path, opts.pinDir);
    try {
      mkdirSync(opts.pinDir, { recursive: true });
      for (let m = lib.bpf_object__next_map(obj, null); m; m = lib.bpf_object__next_map(obj, m)) {
        self.prepareMap(m, opts);
      }
      const ret = lib.bpf_object__load(obj);
      if (ret < 0) {
        // libbpf has printed the verifier log to stderr; the error says where to look.
        throw new BpfError('bpf_object__load', -ret, `object ${path}`, `loading ${path} failed: ${bpfError('bpf_object__load', ret, path).message} (the verifier log is on stderr)`);
      }
      for (let p = lib.bpf_object__next_program(obj, null); p; p = lib.bpf_object__next_program(obj, p)) {
        self.#programs.set(lib.bpf_program__name(p), lib.bpf_program__fd(p));
      }
      return self;
    } catch (err) {
      self.close();
      throw err;
    }
  }

  /** Program names in the object. */
  get programNames(): string[] {
    return [...this.#programs.keys()];
  }

  /** Maps of the object with their effective sizes. */
  get maps(): ObjectMapInfo[] {
    return [...this.#maps.values()];
  }

  /** File descriptor of a loaded program (valid until {@link close}). */
  programFd(name: string): number {
    const fd = this.#programs.get(name);
    if (fd === undefined || fd < 0) {
      throw new BpfNotFoundError('bpf_program__fd', 2, `program "${name}"`, `${this.path} has no loaded program "${name}" (has: ${this.programNames.join(', ')})`);
    }
    return fd;
  }

  /** Pin path of one of the object's maps. */
  pinPath(mapName: string): string {
    return join(this.pinDir, mapName);
  }

  /** Opens one of the object's maps through its pin (the caller closes it). */
  openMap(mapName: string): BpfMap {
    if (!this.#maps.has(mapName)) throw new RangeError(`${this.path} has no map "${mapName}"`);
    return BpfMap.openPinned(this.pinPath(mapName));
  }

  /**
   * Releases the object's file descriptors. Attached programs stay attached (TC and
   * XDP hold their own reference) and pinned maps stay pinned. Idempotent.
   */
  close(): void {
    if (!this.#obj) return;
    libbpfObjects().bpf_object__close(this.#obj);
    this.#obj = null;
  }

  private prepareMap(m: LibbpfPointer, opts: LoadOptions): void {
    const lib = libbpfObjects();
    const name = lib.bpf_map__name(m);
    // Internal maps (.bss/.data/.rodata) are per object, never shared or pinned.
    if (name.includes('.')) return;
    const want = {
      type: lib.bpf_map__type(m),
      keySize: lib.bpf_map__key_size(m),
      valueSize: lib.bpf_map__value_size(m),
    };
    const pin = join(opts.pinDir, name);
    if (existsSync(pin)) {
      // openPinned checks type and sizes (BpfMapMismatchError names the difference).
      const pinned = BpfMap.openPinned(pin, want);
      try {
        const ret = lib.bpf_map__reuse_fd(m, pinned.fd); // libbpf dups the fd
        if (ret < 0) throw bpfError('bpf_map__reuse_fd', ret, `eBPF map "${name}" (pinned at ${pin})`);
        this.#maps.set(name, { name, ...want, maxEntries: pinned.info.maxEntries });
      } finally {
        pinned.close();
      }
      return;
    }
    const maxEntries = opts.maxEntries?.[name];
    if (maxEntries !== undefined) {
      const ret = lib.bpf_map__set_max_entries(m, maxEntries);
      if (ret < 0) throw bpfError('bpf_map__set_max_entries', ret, `eBPF map "${name}"`);
    }
    const ret = lib.bpf_map__set_pin_path(m, pin);
    if (ret < 0) throw bpfError('bpf_map__set_pin_path', ret, `eBPF map "${name}"`);
    this.#maps.set(name, { name, ...want, maxEntries: lib.bpf_map__max_entries(m) });
  }
}
