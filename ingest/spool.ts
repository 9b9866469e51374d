/**
 * The decision spool: enforcing decisions the bridge could not hand to Temporal (the
 * server unreachable, or restarting), kept on disk in arrival order until they are
 * delivered, so an outage of Temporal loses no alert.
 *
 * On disk, in the ingest state dir:
 * - `decisions.spool`: one JSON record per line (`{"v":1,"spooledAt":…,"decision":…}`),
 *   appended and fdatasync'd before an append resolves — a decision counts as kept (and
 *   the EVE tail may save its read position past its line) only once it is on the disk.
 *   Appends that arrive together share one write and one sync (group commit).
 * - `decisions.spool.head`: the offset of the first record not yet delivered, saved
 *   (temporary file + rename) at most every `headSaveMs` and on close. A crash between a
 *   delivery and the next save re-delivers a few records after the restart: harmless,
 *   because enforcement is idempotent per target (one workflow per target, reached by
 *   signal-with-start; a repeated verdict at most extends the block in force).
 * When every record is delivered the file is emptied (head saved as 0 first, so a crash
 * in between replays, never skips).
 *
 * Bounded: past `maxBytes` the spool reports itself full. It does not refuse an append
 * (a decision already accepted must not be dropped); the callers refuse new input instead
 * (back-pressure: the EVE tail stops reading, the HTTP endpoint answers 503), so the file
 * exceeds the cap by at most the decisions in flight at that moment.
 *
 * One process per state dir: two ingest workers must not share one.
 */
import { mkdir, open, readFile, rename, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { ENFORCEMENT_ACTIONS, type Decision } from '../model/enforcement-decision';

/** Default cap of the spool file: 64 MiB, about 100,000 decisions. */
export const DEFAULT_SPOOL_MAX_BYTES = 64 * 1024 * 1024;

/** Options of {@link DecisionSpool.open}. */
export interface SpoolOptions {
  /** Folder of the spool file and its head (created if missing). */
  dir: string;
  /** Size past which the spool is full (default {@link DEFAULT_SPOOL_MAX_BYTES}). */
  maxBytes?: number;
  logger: Logger;
  /** How often, at most, the head offset is saved while draining (default 200 ms). */
  headSaveMs?: number;
}

/** Counters of a spool (ready to export as metrics). */
export interface SpoolStats {
  /** Records kept and not yet delivered. */
  entries: number;
  /** Bytes of those records. */
  bytes: number;
  maxBytes: number;
  full: boolean;
  /** Records appended since start. */
  appended: number;
  /** Records delivered (acknowledged) since start. */
  delivered: number;
  /** Times the spool became full. */
  fullEvents: number;
  /** Records that could not be read back (skipped, logged). */
  corrupt: number;
  /** Records found on disk at start (left by a previous run). */
  recovered: number;
}

/** One record read back: the decision and where the next record starts. */
export interface SpooledDecision {
  decision: Decision;
  spooledAt: string;
  /** Offset just past this record: the head after it is delivered. */
  end: number;
}

interface PendingAppend {
  bytes: Buffer;
  resolve: () => void;
  reject: (err: unknown) => void;
}

const SPOOL_FILE = 'decisions.spool';
const READ_CHUNK = 64 * 1024;

/** An on-disk FIFO of decisions (see the module comment). */
export class DecisionSpool {
  readonly stats: SpoolStats;
  private readonly headFile: string;
  /** Offset just past the last record on disk. */
  private size: number;
  private head: number;
  /** Records read ahead from `head` (parsed), not yet acknowledged. */
  private readAhead: SpooledDecision[] = [];
  private readAheadEnd: number;
  private queue: PendingAppend[] = [];
  private queuedBytes = 0;
  /** File operations, one at a time (appends, reads, the emptying). */
  private io: Promise<void> = Promise.resolve();
  private flushScheduled = false;
  private headSavedAt = 0;
  private headSaveTimer: NodeJS.Timeout | null = null;
  private roomWaiters: (() => void)[] = [];
  private closed = false;

  private constructor(
    private readonly handle: FileHandle,
    private readonly options: Required<Pick<SpoolOptions, 'maxBytes' | 'headSaveMs'>> & SpoolOptions,
    state: { size: number; head: number; entries: number },
  ) {
    this.headFile = join(options.dir, `${SPOOL_FILE}.head`);
    this.size = state.size;
    this.head = state.head;
    this.readAheadEnd = state.head;
    this.stats = {
      entries: state.entries,
      bytes: state.size - state.head,
      maxBytes: options.maxBytes,
      full: false,
      appended: 0,
      delivered: 0,
      fullEvents: 0,
      corrupt: 0,
      recovered: state.entries,
    };
    this.updateFull();
  }

  /**
   * Opens (or creates) the spool in `dir`. A record cut short by a crash mid-append (no
   * newline) was never reported as kept, so it is cut off; a head past the end (a crash
   * while emptying) starts over at 0.
   */
  static async open(options: SpoolOptions): Promise<DecisionSpool> {
    const maxBytes = options.maxBytes ?? DEFAULT_SPOOL_MAX_BYTES;
    if (!Number.isInteger(maxBytes) || maxBytes < 1024) throw new Error(`spool maxBytes must be a whole number of at least 1024, not ${maxBytes}`);
    await mkdir(options.dir, { recursive: true });
    const path = join(options.dir, SPOOL_FILE);
    const handle = await open(path, 'a+');
    try {
      const content = await handle.readFile();
      const complete = content.lastIndexOf(0x0a) + 1;
      if (complete < content.length) await handle.truncate(complete);
      let head = await readHead(join(options.dir, `${SPOOL_FILE}.head`));
      if (head > complete || (head > 0 && content[head - 1] !== 0x0a)) head = 0;
      let entries = 0;
      for (let i = head; i < complete; i++) if (content[i] === 0x0a) entries++;
      const spool = new DecisionSpool(handle, { headSaveMs: 200, ...options, maxBytes }, { size: complete, head, entries });
      if (entries > 0) options.logger.warn({ spool: spool.stats }, `decision spool ${path} holds ${entries} decision(s) from before; delivering them first`);
      return spool;
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  /** Whether the spool is past its cap (callers refuse new input then). */
  get full(): boolean {
    return this.stats.full;
  }

  /** Records kept and not yet delivered (including appends not yet on disk). */
  get pending(): number {
    return this.stats.entries;
  }

  /** Resolves when the spool has room again (at once when it has). */
  whenRoom(): Promise<void> {
    if (!this.stats.full || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.roomWaiters.push(resolve));
  }

  /** Appends a decision; resolves once it is on the disk (fdatasync'd). */
  append(decision: Decision): Promise<void> {
    if (this.closed) return Promise.reject(new Error('the decision spool is closed'));
    const bytes = Buffer.from(`${JSON.stringify({ v: 1, spooledAt: new Date().toISOString(), decision })}\n`);
    // Counted at once, so a drain that looks now knows a record is coming.
    this.stats.entries++;
    this.stats.bytes += bytes.length;
    this.queuedBytes += bytes.length;
    this.updateFull();
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ bytes, resolve, reject });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        this.io = this.io.then(() => this.flush());
      }
    });
  }

  /** The oldest record not yet delivered (waiting for appends in progress), or null when there is none. */
  async next(): Promise<SpooledDecision | null> {
    for (;;) {
      if (this.readAhead.length > 0) return this.readAhead[0]!;
      await this.io;
      if (this.readAheadEnd >= this.size) {
        if (this.queue.length === 0) return null;
        continue;
      }
      let found = false;
      this.io = this.io.then(async () => {
        found = await this.readMore();
      });
      await this.io;
      if (!found && this.readAheadEnd >= this.size && this.queue.length === 0) return null;
    }
  }

  /** Marks the record returned by {@link next} as delivered. */
  async ack(record: SpooledDecision): Promise<void> {
    const first = this.readAhead[0];
    if (first !== record) throw new Error('spool records are acknowledged in order');
    this.readAhead.shift();
    this.head = record.end;
    this.stats.entries--;
    this.stats.delivered++;
    this.stats.bytes = this.size + this.queuedBytes - this.head;
    this.updateFull();
    if (this.stats.entries === 0 && this.queue.length === 0) {
      this.io = this.io.then(() => this.empty());
      await this.io;
    } else {
      this.scheduleHeadSave();
    }
  }

  /** Drops a record that cannot be delivered (logged by the caller) as if delivered. */
  async skip(record: SpooledDecision): Promise<void> {
    await this.ack(record);
    this.stats.delivered--;
  }

  /** Finishes appends in progress, saves the head and closes the file. Records left stay for the next start. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.io;
    if (this.headSaveTimer) clearTimeout(this.headSaveTimer);
    await this.saveHead().catch((err: unknown) => this.options.logger.error({ err }, 'saving the decision spool head failed'));
    await this.handle.close();
    for (const w of this.roomWaiters.splice(0)) w();
  }

  private async flush(): Promise<void> {
    this.flushScheduled = false;
    const batch = this.queue.splice(0);
    if (batch.length === 0) return;
    const bytes = Buffer.concat(batch.map((p) => p.bytes));
    try {
      // 'a+' appends wherever the position is; the size is tracked to know where records end.
      await this.handle.write(bytes, 0, bytes.length);
      await this.handle.datasync();
      this.size += bytes.length;
      this.queuedBytes -= bytes.length;
      this.stats.appended += batch.length;
      for (const p of batch) p.resolve();
    } catch (err) {
      // Not kept: uncount them, so the caller's retry counts them again.
      this.queuedBytes -= bytes.length;
      this.stats.entries -= batch.length;
      this.stats.bytes -= bytes.length;
      // A short write may have left part of a record: cut the file back to the last whole one.
      await this.handle.truncate(this.size).catch(() => undefined);
      this.updateFull();
      for (const p of batch) p.reject(err);
    }
  }

  /** Reads records after the read-ahead; false when the next one is not complete yet. */
  private async readMore(): Promise<boolean> {
    const length = Math.min(READ_CHUNK, this.size - this.readAheadEnd);
    let buffer = Buffer.alloc(length);
    let { bytesRead } = await this.handle.read(buffer, 0, length, this.readAheadEnd);
    let text = buffer.subarray(0, bytesRead);
    let last = text.lastIndexOf(0x0a);
    // A record longer than one chunk (not produced by fos1, but read what is there).
    while (last < 0 && this.readAheadEnd + text.length < this.size) {
      buffer = Buffer.alloc(Math.min(text.length * 2, this.size - this.readAheadEnd));
      ({ bytesRead } = await this.handle.read(buffer, 0, buffer.length, this.readAheadEnd));
      text = buffer.subarray(0, bytesRead);
      last = text.lastIndexOf(0x0a);
    }
    if (last < 0) return false;
    let start = 0;
    while (start <= last) {
      const nl = text.indexOf(0x0a, start);
      const end = this.readAheadEnd + nl + 1;
      const record = parseRecord(text.subarray(start, nl).toString('utf8'));
      if (record) this.readAhead.push({ ...record, end });
      else {
        // Unreadable (a disk fault, or edited by hand): skip it, say so, keep going.
        this.stats.corrupt++;
        this.stats.entries--;
        this.options.logger.error({ offset: this.readAheadEnd + start }, 'skipped an unreadable record in the decision spool');
        if (this.readAhead.length === 0) this.head = end;
      }
      start = nl + 1;
    }
    this.readAheadEnd += last + 1;
    this.stats.bytes = this.size + this.queuedBytes - this.head;
    return this.readAhead.length > 0;
  }

  private async empty(): Promise<void> {
    if (this.stats.entries !== 0 || this.queue.length !== 0) return;
    // Head 0 first: a crash before the truncation replays the records, it cannot skip new ones.
    this.head = 0;
    await this.saveHead();
    await this.handle.truncate(0);
    this.size = 0;
    this.readAheadEnd = 0;
    this.stats.bytes = this.queuedBytes;
  }

  private scheduleHeadSave(): void {
    if (this.headSaveTimer || this.closed) return;
    const wait = Math.max(0, this.headSavedAt + this.options.headSaveMs - Date.now());
    this.headSaveTimer = setTimeout(() => {
      this.headSaveTimer = null;
      this.io = this.io.then(() => this.saveHead()).catch((err: unknown) => this.options.logger.error({ err }, 'saving the decision spool head failed'));
    }, wait);
  }

  private async saveHead(): Promise<void> {
    const tmp = `${this.headFile}.tmp-${process.pid}`;
    await writeFile(tmp, `${JSON.stringify({ head: this.head, savedAt: new Date().toISOString() })}\n`);
    await rename(tmp, this.headFile);
    this.headSavedAt = Date.now();
  }

  private updateFull(): void {
    const full = this.stats.bytes >= this.options.maxBytes;
    if (full === this.stats.full) return;
    this.stats.full = full;
    if (full) {
      this.stats.fullEvents++;
      this.options.logger.error(
        { spool: { entries: this.stats.entries, bytes: this.stats.bytes, maxBytes: this.options.maxBytes } },
        `decision spool is full (${this.stats.bytes} bytes, cap FOS1_INGEST_SPOOL_MAX_BYTES=${this.options.maxBytes}): refusing new alerts until Temporal takes the kept ones (the EVE tail waits, HTTP answers 503)`,
      );
    } else {
      this.options.logger.warn({ spool: { entries: this.stats.entries, bytes: this.stats.bytes } }, 'decision spool has room again: accepting alerts');
      for (const w of this.roomWaiters.splice(0)) w();
    }
  }
}

async function readHead(file: string): Promise<number> {
  try {
    const parsed = JSON.parse(await readFile(file, 'utf8')) as { head?: unknown };
    return typeof parsed.head === 'number' && Number.isInteger(parsed.head) && parsed.head >= 0 ? parsed.head : 0;
  } catch {
    // None yet, or damaged: from the start (replays are harmless, skips are not).
    return 0;
  }
}

const ACTIONS = new Set<string>(ENFORCEMENT_ACTIONS);

function parseRecord(line: string): Omit<SpooledDecision, 'end'> | null {
  try {
    const record = JSON.parse(line) as { v?: unknown; spooledAt?: unknown; decision?: Partial<Decision> };
    const d = record.decision;
    if (record.v !== 1 || !d || typeof d !== 'object' || typeof d.target !== 'string' || typeof d.action !== 'string' || !ACTIONS.has(d.action)) return null;
    return { decision: d as Decision, spooledAt: typeof record.spooledAt === 'string' ? record.spooledAt : '' };
  } catch {
    return null;
  }
}
