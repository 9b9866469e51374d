/**
 * The embedded default backend: an append-only NDJSON file under the state directory.
 *
 *   <dir>/chain.ndjson        one entry per line: canonical JSON of { hash, id, prevHash, record, seq }
 *   <dir>/checkpoints.ndjson  one signed checkpoint per line: { headHash, keyId, seq, signature, time }
 *   <dir>/lock                the pid of the process that has the store open
 *
 * Every append writes its whole batch with one `write` and fsyncs before it returns (a
 * new file also fsyncs the directory, so the file itself survives a crash). The id index
 * (record id → seq and content digest) is rebuilt by reading the file when it is opened.
 * One process owns the directory at a time (the lock file), and appends within it are
 * serialised by a queue, so the chain stays linear.
 *
 * A line without its newline at the end of the file is an append that crashed before its
 * fsync returned: it was never acknowledged, its activity will retry, so opening the store
 * cuts it off. Nothing else is ever rewritten.
 */
import type { KeyObject } from 'node:crypto';
import { closeSync, createReadStream, fstatSync, fsyncSync, ftruncateSync, mkdirSync, openSync, readFileSync, readSync, realpathSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { canonicalJson, GENESIS_HASH, matchesAuditQuery, validateAuditQuery, type AuditCheckpoint, type AuditEntry, type AuditQuery, type KeyedAuditRecord } from '../../model/audit-chain';
import type { AuditRecord } from '../../model/audit';
import { chainEntry, sha256Hex, verifyAuditChain, type AuditChainSource, type AuditVerifyReport, type RawCheckpoint, type RawEntry } from './chain';
import { AuditConflictError, checkpointDue, now, type AppendResult, type AuditStore, type CheckpointPolicy } from './store';

/** Options of {@link FileAuditStore.open}. */
export interface FileAuditStoreOptions {
  /** The store's folder (e.g. `<state dir>/audit`); created if missing. */
  dir: string;
  /** Who signs checkpoints; required unless `readOnly`. */
  checkpoints?: CheckpointPolicy;
  /**
   * Open for queries and verification only, beside the process that appends (the API, the
   * `audit verify` script): no lock, nothing created or cut, and every read stops at the
   * last complete line, so an append in progress is not half seen.
   */
  readOnly?: boolean;
}

/** File names inside the store's folder. */
export const AuditFiles = { chain: 'chain.ndjson', checkpoints: 'checkpoints.ndjson', lock: 'lock' } as const;

/** Append-only NDJSON audit store (see the module comment). */
export class FileAuditStore implements AuditStore {
  private readonly index = new Map<string, { seq: number; digest: string }>();
  private head: { seq: number; hash: string } | undefined;
  private lastCheckpoint: { seq: number; time: string } | undefined;
  /** Bytes of each file known durable; readers stop there, so they never see a half-written line. */
  private chainSize = 0;
  private checkpointsSize = 0;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  private constructor(
    private readonly dir: string,
    private readonly policy: CheckpointPolicy | undefined,
    private readonly chainFd: number,
    private readonly checkpointsFd: number,
  ) {}

  /** Opens (creating if needed) the store in `options.dir`, rebuilding the id index from the file. */
  static open(options: FileAuditStoreOptions): FileAuditStore {
    const { dir } = options;
    if (options.readOnly) return new FileAuditStore(dir, undefined, -1, -1);
    if (!options.checkpoints) throw new Error('audit file store: a checkpoint signer is needed to append (or open it readOnly)');
    const created = mkdirSync(dir, { recursive: true, mode: 0o700 });
    // A folder made now must itself survive a crash: fsync the folder it was made in.
    if (created !== undefined) fsyncDir(dirname(resolve(dir)));
    const key = realpathSync(dir);
    // Two writers in one process would each extend the chain from their own head: a fork.
    if (openInThisProcess.has(key)) throw new Error(`audit store ${dir}: already open for appending in this process`);
    takeLock(join(dir, AuditFiles.lock));
    openInThisProcess.add(key);
    const chain = openDurably(join(dir, AuditFiles.chain), dir);
    const checkpoints = openDurably(join(dir, AuditFiles.checkpoints), dir);
    const store = new FileAuditStore(dir, options.checkpoints, chain, checkpoints);
    store.chainSize = cutTornTail(chain);
    store.checkpointsSize = cutTornTail(checkpoints);
    store.rebuild();
    return store;
  }

  private rebuild(): void {
    const text = readFileSync(join(this.dir, AuditFiles.chain), 'utf8');
    for (const line of text.split('\n')) {
      const entry = parseEntryLine(line);
      if (!entry) continue; // unreadable lines are verify's business; the index skips them
      this.index.set(entry.id, { seq: entry.seq, digest: sha256Hex(canonicalJson(entry.record)) });
      this.head = { seq: entry.seq, hash: entry.hash };
    }
    const cps = readFileSync(join(this.dir, AuditFiles.checkpoints), 'utf8');
    for (const line of cps.split('\n')) {
      try {
        const cp = JSON.parse(line) as AuditCheckpoint;
        if (typeof cp.seq === 'number' && typeof cp.time === 'string') this.lastCheckpoint = { seq: cp.seq, time: cp.time };
      } catch {
        // verify reports it
      }
    }
  }

  private get readOnly(): boolean {
    return this.chainFd < 0;
  }

  /** Bytes of `file` a reader may read: the tracked durable size, or (read-only) up to the last newline. */
  private readable(file: string): number {
    if (!this.readOnly) return file === AuditFiles.chain ? this.chainSize : this.checkpointsSize;
    let fd: number;
    try {
      fd = openSync(join(this.dir, file), 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
      throw err;
    }
    try {
      return completeLines(fd);
    } finally {
      closeSync(fd);
    }
  }

  append(records: KeyedAuditRecord[]): Promise<AppendResult> {
    if (this.readOnly) return Promise.reject(new Error('audit file store is open read-only'));
    return this.serialised(() => {
      const result: AppendResult = { appended: [], duplicates: [], head: this.head ?? { seq: 0, hash: GENESIS_HASH } };
      const fresh: KeyedAuditRecord[] = [];
      const inBatch = new Set<string>();
      for (const r of records) {
        const known = this.index.get(r.id);
        const digest = sha256Hex(canonicalJson(r.record));
        if (known) {
          if (known.digest !== digest) throw new AuditConflictError(r.id, known.seq);
          result.duplicates.push({ id: r.id, seq: known.seq });
        } else if (!inBatch.has(r.id)) {
          inBatch.add(r.id);
          fresh.push(r);
        }
      }
      if (fresh.length > 0) {
        let prev = this.head;
        const entries = fresh.map((r) => (prev = chainEntry(prev, r.id, r.record)));
        const text = entries.map((e) => `${canonicalJson({ hash: e.hash, id: e.id, prevHash: e.prevHash, record: e.record, seq: e.seq })}\n`).join('');
        this.chainSize = appendDurably(this.chainFd, this.chainSize, text);
        for (const e of entries) {
          this.index.set(e.id, { seq: e.seq, digest: sha256Hex(canonicalJson(e.record)) });
          result.appended.push({ id: e.id, seq: e.seq });
        }
        this.head = { seq: prev!.seq, hash: prev!.hash };
      }
      result.head = this.head ?? { seq: 0, hash: GENESIS_HASH };
      if (checkpointDue(this.policy!, this.head?.seq ?? 0, this.lastCheckpoint)) result.checkpoint = this.writeCheckpoint();
      return result;
    });
  }

  checkpoint(): Promise<{ seq: number; keyId: string } | undefined> {
    if (this.readOnly) return Promise.reject(new Error('audit file store is open read-only'));
    return this.serialised(() => (this.head && (this.lastCheckpoint?.seq ?? 0) < this.head.seq ? this.writeCheckpoint() : undefined));
  }

  private writeCheckpoint(): { seq: number; keyId: string } {
    const head = this.head!;
    const cp = this.policy!.signer.sign(head.seq, head.hash, now(this.policy!).toISOString());
    this.checkpointsSize = appendDurably(this.checkpointsFd, this.checkpointsSize, `${canonicalJson(cp)}\n`);
    this.lastCheckpoint = { seq: cp.seq, time: cp.time };
    return { seq: cp.seq, keyId: cp.keyId };
  }

  async query(input: AuditQuery): Promise<AuditEntry[]> {
    const query = validateAuditQuery(input);
    const out: AuditEntry[] = [];
    for await (const { line } of this.lines(AuditFiles.chain, this.readable(AuditFiles.chain))) {
      const entry = parseEntryLine(line);
      if (!entry || !matchesAuditQuery(entry.seq, entry.record, query)) continue;
      out.push(entry);
      if (out.length >= query.limit) break;
    }
    return out;
  }

  verify(publicKeys: ReadonlyMap<string, KeyObject>): Promise<AuditVerifyReport> {
    return verifyAuditChain(this.source(), publicKeys);
  }

  /** The raw stored chain, for {@link verifyAuditChain}. */
  source(): AuditChainSource {
    const lines = this.lines.bind(this);
    const chainSize = this.readable(AuditFiles.chain);
    const checkpointsSize = this.readable(AuditFiles.checkpoints);
    return {
      async *entries(): AsyncIterable<RawEntry> {
        for await (const { line, n } of lines(AuditFiles.chain, chainSize)) yield rawEntry(line, n);
      },
      async *checkpoints(): AsyncIterable<RawCheckpoint> {
        for await (const { line, n } of lines(AuditFiles.checkpoints, checkpointsSize)) yield rawCheckpoint(line, n);
      },
    };
  }

  private async *lines(file: string, size: number): AsyncIterable<{ line: string; n: number }> {
    if (size === 0) return;
    const rl = createInterface({ input: createReadStream(join(this.dir, file), { start: 0, end: size - 1, encoding: 'utf8' }), crlfDelay: Infinity });
    let n = 0;
    for await (const line of rl) {
      n++;
      yield { line, n };
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.readOnly) return;
    await this.queue.catch(() => undefined);
    openInThisProcess.delete(realpathSync(this.dir));
    closeSync(this.chainFd);
    closeSync(this.checkpointsFd);
    try {
      unlinkSync(join(this.dir, AuditFiles.lock));
    } catch {
      // already gone
    }
  }

  private serialised<T>(fn: () => T): Promise<T> {
    if (this.closed) return Promise.reject(new Error('audit store is closed'));
    const run = this.queue.then(fn);
    this.queue = run.catch(() => undefined);
    return run;
  }
}

function parseEntryLine(line: string): AuditEntry | undefined {
  if (line === '') return undefined;
  try {
    const e = JSON.parse(line) as AuditEntry;
    if (typeof e.seq !== 'number' || typeof e.id !== 'string' || typeof e.hash !== 'string' || typeof e.prevHash !== 'string' || typeof e.record !== 'object' || e.record === null) return undefined;
    return { seq: e.seq, id: e.id, prevHash: e.prevHash, hash: e.hash, record: e.record as AuditRecord };
  } catch {
    return undefined;
  }
}

function rawEntry(line: string, n: number): RawEntry {
  const where = `${AuditFiles.chain} line ${n}`;
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    return { ok: false, where, message: 'not valid JSON', id: /"id":"([^"\\]{1,512})"/.exec(line)?.[1] };
  }
  const e = parsed as Partial<AuditEntry>;
  if (typeof e !== 'object' || e === null || !Number.isSafeInteger(e.seq) || typeof e.id !== 'string' || typeof e.hash !== 'string' || typeof e.prevHash !== 'string') {
    return { ok: false, where, message: 'not an audit entry (seq, id, prevHash, hash expected)', id: typeof e?.id === 'string' ? e.id : undefined };
  }
  return { ok: true, seq: e.seq!, id: e.id, prevHash: e.prevHash, hash: e.hash, record: e.record, where };
}

function rawCheckpoint(line: string, n: number): RawCheckpoint {
  const where = `${AuditFiles.checkpoints} line ${n}`;
  try {
    const cp = JSON.parse(line) as Partial<AuditCheckpoint>;
    if (Number.isSafeInteger(cp.seq) && typeof cp.headHash === 'string' && typeof cp.time === 'string' && typeof cp.keyId === 'string' && typeof cp.signature === 'string') {
      return { ok: true, seq: cp.seq!, headHash: cp.headHash, time: cp.time, keyId: cp.keyId, signature: cp.signature, where };
    }
    return { ok: false, where, message: 'not a checkpoint (seq, headHash, time, keyId, signature expected)' };
  } catch {
    return { ok: false, where, message: 'not valid JSON' };
  }
}

/** Folders this process has open for appending (the lock file guards against other processes). */
const openInThisProcess = new Set<string>();

/**
 * Takes the folder's lock file. A lock left by a process that is gone is taken over, and so
 * is one naming this process's own pid (a restarted container's pid 1): this process has not
 * opened the folder (checked before), so that lock is a predecessor's.
 */
function takeLock(path: string): void {
  try {
    writeFileSync(path, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const pid = Number.parseInt(readFileSync(path, 'utf8'), 10);
  if (Number.isSafeInteger(pid) && pid !== process.pid && alive(pid)) {
    throw new Error(`audit store ${path}: in use by process ${pid} (one process owns an audit file store)`);
  }
  writeFileSync(path, `${process.pid}\n`, { mode: 0o600 });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Opens `path` for appending; a file created now is made durable by fsyncing its folder. */
function openDurably(path: string, dir: string): number {
  let created = false;
  let fd: number;
  try {
    fd = openSync(path, 'ax+', 0o600);
    created = true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    fd = openSync(path, 'a+');
  }
  if (created) {
    fsyncSync(fd);
    fsyncDir(dir);
  }
  return fd;
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Cuts an unterminated last line (an append that never returned); returns the file's size. */
function cutTornTail(fd: number): number {
  const size = fstatSync(fd).size;
  const keep = completeLines(fd);
  if (keep < size) {
    ftruncateSync(fd, keep);
    fsyncSync(fd);
  }
  return keep;
}

/** Bytes of the file up to and including its last newline. */
function completeLines(fd: number): number {
  const size = fstatSync(fd).size;
  if (size === 0) return 0;
  const buf = Buffer.alloc(Math.min(size, 1 << 20));
  // Read backwards from the end until a newline is found (or the start of the file).
  let end = size;
  while (end > 0) {
    const start = Math.max(0, end - buf.length);
    const n = readAt(fd, buf, end - start, start);
    const at = buf.subarray(0, n).lastIndexOf(0x0a);
    if (at >= 0) return start + at + 1;
    end = start;
  }
  return 0;
}

function readAt(fd: number, buf: Buffer, length: number, position: number): number {
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buf, done, length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

/**
 * Writes `text` at the end of the file and fsyncs; on a failed write the file is cut back
 * to `size`, so a batch is stored entirely or not at all. Returns the new size.
 */
function appendDurably(fd: number, size: number, text: string): number {
  const buf = Buffer.from(text, 'utf8');
  try {
    let done = 0;
    while (done < buf.length) done += writeSync(fd, buf, done, buf.length - done);
    fsyncSync(fd);
  } catch (err) {
    try {
      ftruncateSync(fd, size);
      fsyncSync(fd);
    } catch {
      // the torn tail is cut when the store is next opened
    }
    throw err;
  }
  return size + buf.length;
}
