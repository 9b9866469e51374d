/**
 * A second thread for the batch syscalls of large blocklist loads.
 *
 * On this kind of machine a 1 M-element `bpf_map_update_batch` into a hash map costs
 * ~0.5 s and a full `bpf_map_lookup_batch` dump ~0.35 s, nearly all of it in the kernel.
 * Hash map buckets lock separately, so two threads inserting disjoint halves (or dumping
 * disjoint bucket ranges) of the same map run side by side. Map fds are process-wide,
 * so the helper uses the caller's fd as is.
 *
 * The public API of the callers is synchronous (activities call it from one stack), so
 * the helper is started, the caller does its own half, and then blocks on
 * `Atomics.wait` until the helper has finished: nothing runs on the event loop and no
 * call returns (or throws) while the helper can still be writing.
 *
 * The helper's code is plain CommonJS passed with `eval: true` rather than a .ts file:
 * it then runs the same under tsx, jest's in-process transform and plain node, none of
 * which would agree on how to load a TypeScript worker file. It binds only the two
 * libbpf functions it calls, with the same signatures as `libbpf.ts`.
 */
import { MessageChannel, receiveMessageOnPort, Worker } from 'node:worker_threads';
import { LIBBPF_SONAME } from './libbpf';

/** Give up waiting for the helper after this long (a kernel call does not take minutes). */
const HELPER_TIMEOUT_MS = 120_000;

const HELPER_SOURCE = `
'use strict';
const { workerData } = require('node:worker_threads');
const state = new Int32Array(workerData.state);
const port = workerData.port;
try {
  const koffi = require(workerData.koffiPath);
  const lib = koffi.load(workerData.soname);
  const opts = koffi.struct({ sz: 'size_t', elem_flags: 'uint64_t', flags: 'uint64_t' });
  const inoutU32 = koffi.inout(koffi.pointer('uint32_t'));
  const job = workerData.job;
  if (job.op === 'update') {
    const update = lib.func('bpf_map_update_batch', 'int', ['int', 'const void *', 'const void *', inoutU32, koffi.pointer(opts)]);
    const keys = Buffer.from(job.keys);
    const values = Buffer.from(job.values);
    let written = 0;
    let ret = 0;
    for (let at = 0; at < job.count; at += job.chunk) {
      const n = Math.min(job.chunk, job.count - at);
      const done = [n];
      ret = update(job.fd, keys.subarray(at * job.keySize, (at + n) * job.keySize), values.subarray(at * job.valueSize, (at + n) * job.valueSize), done, { sz: opts.size, elem_flags: job.flags, flags: 0 });
      if (ret !== 0) {
        written += done[0] < n ? done[0] : 0;
        break;
      }
      written += n;
    }
    state[1] = ret;
    state[2] = written;
  } else {
    const lookup = lib.func('bpf_map_lookup_batch', 'int', ['int', 'void *', 'void *', 'void *', 'void *', inoutU32, koffi.pointer(opts)]);
    const keyChunks = [];
    const valueChunks = [];
    let chunk = job.chunk;
    let inBatch = Buffer.alloc(8);
    inBatch.writeUInt32LE(job.fromBucket, 0);
    let ret = 0;
    for (;;) {
      const outBatch = Buffer.alloc(8);
      const keys = Buffer.alloc(job.keySize * chunk);
      const values = Buffer.alloc(job.valueSize * chunk);
      const count = [chunk];
      ret = lookup(job.fd, inBatch, outBatch, keys, values, count, { sz: opts.size, elem_flags: 0, flags: 0 });
      if (ret === -28 && count[0] === 0) { chunk *= 2; continue; }
      if (ret < 0 && ret !== -2) break;
      keyChunks.push(keys.subarray(0, count[0] * job.keySize));
      valueChunks.push(values.subarray(0, count[0] * job.valueSize));
      if (ret === -2) { ret = 0; break; }
      inBatch = outBatch;
    }
    if (ret === 0) {
      const keys = Buffer.concat(keyChunks);
      const values = Buffer.concat(valueChunks);
      const k = keys.buffer.slice(keys.byteOffset, keys.byteOffset + keys.length);
      const v = values.buffer.slice(values.byteOffset, values.byteOffset + values.length);
      port.postMessage({ keys: k, values: v }, [k, v]);
    }
    state[1] = ret;
  }
} catch (err) {
  state[1] = -100000;
  port.postMessage({ error: String(err && err.stack || err) });
}
Atomics.store(state, 0, 1);
Atomics.notify(state, 0);
`;

/** A batch job running on the helper thread; {@link wait} blocks until it is done. */
export interface HelperJob<T> {
  /** Blocks until the helper finishes; returns its result or throws what it reported. */
  wait(): T;
}

/** Result of an update half: the libbpf return value and how many elements were written. */
export interface HelperUpdateResult {
  ret: number;
  written: number;
}

/** Result of a dump range: keys and values back to back, or the libbpf error. */
export interface HelperDumpResult {
  ret: number;
  keys: Buffer;
  values: Buffer;
  count: number;
}

interface UpdateJob {
  op: 'update';
  fd: number;
  keySize: number;
  valueSize: number;
  keys: SharedArrayBuffer;
  values: SharedArrayBuffer;
  count: number;
  flags: number;
  chunk: number;
}

interface DumpJob {
  op: 'dump';
  fd: number;
  keySize: number;
  valueSize: number;
  fromBucket: number;
  chunk: number;
}

function start(job: UpdateJob | DumpJob, describe: string): { wait(): { ret: number; written: number; message?: unknown } } {
  const state = new Int32Array(new SharedArrayBuffer(12));
  const { port1, port2 } = new MessageChannel();
  const worker = new Worker(HELPER_SOURCE, {
    eval: true,
    workerData: { state: state.buffer, port: port2, job, koffiPath: require.resolve('koffi'), soname: LIBBPF_SONAME },
    transferList: [port2],
  });
  // The helper never keeps the process alive; it exits after its one job.
  worker.unref();
  return {
    wait() {
      try {
        if (Atomics.wait(state, 0, 0, HELPER_TIMEOUT_MS) === 'timed-out') {
          throw new Error(`${describe}: helper thread did not finish within ${HELPER_TIMEOUT_MS / 1000} s`);
        }
        const message = receiveMessageOnPort(port1)?.message as { error?: string } | undefined;
        if (message?.error) throw new Error(`${describe}: helper thread failed: ${message.error}`);
        return { ret: state[1] as number, written: state[2] as number, message };
      } finally {
        port1.close();
        void worker.terminate();
      }
    },
  };
}

/**
 * Starts `bpf_map_update_batch` calls for `count` records of `keys`/`values` on the
 * helper thread (copied into shared memory first: a few ms for half a million records).
 */
export function startUpdateBatch(
  fd: number,
  sizes: { keySize: number; valueSize: number },
  keys: Buffer,
  values: Buffer,
  count: number,
  flags: number,
  chunk: number,
  describe: string,
): HelperJob<HelperUpdateResult> {
  const shared = (b: Buffer) => {
    const sab = new SharedArrayBuffer(b.length);
    new Uint8Array(sab).set(b);
    return sab;
  };
  const job = start({ op: 'update', fd, ...sizes, keys: shared(keys), values: shared(values), count, flags, chunk }, describe);
  return { wait: () => job.wait() };
}

/**
 * Starts a `bpf_map_lookup_batch` dump of a hash map from bucket `fromBucket` to the end
 * on the helper thread (the batch cursor of hash maps is a u32 bucket index).
 */
export function startDumpFromBucket(
  fd: number,
  sizes: { keySize: number; valueSize: number },
  fromBucket: number,
  chunk: number,
  describe: string,
): HelperJob<HelperDumpResult> {
  const job = start({ op: 'dump', fd, ...sizes, fromBucket, chunk }, describe);
  return {
    wait() {
      const r = job.wait();
      const m = r.message as { keys: ArrayBuffer; values: ArrayBuffer } | undefined;
      const keys = m ? Buffer.from(m.keys) : Buffer.alloc(0);
      const values = m ? Buffer.from(m.values) : Buffer.alloc(0);
      return { ret: r.ret, keys, values, count: keys.length / sizes.keySize };
    },
  };
}
