/**
 * FirewallRule controller: watches `security.fos1.io/v1alpha1` FirewallRules, turns each spec
 * change into a policy change workflow, and writes the outcome back as status conditions.
 *
 * - The workflow id is derived from the object (`policy-firewallrule-<ns>-<name>`): Temporal
 *   refuses a second running workflow with the same id, so one change per object runs at a
 *   time; the controller waits for the running one and then reconciles the newest spec.
 * - A generation is handled once: `status.observedGeneration` equal to `metadata.generation`
 *   means done (status writes do not bump the generation, so they do not loop).
 * - A deleted rule starts the same workflow with no rules, which prunes its Cilium policies;
 *   on start, rules deleted while no controller watched are found by the policies' labels.
 * - A FirewallZone whose spec changes re-applies every rule of its namespace that names it
 *   (as its zone or as a peer): the rule's generation did not move, its policy must.
 * - Conditions: `Applied` (True/False), `RolledBack` (True after a verified rollback),
 *   `Failed` (True with the failure type as reason); each message names the workflow id.
 */
import { WorkflowExecutionAlreadyStartedError, WorkflowFailedError, type Client } from '@temporalio/client';
import { summariseFailure, FailureType, UNKNOWN_FAILURE, type FailureSummary } from '../model/failures';
import type { Logger } from 'pino';
import { KubeApiError, type KubeClient, type StoredObject } from '../k8s/client';
import { CILIUM_KINDS } from '../activities/cilium-policy';
import { MANAGED_BY_LABEL, MANAGED_BY_VALUE, SOURCE_KIND_LABEL, SOURCE_NAME_LABEL, SOURCE_NAMESPACE_LABEL } from '../model/firewall-translate';
import { CLUSTER_TASK_QUEUE } from '../model/naming';
import type { PolicyChangeInput, PolicyChangeResult } from '../workflows/policy-change';
import { ListWatch } from './list-watch';

export const FOS1_SECURITY_API_VERSION = 'security.fos1.io/v1alpha1';
const RULES_PATH = '/apis/security.fos1.io/v1alpha1/firewallrules';
const ZONES_PATH = '/apis/security.fos1.io/v1alpha1/firewallzones';

/** A status condition as Kubernetes writes them (metav1.Condition). */
export interface Condition {
  type: 'Applied' | 'RolledBack' | 'Failed';
  status: 'True' | 'False' | 'Unknown';
  observedGeneration: number;
  lastTransitionTime: string;
  reason: string;
  message: string;
}

/** Workflow id for a fos1 object: the same object always maps to the same id. */
export function policyWorkflowId(kind: string, namespace: string, name: string): string {
  return `policy-${kind.toLowerCase()}-${namespace}-${name}`;
}

/** Options of {@link FirewallRuleController}. */
export interface FirewallRuleControllerOptions {
  kube: KubeClient;
  temporal: Client;
  logger: Logger;
  taskQueue?: string;
  /** Clock for condition timestamps (injected so tests can pin it). */
  now?: () => Date;
}

/** The controller; {@link FirewallRuleController.start} lists, watches and reconciles until stopped. */
export class FirewallRuleController {
  private readonly listWatch: ListWatch;
  private readonly zoneWatch: ListWatch;
  /** Latest version of every rule, to find the rules a zone change affects. */
  private readonly rules = new Map<string, StoredObject>();
  /** Spec fingerprint of every zone seen; a change of it re-applies the rules naming the zone. */
  private readonly zoneSpecs = new Map<string, string>();
  /** Rules to re-apply although their generation was handled, with the zone change that caused it. */
  private readonly forced = new Map<string, string>();
  /** Per-object serial queues: two events for one object never reconcile at once. */
  private readonly queues = new Map<string, Promise<void>>();
  private readonly latest = new Map<string, StoredObject | null>();
  private stopped = false;

  constructor(private readonly options: FirewallRuleControllerOptions) {
    this.listWatch = new ListWatch({
      apiVersion: FOS1_SECURITY_API_VERSION,
      kind: 'FirewallRule',
      path: RULES_PATH,
      client: options.kube,
      logger: options.logger,
      handler: {
        upsert: (obj) => {
          this.rules.set(keyOf(obj), obj);
          this.enqueue(obj, obj);
        },
        deleted: (obj) => {
          this.rules.delete(keyOf(obj));
          this.enqueue(obj, null);
        },
      },
    });
    this.zoneWatch = new ListWatch({
      apiVersion: FOS1_SECURITY_API_VERSION,
      kind: 'FirewallZone',
      path: ZONES_PATH,
      client: options.kube,
      logger: options.logger,
      handler: {
        upsert: (zone) => this.zoneChanged(zone, JSON.stringify(zone.spec ?? {})),
        deleted: (zone) => this.zoneChanged(zone, 'deleted'),
      },
    });
  }

  /** Times the collection was listed (first list + relists after 410 Gone or errors). */
  get lists(): number {
    return this.listWatch.lists;
  }

  async start(): Promise<void> {
    await this.listWatch.start();
    await this.zoneWatch.start();
    await this.pruneOrphans();
  }

  /**
   * A rule deleted while no controller was watching leaves its policies behind (the watch
   * never saw the DELETED event). After the first list, every FirewallRule that fos1-owned
   * objects name but that no longer exists is reconciled as deleted, which prunes them.
   */
  private async pruneOrphans(): Promise<void> {
    const sources = new Map<string, { namespace: string; name: string }>();
    for (const k of CILIUM_KINDS) {
      const { items } = await this.options.kube.list(k.apiVersion, k.kind, { labelSelector: `${MANAGED_BY_LABEL}=${MANAGED_BY_VALUE},${SOURCE_KIND_LABEL}=firewallrule` });
      for (const o of items) {
        const namespace = o.metadata.labels?.[SOURCE_NAMESPACE_LABEL];
        const name = o.metadata.labels?.[SOURCE_NAME_LABEL];
        if (namespace && name) sources.set(`${namespace}/${name}`, { namespace, name });
      }
    }
    for (const [key, ref] of sources) {
      if (this.rules.has(key)) continue;
      this.options.logger.info({ rule: key }, 'policies of a FirewallRule that no longer exists: pruning');
      this.enqueue({ apiVersion: FOS1_SECURITY_API_VERSION, kind: 'FirewallRule', metadata: { name: ref.name, namespace: ref.namespace } }, null);
    }
  }

  /** Stops watching and waits for reconciles in flight. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.listWatch.stop();
    this.zoneWatch.stop();
    await Promise.allSettled([...this.queues.values()]);
  }

  private zoneChanged(zone: StoredObject, fingerprint: string): void {
    const key = keyOf(zone);
    const previous = this.zoneSpecs.get(key);
    if (fingerprint === 'deleted') this.zoneSpecs.delete(key);
    else this.zoneSpecs.set(key, fingerprint);
    // The first sighting is the state rules were (or are being) reconciled with.
    if (previous === undefined || previous === fingerprint) return;
    for (const rule of this.rules.values()) {
      if (rule.metadata.namespace !== zone.metadata.namespace) continue;
      const spec = (rule.spec ?? {}) as { zone?: string; peers?: { zone?: string }[] };
      if (spec.zone !== zone.metadata.name && !(spec.peers ?? []).some((p) => p.zone === zone.metadata.name)) continue;
      this.forced.set(keyOf(rule), `z${zone.metadata.resourceVersion ?? '0'}`);
      this.enqueue(rule, rule);
    }
  }

  private enqueue(ref: StoredObject, obj: StoredObject | null): void {
    const key = keyOf(ref);
    this.latest.set(key, obj);
    const previous = this.queues.get(key) ?? Promise.resolve();
    const next = previous.then(() => this.reconcile(key, ref)).catch((err: unknown) => this.options.logger.error({ err: String(err), key }, 'reconcile failed'));
    this.queues.set(key, next);
  }

  private async reconcile(key: string, ref: StoredObject): Promise<void> {
    if (this.stopped) return;
    const obj = this.latest.get(key);
    const namespace = ref.metadata.namespace ?? 'default';
    const name = ref.metadata.name;
    if (obj === undefined) return; // already handled by an earlier queued reconcile
    this.latest.delete(key);
    const generation = obj?.metadata.generation ?? 0;
    const forced = this.forced.get(key);
    this.forced.delete(key);
    if (obj && forced === undefined && (obj.status?.observedGeneration as number | undefined) === generation) return;

    const workflowId = policyWorkflowId('FirewallRule', namespace, name);
    const input = obj ? await this.inputFor(obj, generation, forced) : { changeId: `${name}-deleted`, author: 'fos1-controller', source: { kind: 'FirewallRule', namespace, name }, namespace, rules: [] };
    const outcome = await this.runWorkflow(workflowId, input);
    if (!obj) {
      this.options.logger.info({ key, outcome: outcome.kind }, 'policies of deleted FirewallRule pruned');
      return;
    }
    await this.writeStatus(obj, generation, `${workflowId} (change ${input.changeId})`, outcome, workflowId);
  }

  private async inputFor(obj: StoredObject, generation: number, forced: string | undefined): Promise<PolicyChangeInput> {
    const namespace = obj.metadata.namespace ?? 'default';
    const { items: zones } = await this.options.kube.list(FOS1_SECURITY_API_VERSION, 'FirewallZone', { namespace });
    return {
      changeId: `${obj.metadata.name}-g${generation}${forced ? `-${forced}` : ''}`.slice(0, 63).replace(/[-.]+$/, ''),
      author: 'fos1-controller',
      source: { kind: 'FirewallRule', namespace, name: obj.metadata.name },
      namespace,
      rules: [{ name: obj.metadata.name, ...(obj.spec as object) } as never],
      zones: zones.map((z) => ({ name: z.metadata.name, ...(z.spec as object) }) as never),
    };
  }

  /** Starts (or joins) the object's workflow and waits for its outcome. */
  private async runWorkflow(workflowId: string, input: PolicyChangeInput): Promise<Outcome> {
    const { temporal } = this.options;
    for (;;) {
      try {
        const handle = await temporal.workflow.start('policyChangeWorkflow', {
          workflowId,
          taskQueue: this.options.taskQueue ?? CLUSTER_TASK_QUEUE,
          args: [input],
        });
        const result = (await handle.result()) as PolicyChangeResult;
        return { kind: 'applied', result, runId: handle.firstExecutionRunId };
      } catch (err) {
        if (err instanceof WorkflowExecutionAlreadyStartedError) {
          // Another change of this object is running: let it finish, then start ours.
          await temporal.workflow.getHandle(workflowId).result().catch(() => undefined);
          continue;
        }
        if (err instanceof WorkflowFailedError) {
          const cause = applicationCause(err);
          const kind = cause.type === FailureType.PolicyRolledBack ? 'rolled-back' : cause.type === FailureType.PolicyRollbackFailed ? 'rollback-failed' : 'failed';
          return { kind, type: cause.type, message: cause.message };
        }
        throw err;
      }
    }
  }

  /** `label` names the workflow and the change in messages; `workflowId` goes to status.workflowId. */
  private async writeStatus(obj: StoredObject, generation: number, label: string, outcome: Outcome, workflowId: string): Promise<void> {
    const now = (this.options.now ?? (() => new Date()))().toISOString().replace(/\.\d{3}Z$/, 'Z');
    const cond = (type: Condition['type'], status: Condition['status'], reason: string, message: string): Condition => ({ type, status, observedGeneration: generation, lastTransitionTime: now, reason, message });
    const conditions: Condition[] =
      outcome.kind === 'applied'
        ? [
            cond('Applied', 'True', 'Applied', `workflow ${label}: applied ${outcome.result.applied.join(', ')}${outcome.result.pruned.length ? `; pruned ${outcome.result.pruned.join(', ')}` : ''}`),
            cond('RolledBack', 'False', 'Applied', `workflow ${label}`),
            cond('Failed', 'False', 'Applied', `workflow ${label}`),
          ]
        : [
            cond('Applied', 'False', outcome.type, `workflow ${label}: ${outcome.message}`),
            cond('RolledBack', outcome.kind === 'rolled-back' ? 'True' : 'False', outcome.type, `workflow ${label}: ${ROLLBACK_MESSAGE[outcome.kind]}`),
            cond('Failed', 'True', outcome.type, `workflow ${label}: ${outcome.message}`.slice(0, 32_000)),
          ];
    // Optimistic concurrency: re-read and retry on a conflict (someone else wrote meanwhile).
    for (let attempt = 0; attempt < 5; attempt++) {
      const current = await this.options.kube.get({ apiVersion: FOS1_SECURITY_API_VERSION, kind: 'FirewallRule', namespace: obj.metadata.namespace, name: obj.metadata.name });
      if (!current || current.metadata.uid !== obj.metadata.uid) return; // deleted (or re-created) meanwhile
      const previous = ((current.status?.conditions ?? []) as Condition[]).filter(Boolean);
      // lastTransitionTime only moves when the status of a condition changes.
      const merged = conditions.map((c) => {
        const old = previous.find((p) => p.type === c.type);
        return old && old.status === c.status ? { ...c, lastTransitionTime: old.lastTransitionTime } : c;
      });
      try {
        await this.options.kube.replaceStatus({ ...current, status: { ...current.status, observedGeneration: generation, workflowId, conditions: merged } }, 'firewallrules');
        return;
      } catch (err) {
        if (err instanceof KubeApiError && err.status === 409) continue;
        throw err;
      }
    }
  }
}

function keyOf(obj: StoredObject): string {
  return `${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
}

type Outcome = { kind: 'applied'; result: PolicyChangeResult; runId: string } | { kind: 'rolled-back' | 'rollback-failed' | 'failed'; type: string; message: string };

const ROLLBACK_MESSAGE = {
  'rolled-back': 'the previous policies were restored and read back equal',
  'rollback-failed': 'the rollback did not verify; an operator must look (see the Failed message)',
  failed: 'nothing was applied, so nothing was rolled back',
} as const;

/** The workflow's failure type and message; `Failed` (a condition reason) when it carried no type. */
function applicationCause(err: WorkflowFailedError): FailureSummary {
  const cause = summariseFailure(err.cause ?? err);
  return cause.type === UNKNOWN_FAILURE ? { type: 'Failed', message: err.message } : cause;
}
