/**
 * DPIProfile controller of the ingest worker: list-watches `security.fos1.io/v1alpha1`
 * DPIProfiles (controllers/list-watch.ts) and keeps each profile's rules in the ingest's rule
 * set (ingest/rule-source.ts), reloaded without a restart. Small and self-contained so it can
 * move onto the shared controller framework as it is.
 *
 * - Status: one `Applied` condition with `observedGeneration` (True `RulesLoaded` naming the
 *   rules; False `InvalidProfile` naming the field and the rule, with the previous rules
 *   still in force), written only when it changes, so the status write's own watch event
 *   does not loop.
 * - Ownership instead of a finalizer: the rules exist only in the ingest's memory and are
 *   derived from the live list. A deleted profile (a DELETED event, or missing from a relist
 *   after a watch gap) takes its rules with it; a restarted ingest rebuilds them from the
 *   list. Nothing outside the ingest is created, so there is nothing to clean up that a
 *   finalizer would have to wait for. Blocks a profile's rule already made run out by their
 *   own expiry (or are lifted with the `lift` signal), like any enforcement.
 */
import type { Logger } from 'pino';
import { formatIssues } from '../model/change-request';
import { KubeApiError, type StoredObject } from '../k8s/client';
import { ListWatch, type ListWatchClient } from '../controllers/list-watch';
import { translateDpiProfile } from '../rules/dpi-profile';
import type { RuleSource } from './rule-source';

export const DPI_API_VERSION = 'security.fos1.io/v1alpha1';
const PROFILES_PATH = '/apis/security.fos1.io/v1alpha1/dpiprofiles';

/** The Kubernetes calls the controller makes. */
export type DpiKubeClient = ListWatchClient & {
  get(ref: { apiVersion: string; kind: string; namespace?: string; name: string }): Promise<StoredObject | undefined>;
  replaceStatus(obj: StoredObject, plural: string): Promise<StoredObject>;
};

/** A metav1.Condition. */
export interface DpiCondition {
  type: 'Applied';
  status: 'True' | 'False';
  observedGeneration: number;
  lastTransitionTime: string;
  reason: 'RulesLoaded' | 'InvalidProfile';
  message: string;
}

/** Options of {@link DpiProfileController}. */
export interface DpiProfileControllerOptions {
  kube: DpiKubeClient;
  rules: RuleSource;
  logger: Logger;
  /** Which ingest writes (in messages): the node it runs for. */
  node: string;
  now?: () => Date;
}

/** Follows DPIProfiles until {@link DpiProfileController.stop}. */
export class DpiProfileController {
  private readonly listWatch: ListWatch;
  private readonly queues = new Map<string, Promise<void>>();
  private stopped = false;

  constructor(private readonly options: DpiProfileControllerOptions) {
    this.listWatch = new ListWatch({
      apiVersion: DPI_API_VERSION,
      kind: 'DPIProfile',
      path: PROFILES_PATH,
      client: options.kube,
      logger: options.logger,
      handler: {
        upsert: (obj) => this.enqueue(obj, () => this.reconcile(obj)),
        deleted: (obj) => this.enqueue(obj, async () => this.remove(obj)),
      },
    });
  }

  /** Lists (loading every profile's rules) and watches. */
  async start(): Promise<void> {
    await this.listWatch.start();
  }

  /** Waits until every event seen so far is handled (tests). */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.queues.values()]);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.listWatch.stop();
    await this.settle();
  }

  /** One object's events in order, never two at once. */
  private enqueue(obj: StoredObject, work: () => Promise<void>): void {
    const key = keyOf(obj);
    const next = (this.queues.get(key) ?? Promise.resolve())
      .then(() => (this.stopped ? undefined : work()))
      .catch((err: unknown) => this.options.logger.error({ err: String(err), profile: key }, 'DPIProfile reconcile failed'));
    this.queues.set(key, next);
  }

  private remove(obj: StoredObject): void {
    const key = keyOf(obj);
    const had = this.options.rules.rulesOf(key);
    const change = this.options.rules.setProfile(key, null);
    if (change.ok) this.options.logger.info({ profile: key, removed: had }, `DPIProfile ${key} deleted: its rules are out of the rule set`);
    else this.options.logger.error({ profile: key, issues: change.issues }, `removing the rules of DPIProfile ${key} failed`);
  }

  private async reconcile(obj: StoredObject): Promise<void> {
    const key = keyOf(obj);
    // Being deleted (another party's finalizer holds it): its rules go now.
    if (beingDeleted(obj)) return this.remove(obj);
    const generation = obj.metadata.generation ?? 0;
    const translation = translateDpiProfile({ namespace: obj.metadata.namespace ?? 'default', name: obj.metadata.name }, obj.spec);
    let condition: Pick<DpiCondition, 'status' | 'reason' | 'message'>;
    const kept = () => {
      const previous = this.options.rules.rulesOf(key);
      return previous.length > 0 ? `the previous rules stay in force (${previous.join(', ')})` : 'no rules of this profile are in force';
    };
    if (!translation.ok) {
      condition = { status: 'False', reason: 'InvalidProfile', message: `${formatIssues(translation.issues)}; ${kept()}` };
    } else {
      const change = this.options.rules.setProfile(key, translation.rules);
      condition = change.ok
        ? {
            status: 'True',
            reason: 'RulesLoaded',
            message: translation.rules.length
              ? `rules ${translation.rules.map((r) => r.name).join(', ')} in the ingest's rule set on ${this.options.node} (${change.ruleSet.rules.length} rules in all)`
              : `no rules (every application allowed) on ${this.options.node}`,
          }
        : { status: 'False', reason: 'InvalidProfile', message: `the rule set with this profile's rules is invalid: ${formatIssues(change.issues)}; ${kept()}` };
    }
    if (condition.status === 'False') this.options.logger.warn({ profile: key, message: condition.message }, `DPIProfile ${key} refused`);
    await this.writeStatus(obj, generation, condition);
  }

  private async writeStatus(obj: StoredObject, generation: number, c: Pick<DpiCondition, 'status' | 'reason' | 'message'>): Promise<void> {
    const now = (this.options.now ?? (() => new Date()))().toISOString().replace(/\.\d{3}Z$/, 'Z');
    for (let attempt = 0; attempt < 5; attempt++) {
      const current = attempt === 0 ? obj : await this.options.kube.get({ apiVersion: DPI_API_VERSION, kind: 'DPIProfile', namespace: obj.metadata.namespace, name: obj.metadata.name });
      if (!current || current.metadata.uid !== obj.metadata.uid || beingDeleted(current)) return;
      // A newer generation is on its way through the watch: its reconcile writes the status.
      if ((current.metadata.generation ?? 0) !== generation) return;
      const previous = ((current.status?.conditions ?? []) as DpiCondition[]).find((p) => p.type === 'Applied');
      const unchanged = previous && previous.status === c.status && previous.reason === c.reason && previous.message === c.message && previous.observedGeneration === generation;
      if (unchanged && current.status?.observedGeneration === generation) return;
      const condition: DpiCondition = { type: 'Applied', observedGeneration: generation, lastTransitionTime: previous && previous.status === c.status ? previous.lastTransitionTime : now, ...c };
      const others = ((current.status?.conditions ?? []) as { type: string }[]).filter((p) => p.type !== 'Applied');
      try {
        await this.options.kube.replaceStatus({ ...current, status: { ...current.status, observedGeneration: generation, conditions: [...others, condition] } }, 'dpiprofiles');
        return;
      } catch (err) {
        if (err instanceof KubeApiError && (err.status === 409 || err.status === 404)) {
          if (err.status === 404) return;
          continue;
        }
        throw err;
      }
    }
  }
}

function beingDeleted(obj: StoredObject): boolean {
  return (obj.metadata as { deletionTimestamp?: string }).deletionTimestamp !== undefined;
}

function keyOf(obj: StoredObject): string {
  return `${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
}
