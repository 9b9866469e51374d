/**
 * Attaching fos1's programs to interfaces: TC (clsact qdisc, cls_bpf in
 * direct-action mode) and XDP. Every operation is idempotent: attaching again
 * replaces fos1's own filter/program in place, an existing clsact qdisc (Cilium's,
 * say) is shared rather than an error, and detaching what is not there succeeds.
 *
 * fos1 recognises its TC filter by (handle, priority), so it never touches filters
 * other tools installed on the same hook. Interfaces are looked up by name inside
 * the given network namespace (see netns.ts).
 */
import { BpfError, ERRNO, bpfError, libbpfObjects, type TcHook, type TcOpts } from './libbpf';
import { ifindexOf, inNetns } from './netns';

/** `enum bpf_tc_attach_point`. */
const BPF_TC_INGRESS = 1;
const BPF_TC_EGRESS = 2;
/** `BPF_TC_F_REPLACE`: replace a filter with the same handle and priority. */
const BPF_TC_F_REPLACE = 1;

/** `XDP_FLAGS_*` from `<linux/if_link.h>`. */
const XDP_FLAGS_SKB_MODE = 1 << 1;
const XDP_FLAGS_DRV_MODE = 1 << 2;

/** fos1's TC filter handle (any stable value; "f05" reads as fos). */
export const FOS1_TC_HANDLE = 0xf051;
/** Default filter priority: 1 runs before filters with larger numbers (e.g. Cilium's). */
export const FOS1_TC_PRIORITY = 1;

/** Which side of the interface. */
export type TcDirection = 'ingress' | 'egress';

/** Where to attach. */
export interface AttachTarget {
  /** Interface name, e.g. `eth0`. */
  interface: string;
  /** Network namespace name (under /run/netns); the current one when omitted. */
  netns?: string;
}

/** Options of the TC calls. */
export interface TcAttachOptions extends AttachTarget {
  direction: TcDirection;
  priority?: number;
}

function tcHook(ifindex: number, direction: TcDirection): TcHook & { sz: number } {
  return {
    sz: libbpfObjects().tcHookSize,
    ifindex,
    attach_point: direction === 'ingress' ? BPF_TC_INGRESS : BPF_TC_EGRESS,
    parent: 0,
  };
}

function tcOpts(fields: TcOpts): TcOpts & { sz: number } {
  return { sz: libbpfObjects().tcOptsSize, prog_fd: 0, flags: 0, prog_id: 0, handle: 0, priority: 0, ...fields };
}

function describe(t: AttachTarget, what: string): string {
  return `${what} on ${t.interface}${t.netns ? ` (netns ${t.netns})` : ''}`;
}

/**
 * Attaches `progFd` as fos1's cls_bpf filter on the interface's clsact hook, creating
 * the qdisc when missing. Returns the kernel's program id.
 */
export function attachTc(progFd: number, opts: TcAttachOptions): number {
  const lib = libbpfObjects();
  return inNetns(opts.netns, () => {
    const hook = tcHook(ifindexOf(opts.interface), opts.direction);
    const created = lib.bpf_tc_hook_create(hook);
    if (created < 0 && created !== -ERRNO.EEXIST) throw bpfError('bpf_tc_hook_create', created, describe(opts, 'clsact qdisc'));
    const o = tcOpts({ prog_fd: progFd, flags: BPF_TC_F_REPLACE, handle: FOS1_TC_HANDLE, priority: opts.priority ?? FOS1_TC_PRIORITY });
    const ret = lib.bpf_tc_attach(hook, o);
    if (ret < 0) throw bpfError('bpf_tc_attach', ret, describe(opts, `tc ${opts.direction} filter`));
    return o.prog_id ?? 0;
  });
}

/** Program id of fos1's TC filter on the hook, or null when none is attached. */
export function queryTc(opts: TcAttachOptions): number | null {
  const lib = libbpfObjects();
  return inNetns(opts.netns, () => {
    const o = tcOpts({ handle: FOS1_TC_HANDLE, priority: opts.priority ?? FOS1_TC_PRIORITY });
    const ret = lib.bpf_tc_query(tcHook(ifindexOf(opts.interface), opts.direction), o);
    // No qdisc (EINVAL) or no such filter (ENOENT): nothing of fos1's is there.
    if (ret === -ERRNO.ENOENT || ret === -ERRNO.EINVAL) return null;
    if (ret < 0) throw bpfError('bpf_tc_query', ret, describe(opts, `tc ${opts.direction} filter`));
    return o.prog_id ?? null;
  });
}

/** Removes fos1's TC filter from the hook. The clsact qdisc stays (others may use it). */
export function detachTc(opts: TcAttachOptions): void {
  const lib = libbpfObjects();
  inNetns(opts.netns, () => {
    const ret = lib.bpf_tc_detach(
      tcHook(ifindexOf(opts.interface), opts.direction),
      tcOpts({ handle: FOS1_TC_HANDLE, priority: opts.priority ?? FOS1_TC_PRIORITY }),
    );
    if (ret < 0 && ret !== -ERRNO.ENOENT && ret !== -ERRNO.EINVAL) {
      throw bpfError('bpf_tc_detach', ret, describe(opts, `tc ${opts.direction} filter`));
    }
  });
}

/** XDP attach mode: native (driver) only, generic (skb) only, or native with a generic fallback. */
export type XdpMode = 'native' | 'generic' | 'auto';

/** Attaches (or replaces) the interface's XDP program. Returns the mode that worked. */
export function attachXdp(progFd: number, opts: AttachTarget & { mode?: XdpMode }): 'native' | 'generic' {
  const lib = libbpfObjects();
  const mode = opts.mode ?? 'auto';
  return inNetns(opts.netns, () => {
    const ifindex = ifindexOf(opts.interface);
    if (mode !== 'generic') {
      const ret = lib.bpf_xdp_attach(ifindex, progFd, XDP_FLAGS_DRV_MODE, null);
      if (ret === 0) return 'native';
      const unsupported = [ERRNO.EOPNOTSUPP, ERRNO.EINVAL, ERRNO.ENOTSUPP].includes(-ret as 22);
      if (mode === 'native' || !unsupported) throw bpfError('bpf_xdp_attach', ret, describe(opts, 'native XDP'));
    }
    const ret = lib.bpf_xdp_attach(ifindex, progFd, XDP_FLAGS_SKB_MODE, null);
    if (ret < 0) throw bpfError('bpf_xdp_attach', ret, describe(opts, 'generic XDP'));
    return 'generic';
  });
}

/** Program id attached at XDP (either mode), or null. */
export function queryXdp(opts: AttachTarget): number | null {
  const lib = libbpfObjects();
  return inNetns(opts.netns, () => {
    const id: [number] = [0];
    const ret = lib.bpf_xdp_query_id(ifindexOf(opts.interface), 0, id);
    if (ret < 0) throw bpfError('bpf_xdp_query_id', ret, describe(opts, 'XDP'));
    return id[0] === 0 ? null : id[0];
  });
}

/** Removes the interface's XDP program in whichever mode it is attached. */
export function detachXdp(opts: AttachTarget): void {
  const lib = libbpfObjects();
  inNetns(opts.netns, () => {
    const ifindex = ifindexOf(opts.interface);
    for (const flags of [XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE]) {
      const ret = lib.bpf_xdp_detach(ifindex, flags, null);
      // Detaching a mode with nothing attached is a no-op or EINVAL/EOPNOTSUPP depending on the driver.
      if (ret < 0 && ![ERRNO.EINVAL, ERRNO.EOPNOTSUPP, ERRNO.ENOENT].includes(-ret as 22)) {
        throw new BpfError('bpf_xdp_detach', -ret, describe(opts, 'XDP'));
      }
    }
  });
}
