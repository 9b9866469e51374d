/**
 * List-then-watch over one Kubernetes collection, the way client-go's reflector does it:
 * list (remembering the list's resourceVersion), watch from that resourceVersion, keep the
 * newest resourceVersion seen (bookmarks included), re-watch from it when the stream ends,
 * and relist from scratch when the apiserver answers 410 Gone (the version was compacted).
 */
import type { Logger } from 'pino';
import { KubeApiError, type StoredObject, type WatchEvent } from '../k8s/client';

/** The part of the Kubernetes client a list-watch needs. */
export interface ListWatchClient {
  list(apiVersion: string, kind: string, options?: { namespace?: string; labelSelector?: string }): Promise<{ items: StoredObject[]; resourceVersion: string }>;
  watch(path: string, resourceVersion: string, onEvent: (event: WatchEvent) => void, onDone: (err: unknown) => void): Promise<() => void>;
}

/** What a list-watch reports. */
export interface ListWatchHandler {
  /** Every object of a (re)list, then every ADDED/MODIFIED object of the watch. */
  upsert(obj: StoredObject): void;
  deleted(obj: StoredObject): void;
}

/** Options of {@link ListWatch}. */
export interface ListWatchOptions {
  apiVersion: string;
  kind: string;
  /** Collection path for the watch, e.g. `/apis/security.fos1.io/v1alpha1/firewallrules`. */
  path: string;
  client: ListWatchClient;
  handler: ListWatchHandler;
  logger: Logger;
  /** Pause before re-listing after an error (default 1 s). */
  retryDelayMs?: number;
}

/** Keeps a handler in step with a collection until {@link ListWatch.stop}. */
export class ListWatch {
  /** How many times the collection was listed (1 + relists); tests and metrics read it. */
  lists = 0;
  private resourceVersion = '';
  private known = new Map<string, StoredObject>();
  private stopWatch: (() => void) | undefined;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly options: ListWatchOptions) {}

  /**
   * Lists, reports every object, and starts watching. Resolves after the first successful
   * list; while the apiserver answers 429/5xx (starting up, overloaded) it keeps trying.
   */
  async start(): Promise<void> {
    for (;;) {
      try {
        await this.relist();
        return;
      } catch (err) {
        if (this.stopped || !(err instanceof KubeApiError) || !err.retryable) throw err;
        this.options.logger.warn({ err: err.message }, 'first list failed; retrying');
        await new Promise((resolve) => setTimeout(resolve, this.options.retryDelayMs ?? 1000));
      }
    }
  }

  /** Stops watching; no handler call happens afterwards. */
  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.stopWatch?.();
  }

  private async relist(): Promise<void> {
    if (this.stopped) return;
    const { client, apiVersion, kind, handler } = this.options;
    const { items, resourceVersion } = await client.list(apiVersion, kind);
    this.lists++;
    this.resourceVersion = resourceVersion;
    const seen = new Set<string>();
    for (const obj of items) {
      // A list does not carry apiVersion/kind per item.
      const full = { ...obj, apiVersion, kind };
      seen.add(key(full));
      this.known.set(key(full), full);
      handler.upsert(full);
    }
    // Objects deleted while we were not watching: the relist is the only place we learn of them.
    for (const [k, obj] of this.known) {
      if (!seen.has(k)) {
        this.known.delete(k);
        handler.deleted(obj);
      }
    }
    await this.watch();
  }

  /** Runs `fn` after `delayMs`; if it fails, relists after the retry delay, for as long as it takes. */
  private schedule(fn: () => Promise<void>, delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      fn().catch((e: unknown) => {
        this.options.logger.warn({ err: String(e) }, 'list/watch failed; retrying');
        this.schedule(() => this.relist(), this.options.retryDelayMs ?? 1000);
      });
    }, delayMs);
  }

  private async watch(): Promise<void> {
    if (this.stopped) return;
    let gone = false;
    this.stopWatch = await this.options.client.watch(
      this.options.path,
      this.resourceVersion,
      (event) => {
        if (this.stopped) return;
        if (event.type === 'ERROR') {
          const status = event.object as unknown as { code?: number; message?: string };
          if (status.code === 410) gone = true;
          else this.options.logger.warn({ status }, 'watch error event');
          return;
        }
        const rv = event.object.metadata?.resourceVersion;
        if (rv) this.resourceVersion = rv;
        if (event.type === 'BOOKMARK') return;
        if (event.type === 'DELETED') {
          this.known.delete(key(event.object));
          this.options.handler.deleted(event.object);
        } else {
          this.known.set(key(event.object), event.object);
          this.options.handler.upsert(event.object);
        }
      },
      (err) => {
        if (this.stopped) return;
        const isGone = gone || (err instanceof KubeApiError && err.status === 410);
        if (err && !isGone) this.options.logger.warn({ err: String(err) }, 'watch ended with an error; re-listing');
        // 410 Gone or an error: our resourceVersion may be unusable, so relist. A clean end
        // (the server's watch timeout) resumes from the newest resourceVersion seen.
        const next = isGone || err ? () => this.relist() : () => this.watch();
        this.schedule(next, isGone || !err ? 0 : (this.options.retryDelayMs ?? 1000));
      },
    );
  }
}

function key(obj: StoredObject): string {
  return `${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
}
