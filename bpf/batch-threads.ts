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
 * the helper is handed its tasks, the caller does its own share (or claims tasks from
 * the same shared counter), and then blocks on `Atomics.wait` until the helper has
 * finished: nothing runs on the event loop and no call returns (or throws) while the
 * helper can still be writing. One helper thread per process is kept (`runOnHelper`).
 *
 * The helper's code is plain CommonJS passed with `eval: true` rather than a .ts file:
 * it then runs the same under tsx, jest's in-process transform and plain node, none of
 * which would agree on how to load a TypeScript worker file. It binds only the two
 * libbpf functions it calls, with the same signatures as `libbpf.ts`.
 */
import { MessageChannel, type MessagePort, receiveMessageOnPort, Worker } from 'node:worker_threads';
import { LIBBPF_SONAME } from './libbpf';

/** Give up waiting for the helper after this long (a kernel call does not take minutes). */
const HELPER_TIMEOUT_MS = 120_000;

const HELPER_SOURCE = `
'use strict';
const { workerData, receiveMessageOnPort } = require('node:worker_threads');
// state[0]: request sequence number written by the caller (-1: quit); state[1]: the
// sequence number of the last finished request, written here.
const state = new Int32Array(workerData.state);
const port = workerData.port;
let bound;
function bind() {
  const koffi = require(workerData.koffiPath);
  const lib = koffi.load(workerData.soname);
  const opts = koffi.struct({ sz: 'size_t', elem_flags: 'uint64_t', flags: 'uint64_t' });
  const inoutU32 = koffi.inout(koffi.pointer('uint32_t'));
  return {
    optsSize: opts.size,
    update: lib.func('bpf_map_update_batch', 'int', ['int', 'const void *', 'const void *', inoutU32, koffi.pointer(opts)]),
    lookup: lib.func('bpf_map_lookup_batch', 'int', ['int', 'void *', 'void *', 'void *', 'void *', inoutU32, koffi.pointer(opts)]),
  };
}
function runTasks(tasks, claim) {
  const { update, lookup, optsSize } = (bound = bound || bind());
  const results = [];
  const transfer = [];
  let failed = false;
  // With a claim counter (shared with the caller), tasks are taken one at a time by
  // whichever thread is free; without one, this thread runs them all in order.
  const counter = claim ? new Int32Array(claim) : null;
  for (let next = 0; ; next++) {
    const index = counter ? Atomics.add(counter, 0, 1) : next;
    if (index >= tasks.length) break;
    const job = tasks[index];
    // After a failed write (here, or on the caller's side: counter[1]) the rest is
    // skipped: the caller restores a dump anyway.
    if (failed || (counter && Atomics.load(counter, 1) !== 0)) { results.push({ index, ret: 1, written: 0 }); continue; } // SKIPPED
    if (job.op === 'update') {
      const keys = Buffer.from(job.keys);
      const values = Buffer.from(job.values);
      let written = 0;
      let ret = 0;
      for (let at = 0; at < job.count; at += job.chunk) {
        const n = Math.min(job.chunk, job.count - at);
        const done = [n];
        ret = update(job.fd, keys.subarray(at * job.keySize, (at + n) * job.keySize), values.subarray(at * job.valueSize, (at + n) * job.valueSize), done, { sz: optsSize, elem_flags: job.flags, flags: 0 });
        if (ret !== 0) { written += done[0] < n ? done[0] : 0; break; }
        written += n;
      }
      if (ret !== 0) {
        failed = true;
        if (counter) Atomics.store(counter, 1, 1);
      }
      results.push({ index, ret, written });
    } else {
      const keyChunks = [];
      const valueChunks = [];
      let chunk = job.chunk;
      let inBatch = null;
      if (job.fromBucket !== null) { inBatch = Buffer.alloc(Math.max(job.keySize, 8)); inBatch.writeUInt32LE(job.fromBucket, 0); }
      let ret = 0;
      for (;;) {
        const outBatch = Buffer.alloc(Math.max(job.keySize, 8));
        const keys = Buffer.alloc(job.keySize * chunk);
        const values = Buffer.alloc(job.valueSize * chunk);
        const count = [chunk];
        ret = lookup(job.fd, inBatch, outBatch, keys, values, count, { sz: optsSize, elem_flags: 0, flags: 0 });
        if (ret === -28 && count[0] === 0) { chunk *= 2; continue; } // ENOSPC: bucket bigger than chunk
        if (ret < 0 && ret !== -2) break;
        keyChunks.push(keys.subarray(0, count[0] * job.keySize));
        valueChunks.push(values.subarray(0, count[0] * job.valueSize));
        if (ret === -2) { ret = 0; break; } // ENOENT: end of the map
        if (job.untilBucket !== null && outBatch.readUInt32LE(0) >= job.untilBucket) break;
        inBatch = outBatch;
      }
      const keys = Buffer.concat(keyChunks);
      const values = Buffer.concat(valueChunks);
      const k = keys.buffer.slice(keys.byteOffset, keys.byteOffset + keys.length);
      const v = values.buffer.slice(values.byteOffset, values.byteOffset + values.length);
      transfer.push(k, v);
      results.push({ index, ret, written: 0, keys: k, values: v });
    }
  }
  return { results, transfer };
}
function serve(tasks, claim, seq) {
  try {
    const { results, transfer } = runTasks(tasks, claim);
    port.postMessage({ results }, transfer);
  } catch (err) {
    port.postMessage({ error: String((err && err.stack) || err) });
  }
  Atomics.store(state, 1, seq);
  Atomics.notify(state, 1);
}
if (workerData.tasks) {
  serve(workerData.tasks, workerData.claim, 1);
} else {
  try { bound = bind(); } catch { /* reported with the first request */ }
  for (let seen = 0; ; ) {
    Atomics.wait(state, 0, seen);
    seen = Atomics.load(state, 0);
    if (seen < 0) break;
    const request = receiveMessageOnPort(port);
    serve(request ? request.message.tasks : [], request ? request.message.claim : undefined, seen);
  }
}
`;

/** One batch job for the helper thread. Update jobs run in order; after a failed one the rest are skipped. */
export type HelperTask =
  | {
      op: 'update';
      fd: number;
      keySize: number;
      valueSize: number;
      keys: Buffer;
      values: Buffer;
      count: number;
      flags: number;
      chunk: number;
    }
  | {
      op: 'dump';
      fd: number;
      keySize: number;
      valueSize: number;
      /** Hash maps: the bucket to start at; null: from the start (any map type). */
      fromBucket: number | null;
      /** Hash maps: stop once the cursor reaches this bucket (the last call may run past it); null: to the end. */
      untilBucket: number | null;
      chunk: number;
    };

/** `ret` of a task skipped because an earlier update failed. */
export const SKIPPED = 1;

/**
 * What a task did: `ret` is libbpf's return value (0, a negative errno, or
 * {@link SKIPPED}); dumps also give keys and values back to back.
 */
export interface HelperOutcome {
  ret: number;
  written: number;
  keys: Buffer;
  values: Buffer;
  count: number;
}

/** A running helper; {@link wait} blocks until it is done. */
export interface Helper {
  /**
   * Blocks until the helper finishes; one outcome per task (undefined for tasks the
   * caller claimed itself), or throws if the helper itself broke.
   */
  wait(): Array<HelperOutcome | undefined>;
}

const shared = (b: Buffer): SharedArrayBuffer => {
  const sab = new SharedArrayBuffer(b.length);
  new Uint8Array(sab).set(b);
  return sab;
};

/** Tasks as they cross to the helper: update buffers copied into shared memory (a few ms per half million records). */
function wire(tasks: HelperTask[]): unknown[] {
  return tasks.map((t) => (t.op === 'update' ? { ...t, keys: shared(t.keys), values: shared(t.values) } : t));
}

/** Blocks until `state[1]` (the helper's finished-request number) reaches `seq`, then reads its answer. */
function awaitAnswer(state: Int32Array, port: MessagePort, seq: number, keySizes: number[], describe: string): Array<HelperOutcome | undefined> {
  const deadline = Date.now() + HELPER_TIMEOUT_MS;
  for (let done = Atomics.load(state, 1); done !== seq; done = Atomics.load(state, 1)) {
    if (Date.now() > deadline || Atomics.wait(state, 1, done, deadline - Date.now()) === 'timed-out') {
      throw new Error(`${describe}: helper thread did not finish within ${HELPER_TIMEOUT_MS / 1000} s`);
    }
  }
  const message = receiveMessageOnPort(port)?.message as
    | { error?: string; results?: Array<{ index: number; ret: number; written: number; keys?: ArrayBuffer; values?: ArrayBuffer }> }
    | undefined;
  if (!message?.results) throw new Error(`${describe}: helper thread failed: ${message?.error ?? 'no answer'}`);
  const outcomes: Array<HelperOutcome | undefined> = keySizes.map(() => undefined);
  for (const r of message.results) {
    const keys = r.keys ? Buffer.from(r.keys) : Buffer.alloc(0);
    outcomes[r.index] = { ret: r.ret, written: r.written, keys, values: r.values ? Buffer.from(r.values) : Buffer.alloc(0), count: keys.length / (keySizes[r.index] ?? 1) };
  }
  return outcomes;
}

/**
 * With `claim` (an Int32Array of two over shared memory, both 0) the helper takes tasks
 * by `Atomics.add(claim, 0, 1)`, and the caller is expected to do the same: tasks go to
 * whichever thread is free, which balances work whose cost is not known up front.
 * `claim[1]` set to 1 (by either side, after a failed write) makes both skip the rest.
 *
 * Starts a one-off helper thread on `tasks` and returns at once; the caller does its
 * own share and then calls `wait()`, which it must do before returning or throwing.
 * Starting a thread (isolate, koffi, libbpf) takes ~40 ms here; callers that load
 * large lists repeatedly keep a {@link BatchHelperThread} instead.
 */
export function startHelper(tasks: HelperTask[], describe: string, claim?: Int32Array): Helper {
  const state = new Int32Array(new SharedArrayBuffer(8));
  const { port1, port2 } = new MessageChannel();
  const worker = new Worker(HELPER_SOURCE, {
    eval: true,
    workerData: { state: state.buffer, port: port2, tasks: wire(tasks), claim: claim?.buffer, koffiPath: require.resolve('koffi'), soname: LIBBPF_SONAME },
    transferList: [port2],
  });
  // The helper never keeps the process alive; it exits after its tasks.
  worker.unref();
  return {
    wait() {
      try {
        return awaitAnswer(state, port1, 1, tasks.map((t) => t.keySize), describe);
      } finally {
        port1.close();
        void worker.terminate();
      }
    },
  };
}

/**
 * A helper thread kept for many requests (one at a time): started once, it loads koffi
 * and libbpf right away and then sleeps in `Atomics.wait` until {@link run} hands it
 * tasks, so a request does not pay the thread start-up. Never keeps the process alive.
 */
export class BatchHelperThread {
  readonly #state = new Int32Array(new SharedArrayBuffer(8));
  readonly #port: MessagePort;
  readonly #worker: Worker;
  #seq = 0;
  #busy = false;

  constructor() {
    const { port1, port2 } = new MessageChannel();
    this.#port = port1;
    this.#worker = new Worker(HELPER_SOURCE, {
      eval: true,
      workerData: { state: this.#state.buffer, port: port2, koffiPath: require.resolve('koffi'), soname: LIBBPF_SONAME },
      transferList: [port2],
    });
    this.#worker.unref();
  }

  /** True between {@link run} and the `wait()` of its result. */
  get busy(): boolean {
    return this.#busy;
  }

  /** Hands `tasks` to the thread; `wait()` on the result must be called before the next run. */
  run(tasks: HelperTask[], describe: string, claim?: Int32Array): Helper {
    if (this.#seq < 0) throw new Error(`${describe}: helper thread is closed`);
    if (this.#busy) throw new Error(`${describe}: helper thread is still busy with an earlier request`);
    const seq = ++this.#seq;
    this.#busy = true;
    this.#port.postMessage({ tasks: wire(tasks), claim: claim?.buffer });
    Atomics.store(this.#state, 0, seq);
    Atomics.notify(this.#state, 0);
    return {
      wait: () => {
        try {
          return awaitAnswer(this.#state, this.#port, seq, tasks.map((t) => t.keySize), describe);
        } finally {
          this.#busy = false;
        }
      },
    };
  }

  /** Stops the thread. Idempotent. */
  close(): void {
    if (this.#seq < 0) return;
    this.#seq = -1;
    Atomics.store(this.#state, 0, -1);
    Atomics.notify(this.#state, 0);
    this.#port.close();
    void this.#worker.terminate();
  }
}

let processHelper: BatchHelperThread | undefined;

/**
 * Runs `tasks` on the process's helper thread (started by the first call and kept:
 * node workers open the blocklist maps per activity, and a thread per open would cost
 * its start-up every time), or on a one-off thread if that one is busy.
 */
export function runOnHelper(tasks: HelperTask[], describe: string, claim?: Int32Array): Helper {
  processHelper ??= new BatchHelperThread();
  if (processHelper.busy) return startHelper(tasks, describe, claim);
  const thread = processHelper;
  const pending = thread.run(tasks, describe, claim);
  return {
    wait() {
      try {
        return pending.wait();
      } catch (err) {
        // A helper that broke or hung is not reused: the next request starts a fresh one.
        thread.close();
        if (processHelper === thread) processHelper = undefined;
        throw err;
      }
    },
  };
}

/**
 * Starts the process's helper thread now if it is not running, so the first large
 * batch does not wait ~40 ms for it (isolate, koffi, libbpf). Returns at once.
 */
export function warmHelper(): void {
  processHelper ??= new BatchHelperThread();
}

/** A fresh claim counter for {@link runOnHelper} (task index, abort flag). */
export function newClaim(): Int32Array {
  return new Int32Array(new SharedArrayBuffer(8));
}
