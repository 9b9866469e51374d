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
 *
 * With `stateFile`, the read position survives restarts: after the lines of each read
 * have been handled (and `beforeSave` has settled, e.g. the decisions they produced have
 * been sent), the file's identity (device + inode), the offset of the end of the last
 * complete line and the bytes just before it are written to the state file atomically
 * (temporary file + rename). A restart resumes there, so old alerts are not read again
 * and the ones written while the tail was down are not skipped:
 * - same file, still holding the saved bytes before the offset: resume at the offset;
 * - same file, shorter or with other bytes there: truncated while stopped, read from 0;
 * - another file at the path: rotated while stopped. The old file is finished from the
 *   saved offset if it is still in the same folder under another name (`eve.json.1`),
 *   then the new file is read from its start.
 * Without a (readable) state file, `from` decides where to start.
 */
import { watch, type FSWatcher } from 'node:fs';
import { open, readdir, readFile, rename, stat, writeFile, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { z } from 'zod';
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
  /** Where the read position is kept across restarts (see the module comment); absent = not kept. */
  stateFile?: string;
  /**
   * Awaited before a position is saved: the lines before it count as handled only once
   * this settles (the ingest worker waits for the decisions they produced to be sent).
   */
  beforeSave?: () => Promise<void>;
}

/** The saved read position of a tail. */
export const tailPositionSchema = z.object({
  path: z.string(),
  dev: z.number().int().nonnegative(),
  ino: z.number().int().nonnegative(),
  /** Offset just past the last complete line handled. */
  position: z.number().int().nonnegative(),
  /** Hex of the (up to 64) bytes before `position`: a truncated and refilled file differs there. */
  before: z.string().regex(/^([0-9a-f]{2}){0,64}$/),
  savedAt: z.string(),
});
export type TailPosition = z.infer<typeof tailPositionSchema>;

/** Reads a tail's state file; null when there is none. Throws, naming the file, when it is not a valid one. */
export async function readTailPosition(stateFile: string): Promise<TailPosition | null> {
  let text: string;
  try {
    text = await readFile(stateFile, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`EVE tail state file ${stateFile} is not JSON: ${err instanceof Error ? err.message : String(err)}`);
  }
  const parsed = tailPositionSchema.safeParse(json);
  if (!parsed.success) throw new Error(`EVE tail state file ${stateFile} is invalid: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
  return parsed.data;
}

/** Counters of a tail. */
export interface EveTailStats {
  lines: number;
  bytes: number;
  rotations: number;
  truncations: number;
  /** Whether this run started from a saved position. */
  resumed: boolean;
  /** Positions written to the state file. */
  saves: number;
}

interface OpenFile {
  handle: FileHandle;
  dev: number;
  ino: number;
  position: number;
  /** Offset just past the last newline read: where a restart may resume. */
  committed: number;
  /** The last bytes read (up to 64), to notice a truncation that was refilled past the old size. */
  tail: Buffer;
}

/** A running tail of one path. */
export class EveFileTail {
  readonly stats: EveTailStats = { lines: 0, bytes: 0, rotations: 0, truncations: 0, resumed: false, saves: 0 };
  private file: OpenFile | null = null;
  private readonly splitter = new LineSplitter();
  private timer: NodeJS.Timeout | null = null;
  private watcher: FSWatcher | null = null;
  private running = false;
  private busy: Promise<void> | null = null;
  private again = false;
  private firstOpen = true;
  /** The saved position to resume from on the first open (from the state file). */
  private saved: TailPosition | null = null;
  private saveChain: Promise<void> = Promise.resolve();
  private savePending: { dev: number; ino: number; position: number; before: Buffer } | null = null;

  constructor(
    readonly path: string,
    private readonly options: EveTailOptions,
  ) {}

  /** Starts following; resolves after the first read (so `from: 'end'` has its position). */
  async start(): Promise<void> {
    this.running = true;
    if (this.options.stateFile) {
      try {
        this.saved = await readTailPosition(this.options.stateFile);
      } catch (err) {
        // A damaged state file must not stop ingestion: say so, and start as configured.
        this.options.onError?.(err);
      }
    }
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
    await this.saveChain;
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
      this.file = { handle, dev: s.dev, ino: s.ino, position: 0, committed: 0, tail: Buffer.alloc(0) };
      if (this.firstOpen) await this.placeFirst(this.file, s.size);
      this.firstOpen = false;
    }
    const size = (await this.file.handle.stat()).size;
    if (size < this.file.position || !(await this.bytesBefore(this.file, this.file.position)).equals(this.file.tail)) {
      // Truncated in place (copytruncate): start over; a partial line from before is gone.
      this.file.position = 0;
      this.file.committed = 0;
      this.file.tail = Buffer.alloc(0);
      this.splitter.reset();
      this.stats.truncations++;
    }
    await this.readToEnd(this.file);
  }

  /**
   * Where the first file opened starts: at the saved position when the state file names
   * this file and it still holds the saved bytes there; at 0 when it was truncated or
   * replaced while the tail was down (finishing the replaced file first when it is still
   * in the folder); otherwise as `from` says.
   */
  private async placeFirst(file: OpenFile, size: number): Promise<void> {
    const saved = this.saved;
    this.saved = null;
    if (saved && saved.path === this.path) {
      this.stats.resumed = true;
      if (saved.dev === file.dev && saved.ino === file.ino) {
        if (size >= saved.position && (await this.bytesBefore(file, saved.position)).toString('hex') === saved.before) {
          file.position = file.committed = saved.position;
          file.tail = Buffer.from(saved.before, 'hex');
        } else {
          this.stats.truncations++;
        }
        return;
      }
      await this.finishRotatedAway(saved);
      this.stats.rotations++;
      return;
    }
    if ((this.options.from ?? 'end') === 'end') {
      file.position = file.committed = size;
      if (size > 0) file.tail = await this.bytesBefore(file, size);
    }
  }

  /** Reads the rest of the file the state file names, if it is still in the folder under another name. */
  private async finishRotatedAway(saved: TailPosition): Promise<void> {
    const folder = dirname(this.path);
    for (const name of await readdir(folder)) {
      if (!name.startsWith(basename(this.path))) continue;
      const candidate = join(folder, name);
      const s = await stat(candidate).catch(() => null);
      if (!s || s.dev !== saved.dev || s.ino !== saved.ino) continue;
      const handle = await open(candidate, 'r');
      try {
        const old: OpenFile = { handle, dev: s.dev, ino: s.ino, position: saved.position, committed: saved.position, tail: Buffer.alloc(0) };
        if (s.size < saved.position || (await this.bytesBefore(old, saved.position)).toString('hex') !== saved.before) old.position = old.committed = 0;
        await this.readToEnd(old, false);
        for (const line of this.splitter.end()) await this.emit(line);
      } finally {
        await handle.close();
      }
      return;
    }
  }

  private async readToEnd(file: OpenFile, save = true): Promise<void> {
    const buffer = Buffer.allocUnsafe(1 << 20);
    for (;;) {
      const { bytesRead } = await file.handle.read(buffer, 0, buffer.length, file.position);
      if (bytesRead === 0) return;
      const chunkStart = file.position;
      const tailBefore = file.tail;
      file.position += bytesRead;
      this.stats.bytes += bytesRead;
      file.tail = Buffer.from(bytesRead >= 64 ? buffer.subarray(bytesRead - 64, bytesRead) : Buffer.concat([file.tail, buffer.subarray(0, bytesRead)]).subarray(-64));
      // Where a restart may resume: just past the chunk's last newline, with the bytes before it.
      const end = buffer.subarray(0, bytesRead).lastIndexOf(0x0a) + 1;
      const before = end > 0 ? Buffer.from(end >= 64 ? buffer.subarray(end - 64, end) : Buffer.concat([tailBefore, buffer.subarray(0, end)]).subarray(-64)) : null;
      for (const line of this.splitter.push(buffer.subarray(0, bytesRead))) await this.emit(line);
      if (before) {
        file.committed = chunkStart + end;
        if (save) this.save({ dev: file.dev, ino: file.ino, position: file.committed, before });
      }
    }
  }

  /**
   * Saves `file`'s committed position once `beforeSave` settles, without holding up the
   * reading; saves queue one behind the other and a newer position replaces a queued one.
   */
  private save(position: { dev: number; ino: number; position: number; before: Buffer }): void {
    if (!this.options.stateFile) return;
    const queued = this.savePending !== null;
    this.savePending = position;
    if (queued) return;
    this.saveChain = this.saveChain
      .then(async () => {
        await this.options.beforeSave?.();
        const pending = this.savePending;
        this.savePending = null;
        if (!pending) return;
        const state: TailPosition = { path: this.path, dev: pending.dev, ino: pending.ino, position: pending.position, before: pending.before.toString('hex'), savedAt: new Date().toISOString() };
        const stateFile = this.options.stateFile!;
        const tmp = `${stateFile}.tmp-${process.pid}`;
        await writeFile(tmp, `${JSON.stringify(state)}\n`);
        await rename(tmp, stateFile);
        this.stats.saves++;
      })
      .catch((err: unknown) => this.options.onError?.(err));
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
