/**
 * Follows a Suricata `eve.json` the way `tail -F` does, across the two things log
 * files do under a running sensor:
 *
 * - rotation (logrotate `create`, or Suricata's own rotation): the path now names a new
 *   file (another inode). The old file is read to its end first, so the lines written
 *   between the last read and the rename are not lost, then the new one is opened.
 * - truncation (logrotate `copytruncate`): the file shrinks below what was read, or — when
 *   it was refilled past the old size between two looks — the bytes just before the read
 *   position are no longer the ones read there; reading restarts at 0, and a partial line
 *   from before is discarded.
 *
 * Change detection polls `stat` (every `pollMs`) and also wakes on `fs.watch` events of
 * the folder, so a new line is usually seen within milliseconds, and within `pollMs`
 * when the file system does not deliver events (network and overlay mounts).
 */
import { watch, type FSWatcher } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { LineSplitter } from './line-splitter';

/** Options of {@link EveFileTail}. */
export interface EveTailOptions {
  /** Read what the file holds already (`start`) or only what is appended (`end`, like tail -f). */
  from?: 'start' | 'end';
  pollMs?: number;
  /** Called for every complete line, in order; awaited before the next. */
  onLine: (line: string) => Promise<unknown> | unknown;
  /** Called on read errors other than "file not there (yet)". */
  onError?: (err: unknown) => void;
}

/** Counters of a tail. */
export interface EveTailStats {
  lines: number;
  bytes: number;
  rotations: number;
  truncations: number;
}

interface OpenFile {
  handle: FileHandle;
  ino: number;
  position: number;
  /** The last bytes read (up to 64), to notice a truncation that was refilled past the old size. */
  tail: Buffer;
}

/** A running tail of one path. */
export class EveFileTail {
  readonly stats: EveTailStats = { lines: 0, bytes: 0, rotations: 0, truncations: 0 };
  private file: OpenFile | null = null;
  private readonly splitter = new LineSplitter();
  private timer: NodeJS.Timeout | null = null;
  private watcher: FSWatcher | null = null;
  private running = false;
  private busy: Promise<void> | null = null;
  private again = false;
  private firstOpen = true;

  constructor(
    readonly path: string,
    private readonly options: EveTailOptions,
  ) {}

  /** Starts following; resolves after the first read (so `from: 'end'` has its position). */
  async start(): Promise<void> {
    this.running = true;
    try {
      this.watcher = watch(dirname(this.path), (_event, name) => {
        if (name === null || name === basename(this.path)) this.kick();
      });
      this.watcher.on('error', () => undefined);
    } catch {
      // No folder yet, or no inotify: polling alone still works.
    }
    await this.poll();
  }

  /** Stops following and closes the file. */
  async stop(): Promise<void> {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.watcher?.close();
    await this.busy;
    await this.file?.handle.close();
    this.file = null;
  }

  /** Reads whatever is new now (tests and shutdown use it to be sure nothing is left). */
  async poll(): Promise<void> {
    if (this.busy) {
      this.again = true;
      return this.busy;
    }
    this.busy = this.readNew()
      .catch((err: unknown) => this.options.onError?.(err))
      .finally(() => {
        this.busy = null;
        if (this.again && this.running) {
          this.again = false;
          void this.poll();
        } else {
          this.schedule();
        }
      });
    return this.busy;
  }

  private kick(): void {
    if (this.running) void this.poll();
  }

  private schedule(): void {
    if (!this.running) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.kick(), this.options.pollMs ?? 100);
  }

  private async readNew(): Promise<void> {
    let current: { ino: number; size: number } | null;
    try {
      const s = await stat(this.path);
      current = { ino: s.ino, size: s.size };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      current = null;
    }
    if (this.file && (current === null || current.ino !== this.file.ino)) {
      // Rotated away (renamed, or deleted): finish the old file, then switch.
      await this.readToEnd(this.file);
      for (const line of this.splitter.end()) await this.emit(line);
      await this.file.handle.close();
      this.file = null;
      this.stats.rotations++;
    }
    if (current === null) return;
    if (!this.file) {
      const handle = await open(this.path, 'r');
      const s = await handle.stat();
      const skip = this.firstOpen && (this.options.from ?? 'end') === 'end';
      this.file = { handle, ino: s.ino, position: skip ? s.size : 0, tail: Buffer.alloc(0) };
      if (skip && s.size > 0) this.file.tail = await this.bytesBefore(this.file, s.size);
      this.firstOpen = false;
    }
    const size = (await this.file.handle.stat()).size;
    if (size < this.file.position || !(await this.bytesBefore(this.file, this.file.position)).equals(this.file.tail)) {
      // Truncated in place (copytruncate): start over; a partial line from before is gone.
      this.file.position = 0;
      this.file.tail = Buffer.alloc(0);
      this.splitter.reset();
      this.stats.truncations++;
    }
    await this.readToEnd(this.file);
  }

  private async readToEnd(file: OpenFile): Promise<void> {
    const buffer = Buffer.allocUnsafe(1 << 20);
    for (;;) {
      const { bytesRead } = await file.handle.read(buffer, 0, buffer.length, file.position);
      if (bytesRead === 0) return;
      file.position += bytesRead;
      this.stats.bytes += bytesRead;
      file.tail = Buffer.from(bytesRead >= 64 ? buffer.subarray(bytesRead - 64, bytesRead) : Buffer.concat([file.tail, buffer.subarray(0, bytesRead)]).subarray(-64));
      for (const line of this.splitter.push(buffer.subarray(0, bytesRead))) await this.emit(line);
    }
  }

  /** The up to 64 bytes before `position`, as the file holds them now. */
  private async bytesBefore(file: OpenFile, position: number): Promise<Buffer> {
    const length = Math.min(64, position);
    const out = Buffer.alloc(length);
    const { bytesRead } = await file.handle.read(out, 0, length, position - length);
    return out.subarray(0, bytesRead);
  }

  private async emit(line: string): Promise<void> {
    if (line === '') return;
    this.stats.lines++;
    await this.options.onLine(line);
  }
}
