/**
 * The first answer of `prepareSubsystems` for a node workflow run, kept on the node, so a
 * repeat of the same prepare returns the snapshot taken before anything was applied.
 *
 * Why: a blocklist patch runs its steps as local activities, whose results reach the
 * history only when the workflow task completes. A worker that dies after the apply but
 * before that completion replays the run from a history without them, so the prepare runs
 * again — against maps the apply already changed — and a later revert would "restore" the
 * new state. A regular activity can repeat the same way (an attempt that finished but
 * whose completion was lost). Keyed by the run (workflow id + run id: the same on every
 * replay and retry of that run, new for every change), a repeat finds the first snapshot
 * and returns it as is. Files are written atomically (temp, fsync, rename), so a crash
 * mid-write leaves no half snapshot, and pruned after `retainMs` (a week: past any hold).
 */
import { createHash } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';

/** Prepared results by run key, as JSON files in `dir`. */
export class PreparedStore {
  constructor(
    readonly dir: string,
    readonly retainMs = 8 * 24 * 3600_000,
  ) {}

  private path(key: string): string {
    return join(this.dir, `${createHash('sha256').update(key).digest('hex')}.json`);
  }

  /** The stored result for `key`, or undefined when there is none. */
  get<T>(key: string): T | undefined {
    try {
      return JSON.parse(readFileSync(this.path(key), 'utf8')) as T;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  /** Stores `value` for `key` durably (written, synced, renamed into place). */
  put(key: string, value: unknown): void {
    mkdirSync(this.dir, { recursive: true });
    this.prune(Date.now() - this.retainMs);
    const path = this.path(key);
    const tmp = `${path}.tmp-${process.pid}`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, JSON.stringify(value));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  }

  /** Deletes entries written before `cutoffMs`; returns how many. */
  prune(cutoffMs: number): number {
    let removed = 0;
    for (const name of readdirSync(this.dir)) {
      if (!/^[0-9a-f]{64}\.json(\.tmp-\d+)?$/.test(name)) continue;
      const path = join(this.dir, name);
      try {
        if (statSync(path).mtimeMs < cutoffMs) {
          unlinkSync(path);
          removed++;
        }
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
    return removed;
  }
}
