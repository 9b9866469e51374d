/**
 * fos1's small controller framework (controller-runtime style), shared by the controllers of
 * fos1's CRDs. One {@link ObjectController} watches one kind and, for each object:
 *
 * - list + watch from the list's resourceVersion ({@link ListWatch}: resume from the newest
 *   resourceVersion when the stream ends, relist on 410 Gone); a restarted controller lists
 *   again, and an object whose `status.observedGeneration` is behind is reconciled again —
 *   its change id is derived from its generation, so it joins the change already running;
 * - per-object serial queue: two events of one object never reconcile at once, and only the
 *   newest version of an object is reconciled;
 * - a finalizer (`fos1.io/cleanup`) is added before anything is changed for the object, and
 *   removed only after {@link Reconciler.cleanup} succeeded, so a deleted object's state on
 *   the nodes is cleaned up even if no controller ran when it was deleted;
 * - the outcome goes to `status.conditions` (Applied, RolledBack, Failed), each with
 *   `observedGeneration`, by server-side apply of the status with fos1's field manager;
 *   `lastTransitionTime` only moves when a condition's status does;
 * - a failed cleanup, or an error talking to the apiserver or Temporal, is retried with
 *   back-off (a failed change is not: its generation is done, and its conditions say why).
 *
 * Leader election is outside: a process starts its controllers when it wins the Lease
 * (controllers/leader-election.ts) and stops them when it loses it.
 */
import type { Logger } from 'pino';
import { KubeApiError, type KubeClient, type StoredObject } from '../k8s/client';
import { ChangeWaitAborted, type ChangeOutcome } from './change-runner';
import { ListWatch } from './list-watch';

/** Field manager of every write fos1's controllers make. */
export const CONTROLLER_FIELD_MANAGER = 'fos1-controller';
/** The finalizer fos1's controllers put on the objects they act for. */
export const CLEANUP_FINALIZER = 'fos1.io/cleanup';

/** A status condition as Kubernetes writes them (metav1.Condition). */
export interface Condition {
  type: 'Applied' | 'RolledBack' | 'Failed';
  status: 'True' | 'False' | 'Unknown';
  observedGeneration: number;
  lastTransitionTime: string;
  reason: string;
  message: string;
}

/** What one kind's controller does; the framework does the rest. */
export interface Reconciler {
  apiVersion: string;
  kind: string;
  /** Resource plural (`networkinterfaces`). */
  plural: string;
  /**
   * Brings the nodes to what the object says (one change); `starting` is told the change id
   * before the wait; `forced` is set when something else than the object's generation asks for
   * the change (see {@link ObjectController.force}), and belongs in the change id.
   */
  apply(obj: StoredObject, starting: (changeId: string) => void, forced?: string): Promise<ChangeOutcome>;
  /** Removes what the object made (one change); the finalizer is dropped only when it succeeded. */
  cleanup(obj: StoredObject, starting: (changeId: string) => void): Promise<ChangeOutcome>;
}

/** Options of {@link ObjectController}. */
export interface ObjectControllerOptions {
  kube: KubeClient;
  logger: Logger;
  reconciler: Reconciler;
  /** Back-off of a retried reconcile (ms; default 2 s, doubling up to 60 s). */
  retryDelayMs?: number;
  /** Clock for condition timestamps (injected so tests can pin it). */
  now?: () => Date;
  /** Sees every object the watch reports (the FirewallRule controller keeps an index of rules). */
  onObject?: (obj: StoredObject, deleted: boolean) => void;
  /** Told of every change the controller starts or joins (before it waits for the outcome). */
  onChange?: (event: { key: string; changeId: string; purpose: 'apply' | 'cleanup' }) => void;
}

/** The collection path of a kind: `/apis/<group>/<version>/<plural>`. */
export function collectionPath(apiVersion: string, plural: string): string {
  return `/apis/${apiVersion}/${plural}`;
}

/** Watches one kind and reconciles each object; see the module comment. */
export class ObjectController {
  private readonly listWatch: ListWatch;
  private readonly queues = new Map<string, Promise<void>>();
  private readonly latest = new Map<string, StoredObject>();
  private readonly retries = new Map<string, { timer: NodeJS.Timeout; attempt: number }>();
  private readonly forced = new Map<string, string>();
  /** Callers of {@link ObjectController.force} waiting for the forced reconcile's outcome. */
  private readonly waiters = new Map<string, ((outcome: ChangeOutcome | undefined) => void)[]>();
  private stopped = false;

  constructor(private readonly options: ObjectControllerOptions) {
    const r = options.reconciler;
    this.listWatch = new ListWatch({
      apiVersion: r.apiVersion,
      kind: r.kind,
      path: collectionPath(r.apiVersion, r.plural),
      client: options.kube,
      logger: options.logger,
      handler: {
        upsert: (obj) => {
          options.onObject?.(obj, false);
          this.enqueue(obj);
        },
        // With the finalizer, DELETED arrives only after the cleanup: nothing left to do here.
        deleted: (obj) => options.onObject?.(obj, true),
      },
    });
  }

  /** Times the collection was listed (first list + relists after 410 Gone or errors). */
  get lists(): number {
    return this.listWatch.lists;
  }

  /** The kind this controller reconciles. */
  get kind(): string {
    return this.options.reconciler.kind;
  }

  /** Lists and starts watching (returns after the first list). */
  async start(): Promise<void> {
    await this.listWatch.start();
  }

  /**
   * Stops watching and stops waiting for changes in flight (they go on in Temporal; the next
   * leader joins them). Resolves when every reconcile has returned.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    this.listWatch.stop();
    for (const r of this.retries.values()) clearTimeout(r.timer);
    this.retries.clear();
    await Promise.allSettled([...this.queues.values()]);
    for (const key of [...this.waiters.keys()]) this.settle(key, undefined);
  }

  /**
   * Reconciles `obj` again although its generation was handled (something it depends on
   * changed); `tag` names the cause and goes into the change id. Resolves with the outcome of
   * that reconcile's change (undefined when none ran: the object is gone or being deleted, or
   * the controller stopped); a failed attempt retried with back-off resolves when one ends.
   */
  force(obj: StoredObject, tag: string): Promise<ChangeOutcome | undefined> {
    const key = keyOf(obj);
    this.forced.set(key, tag);
    const done = new Promise<ChangeOutcome | undefined>((resolve) => this.waiters.set(key, [...(this.waiters.get(key) ?? []), resolve]));
    if (this.stopped) this.settle(key, undefined);
    else this.enqueue(obj);
    return done;
  }

  /** Reconciles `obj` again now (something changed that its cleanup waited for). */
  requeue(obj: StoredObject): void {
    this.enqueue(obj);
  }

  private settle(key: string, outcome: ChangeOutcome | undefined): void {
    const waiting = this.waiters.get(key);
    this.waiters.delete(key);
    for (const resolve of waiting ?? []) resolve(outcome);
  }

  private enqueue(obj: StoredObject): void {
    if (this.stopped) return;
    const key = keyOf(obj);
    this.latest.set(key, obj);
    const previous = this.queues.get(key) ?? Promise.resolve();
    const next = previous.then(() => this.reconcile(key));
    this.queues.set(key, next);
  }

  private async reconcile(key: string): Promise<void> {
    const obj = this.latest.get(key);
    if (obj === undefined || this.stopped) return; // an earlier queued reconcile took the newest version
    this.latest.delete(key);
    try {
      await this.reconcileObject(key, obj);
      this.retries.delete(key);
    } catch (err) {
      if (err instanceof ChangeWaitAborted || this.stopped) return;
      const attempt = (this.retries.get(key)?.attempt ?? 0) + 1;
      const delay = Math.min((this.options.retryDelayMs ?? 2000) * 2 ** (attempt - 1), 60_000);
      this.options.logger.warn({ err: String(err), key, kind: this.kind, attempt, delayMs: delay }, 'reconcile failed; retrying');
      const timer = setTimeout(() => {
        if (this.stopped) return;
        // Retry with the newest version we know, unless a newer event queued one already.
        if (!this.latest.has(key)) this.latest.set(key, obj);
        this.enqueue(this.latest.get(key) as StoredObject);
      }, delay);
      this.retries.set(key, { timer, attempt });
    }
  }

  private async reconcileObject(key: string, seen: StoredObject): Promise<void> {
    const { reconciler } = this.options;
    // Act on what the apiserver has now, not on a queued event.
    const obj = await this.options.kube.get({ apiVersion: reconciler.apiVersion, kind: reconciler.kind, namespace: seen.metadata.namespace, name: seen.metadata.name });
    if (!obj || obj.metadata.uid !== seen.metadata.uid) return this.settle(key, undefined);
    const finalizers = obj.metadata.finalizers ?? [];
    const generation = obj.metadata.generation ?? 0;

    if (obj.metadata.deletionTimestamp) {
      this.forced.delete(key);
      this.settle(key, undefined);
      if (!finalizers.includes(CLEANUP_FINALIZER)) return;
      const outcome = await reconciler.cleanup(obj, (changeId) => this.options.onChange?.({ key, changeId, purpose: 'cleanup' }));
      if (outcome.kind !== 'applied') {
        await this.writeStatus(obj, generation, outcome);
        throw new Error(`cleanup change ${outcome.changeId} failed (${outcome.type}): ${outcome.message}`);
      }
      await this.setFinalizer(obj, false);
      this.options.logger.info({ key, kind: this.kind, changeId: outcome.changeId }, 'cleaned up; finalizer removed');
      return;
    }

    if (!finalizers.includes(CLEANUP_FINALIZER)) {
      // Before anything is changed for the object: its deletion must wait for our cleanup.
      // The update is a new MODIFIED event, which reconciles the object with the finalizer.
      await this.setFinalizer(obj, true);
      return;
    }
    const observed = obj.status?.observedGeneration as number | undefined;
    const forced = this.forced.get(key);
    this.forced.delete(key);
    if (observed === generation && forced === undefined) return this.settle(key, undefined);

    let outcome: ChangeOutcome;
    try {
      outcome = await reconciler.apply(obj, (changeId) => this.options.onChange?.({ key, changeId, purpose: 'apply' }), forced);
    } catch (err) {
      // Retried with back-off: the retry must run forced again (its waiters still wait).
      if (forced !== undefined && !this.forced.has(key)) this.forced.set(key, forced);
      throw err;
    }
    await this.writeStatus(obj, generation, outcome);
    this.settle(key, outcome);
  }

  /** Adds or removes fos1's finalizer by an optimistic update (never creates: the object must exist). */
  private async setFinalizer(obj: StoredObject, present: boolean): Promise<void> {
    let current: StoredObject | undefined = obj;
    for (let attempt = 0; attempt < 5 && current && current.metadata.uid === obj.metadata.uid; attempt++) {
      const others = (current.metadata.finalizers ?? []).filter((f) => f !== CLEANUP_FINALIZER);
      try {
        await this.options.kube.replace({ ...current, metadata: { ...current.metadata, finalizers: present ? [...others, CLEANUP_FINALIZER] : others } }, { fieldManager: CONTROLLER_FIELD_MANAGER });
        return;
      } catch (err) {
        if (err instanceof KubeApiError && err.status === 404) return;
        if (!(err instanceof KubeApiError && err.status === 409)) throw err;
        current = await this.options.kube.get({ apiVersion: obj.apiVersion, kind: obj.kind, namespace: obj.metadata.namespace, name: obj.metadata.name });
      }
    }
  }

  /** Server-side apply of the object's status: observedGeneration, the change's workflow id, and the conditions. */
  private async writeStatus(obj: StoredObject, generation: number, outcome: ChangeOutcome): Promise<void> {
    const now = (this.options.now ?? (() => new Date()))().toISOString().replace(/\.\d{3}Z$/, 'Z');
    const label = `workflow ${outcome.workflowId} (change ${outcome.changeId})`;
    const cond = (type: Condition['type'], status: Condition['status'], reason: string, message: string): Condition => ({ type, status, observedGeneration: generation, lastTransitionTime: now, reason, message: message.slice(0, 32_000) });
    const conditions: Condition[] =
      outcome.kind === 'applied'
        ? [
            cond('Applied', 'True', outcome.unchanged ? 'Unchanged' : 'Applied', `${label}: ${outcome.message}`),
            cond('RolledBack', 'False', 'Applied', label),
            cond('Failed', 'False', 'Applied', label),
          ]
        : [
            cond('Applied', 'False', outcome.type, `${label}: ${outcome.message}`),
            cond('RolledBack', outcome.kind === 'rolled-back' ? 'True' : 'False', outcome.type, `${label}: ${ROLLBACK_MESSAGE[outcome.kind]}`),
            cond('Failed', 'True', outcome.type, `${label}: ${outcome.message}`),
          ];
    const previous = ((obj.status?.conditions ?? []) as Condition[]).filter(Boolean);
    const merged = conditions.map((c) => {
      const old = previous.find((p) => p.type === c.type);
      return old && old.status === c.status ? { ...c, lastTransitionTime: old.lastTransitionTime } : c;
    });
    try {
      await this.options.kube.applyStatus(
        { apiVersion: obj.apiVersion, kind: obj.kind, namespace: obj.metadata.namespace, name: obj.metadata.name },
        this.options.reconciler.plural,
        { observedGeneration: generation, workflowId: outcome.workflowId, conditions: merged },
        { fieldManager: CONTROLLER_FIELD_MANAGER },
      );
    } catch (err) {
      if (err instanceof KubeApiError && err.status === 404) return; // deleted meanwhile
      throw err;
    }
  }
}

function keyOf(obj: StoredObject): string {
  return `${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
}

const ROLLBACK_MESSAGE = {
  'rolled-back': 'what the change had touched was restored and read back equal to its snapshot',
  'rollback-failed': 'the rollback did not verify; an operator must look (see the Failed message)',
  failed: 'nothing was applied, so nothing was rolled back',
} as const;
