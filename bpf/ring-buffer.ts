/**
 * Consuming a BPF ring buffer map (libbpf's `ring_buffer__*`). Samples are copied out
 * of the shared ring into Buffers and handed to a callback on the JS thread.
 *
 * Consumption is by polling with `ring_buffer__consume` (non-blocking): libbpf's
 * epoll-based `ring_buffer__poll` would block the event loop, and Node cannot watch
 * the epoll fd without a native addon. Drop events are diagnostics, so a poll interval
 * of tens of milliseconds is plenty; the ring absorbs bursts in between.
 */
import koffi from 'koffi';
import { bpfError, libbpfObjects, type LibbpfPointer } from './libbpf';
import type { BpfMap } from './map';

/** Reads samples from one ring buffer map. Call {@link close} when done. */
export class RingBufferConsumer {
  #rb: LibbpfPointer | null;
  #callback: bigint | null;
  #timer: NodeJS.Timeout | undefined;
  #error: unknown;

  /** `onSample` gets a private copy of each sample; exceptions stop consumption and are rethrown by {@link consume}. */
  constructor(map: BpfMap, onSample: (sample: Buffer) => void) {
    const lib = libbpfObjects();
    this.#callback = koffi.register(
      (_ctx: unknown, data: unknown, size: number | bigint): number => {
        try {
          onSample(Buffer.from(koffi.view(data, Number(size))));
          return 0;
        } catch (err) {
          this.#error ??= err;
          return -1; // makes ring_buffer__consume stop and return an error
        }
      },
      koffi.pointer(lib.ringBufferSampleFn),
    );
    this.#rb = lib.ring_buffer__new(map.fd, this.#callback, null, null);
    if (!this.#rb) {
      const errno = koffi.errno();
      koffi.unregister(this.#callback);
      this.#callback = null;
      throw bpfError('ring_buffer__new', -errno, map.describe());
    }
  }

  /** Delivers every sample that is ready now; returns how many. */
  consume(): number {
    if (!this.#rb) throw new Error('ring buffer consumer is closed');
    const n = libbpfObjects().ring_buffer__consume(this.#rb);
    if (this.#error !== undefined) {
      const err = this.#error;
      this.#error = undefined;
      throw err;
    }
    if (n < 0) throw bpfError('ring_buffer__consume', n, 'ring buffer');
    return n;
  }

  /** Polls every `intervalMs` until {@link stop}; `onError` gets callback or kernel errors. */
  start(intervalMs: number, onError: (err: unknown) => void): void {
    this.stop();
    this.#timer = setInterval(() => {
      try {
        this.consume();
      } catch (err) {
        onError(err);
      }
    }, intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Stops polling and frees the ring mapping and the callback. Idempotent. */
  close(): void {
    this.stop();
    if (this.#rb) libbpfObjects().ring_buffer__free(this.#rb);
    this.#rb = null;
    if (this.#callback) koffi.unregister(this.#callback);
    this.#callback = null;
  }
}
