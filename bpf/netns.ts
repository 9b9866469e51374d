/**
 * Running a synchronous step inside another network namespace.
 *
 * TC and XDP attachment talk netlink, and netlink sockets belong to the network
 * namespace of the thread that opens them. `setns(2)` switches only the calling
 * thread, and every libbpf call of fos1 runs synchronously on the JS thread, so the
 * switch is scoped to one call stack and undone in `finally` — the rest of the
 * process (libuv threads, other sockets) never sees it. Pinned maps and programs
 * are unaffected: bpffs is not tied to network namespaces.
 */
import { closeSync, openSync } from 'node:fs';
import koffi from 'koffi';
import { INTERFACE_NAME } from '../model/node-state';

/** `CLONE_NEWNET` from `<sched.h>`. */
const CLONE_NEWNET = 0x40000000;

interface Libc {
  setns(fd: number, nstype: number): number;
  if_nametoindex(name: string): number;
  if_indextoname(index: number, name: Buffer): unknown;
}

let libc: Libc | undefined;
function lib(): Libc {
  if (!libc) {
    const l = koffi.load('libc.so.6');
    libc = { setns: l.func('setns', 'int', ['int', 'int']), if_nametoindex: l.func('if_nametoindex', 'uint32_t', ['const char *']),
      // Fills a buffer of IF_NAMESIZE (16) bytes; returns NULL when no interface has the index.
      if_indextoname: l.func('if_indextoname', 'void *', ['uint32_t', 'uint8_t *']),
    };
  }
  return libc;
}

/** Name of a namespace created with `ip netns add`: same rules as iproute2 enforces. */
const NETNS_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

/**
 * Runs `fn` with the calling thread in network namespace `netns` (a name under
 * /run/netns), or in the current one when `netns` is undefined. `fn` must be
 * synchronous: an `await` inside would let other callbacks run in the wrong namespace.
 */
export function inNetns<T>(netns: string | undefined, fn: () => T): T {
  if (netns === undefined) return fn();
  if (!NETNS_NAME.test(netns) || netns === '.' || netns === '..') {
    throw new RangeError(`netns "${netns}" is not a valid namespace name (1–64 of [A-Za-z0-9_.-])`);
  }
  const own = openSync('/proc/thread-self/ns/net', 'r');
  let target: number | undefined;
  try {
    target = openSync(`/run/netns/${netns}`, 'r');
    if (lib().setns(target, CLONE_NEWNET) !== 0) {
      throw new Error(`setns into network namespace ${netns} failed (errno ${koffi.errno()}): needs CAP_SYS_ADMIN`);
    }
    let result: { value: T } | { error: unknown };
    try {
      result = { value: fn() };
    } catch (error) {
      result = { error };
    }
    if (lib().setns(own, CLONE_NEWNET) !== 0) {
      // Continuing in the wrong namespace would misdirect every later netlink call.
      throw new Error(`could not return to the original network namespace (errno ${koffi.errno()})`);
    }
    if ('error' in result) throw result.error;
    return result.value;
  } finally {
    if (target !== undefined) closeSync(target);
    closeSync(own);
  }
}

/** An interface name that does not exist (in the namespace it was looked up in). */
export class InterfaceNotFoundError extends Error {
  override name = 'InterfaceNotFoundError';
}

/** ifindex of `name` in the calling thread's namespace; call inside {@link inNetns}. */
export function ifindexOf(name: string): number {
  if (!INTERFACE_NAME.test(name)) {
    throw new RangeError(`interface "${name}" is not a valid interface name (1–15 of [A-Za-z0-9_.-])`);
  }
  const index = lib().if_nametoindex(name);
  if (index === 0) throw new InterfaceNotFoundError(`interface "${name}" does not exist`);
  return index;
}

/** Name of the interface with `ifindex` in the calling thread's namespace, or undefined; call inside {@link inNetns}. */
export function interfaceNameOf(ifindex: number): string | undefined {
  if (!Number.isInteger(ifindex) || ifindex <= 0 || ifindex > 0xffffffff) throw new RangeError(`ifindex must be a positive u32, got ${ifindex}`);
  const buf = Buffer.alloc(16);
  if (!lib().if_indextoname(ifindex, buf)) return undefined;
  const end = buf.indexOf(0);
  return buf.subarray(0, end < 0 ? buf.length : end).toString('latin1');
}
