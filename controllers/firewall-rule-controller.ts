/**
 * FirewallRule controller: watches `security.fos1.io/v1alpha1` FirewallRules, turns each spec
 * change into a policy change workflow, and writes the outcome back as status conditions.
 *
 * - The workflow id is derived from the object (`policy-firewallrule-<ns>-<name>`): Temporal
 *   refuses a second running workflow with the same id, so one change per object runs at a
 *   time; the controller waits for the running one and then reconciles the newest spec.
 * - A generation is handled once: `status.observedGeneration` equal to `metadata.generation`
 *   means done (status writes do not bump the generation, so they do not loop).
 * - A rule carries fos1's finalizer; its deletion starts the same workflow with no rules,
 *   which prunes its Cilium policies, and then drops the finalizer. On start, policies of rules
 *   that no longer exist (deleted before they had the finalizer) are found by their labels.
 * - Built on controllers/object-controller.ts: status by server-side apply, per-object queue;
 *   a restarted controller joins the run of the same change id instead of starting it again.
 * - A FirewallZone whose spec changes re-applies every rule of its namespace that names it
 *   (as its zone or as a peer): the rule's generation did not move, its policy must. With
 *   `zones: true` this is the FirewallZone controller's work (controllers/firewall-zone-controller.ts:
 *   validation, status, finalizer), run here because it drives this controller's rules;
 *   otherwise a plain watch of the zones forces the rules.
 * - Conditions: `Applied` (True/False), `RolledBack` (True after a verified rollback),
 *   `Failed` (True with the failure type as reason); each message names the workflow id.
 */
import { WorkflowExecutionAlreadyStartedError, WorkflowFailedError, type Client } from '@temporalio/client';
import { summariseFailure, FailureType, UNKNOWN_FAILURE, type FailureSummary } from '../model/failures';
import type { Logger } from 'pino';
import type { KubeClient, StoredObject } from '../k8s/client';
import { CILIUM_KINDS } from '../activities/cilium-policy';
import { MANAGED_BY_LABEL, MANAGED_BY_VALUE, SOURCE_KIND_LABEL, SOURCE_NAME_LABEL, SOURCE_NAMESPACE_LABEL } from '../model/firewall-translate';
import { CLUSTER_TASK_QUEUE, SearchAttributes } from '../model/naming';
import type { PolicyChangeInput, PolicyChangeResult } from '../workflows/policy-change';
import type { ChangeOutcome } from './change-runner';
import { ListWatch } from './list-watch';
import { firewallZoneVerbs, zoneReferences } from './firewall-zone-controller';
import { ObjectController } from './object-controller';

export const FOS1_SECURITY_API_VERSION = 'security.fos1.io/v1alpha1';
const ZONES_PATH = '/apis/security.fos1.io/v1alpha1/firewallzones';

/** A status condition as Kubernetes writes them (metav1.Condition). */
export type { Condition } from './object-controller';

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
  /** Also run the FirewallZone controller (status, finalizer, re-applies the rules naming a zone). */
  zones?: boolean;
  /** Told of every change the controllers start or join (the manager's history). */
  onChange?: (event: { kind: string; key: string; changeId: string; purpose: 'apply' | 'cleanup' }) => void;
}

/**
 * The controller; {@link FirewallRuleController.start} lists, watches and reconciles until
 * stopped. Built on the shared framework (controllers/object-controller.ts: finalizer, status
 * conditions by server-side apply, per-object queue), with the policy workflow as its change.
 */
export class FirewallRuleController {
  private readonly objects: ObjectController;
  private readonly zoneWatch: ListWatch | undefined;
  private readonly zoneObjects: ObjectController | undefined;
  /** Latest version of every rule, to find the rules a zone change affects. */
  private readonly rules = new Map<string, StoredObject>();
  /** Latest version of every zone (with the FirewallZone controller), to find zones waiting for their rules. */
  private readonly zones = new Map<string, StoredObject>();
  /** Spec fingerprint of every zone seen; a change of it re-applies the rules naming the zone. */
  private readonly zoneSpecs = new Map<string, string>();
  private readonly pending = new Set<Promise<unknown>>();
  private stopped = false;

  constructor(private readonly options: FirewallRuleControllerOptions) {
    this.objects = new ObjectController({
      kube: options.kube,
      logger: options.logger,
      ...(options.now ? { now: options.now } : {}),
      onObject: (obj, deleted) => {
        const previous = this.rules.get(keyOf(obj));
        if (deleted) this.rules.delete(keyOf(obj));
        else this.rules.set(keyOf(obj), obj);
        this.ruleChanged(previous, obj, deleted);
      },
      ...(options.onChange ? { onChange: (e) => options.onChange?.({ kind: 'FirewallRule', ...e }) } : {}),
      reconciler: {
        apiVersion: FOS1_SECURITY_API_VERSION,
        kind: 'FirewallRule',
        plural: 'firewallrules',
        apply: async (obj, starting, forced) => {
          const input = await this.inputFor(obj, obj.metadata.generation ?? 0, forced);
          return this.runWorkflow(input, starting);
        },
        cleanup: (obj, starting) => this.runWorkflow(this.deletedInput(obj.metadata.namespace ?? 'default', obj.metadata.name), starting),
      },
    });
    if (options.zones) {
      const verbs = firewallZoneVerbs({
        rules: (namespace) => [...this.rules.values()].filter((r) => r.metadata.namespace === namespace),
        reapply: (rule, tag) => this.objects.force(rule, tag),
      });
      this.zoneObjects = new ObjectController({
        kube: options.kube,
        logger: options.logger.child({ controller: 'FirewallZone' }),
        ...(options.now ? { now: options.now } : {}),
        onObject: (zone, deleted) => {
          if (deleted) this.zones.delete(keyOf(zone));
          else this.zones.set(keyOf(zone), zone);
        },
        ...(options.onChange ? { onChange: (e) => options.onChange?.({ kind: 'FirewallZone', ...e }) } : {}),
        reconciler: { apiVersion: FOS1_SECURITY_API_VERSION, kind: 'FirewallZone', plural: 'firewallzones', apply: (zone, starting) => verbs.apply(zone, starting), cleanup: (zone, starting) => verbs.cleanup(zone, starting) },
      });
      return;
    }
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

  /** Times the rule collection was listed (first list + relists after 410 Gone or errors). */
  get lists(): number {
    return this.objects.lists;
  }

  async start(): Promise<void> {
    await this.objects.start();
    await this.zoneWatch?.start();
    await this.zoneObjects?.start();
    await this.pruneOrphans();
  }

  /**
   * A rule deleted while no controller was watching, before it carried fos1's finalizer (rules
   * from before the finalizer existed), leaves its policies behind. After the first list,
   * every FirewallRule that fos1-owned objects name but that no longer exists is pruned.
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
      const run = this.runWorkflow(this.deletedInput(ref.namespace, ref.name), () => undefined).catch((err: unknown) => this.options.logger.error({ err: String(err), rule: key }, 'pruning failed'));
      this.pending.add(run);
      void run.finally(() => this.pending.delete(run));
    }
  }

  /** Stops watching and waits for reconciles in flight. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.zoneWatch?.stop();
    await this.zoneObjects?.stop();
    await this.objects.stop();
    await Promise.allSettled([...this.pending]);
  }

  /** A rule changed or went: a zone whose deletion waited for the rules naming it tries again. */
  private ruleChanged(previous: StoredObject | undefined, rule: StoredObject, deleted: boolean): void {
    if (!this.zoneObjects || this.stopped) return;
    for (const zone of this.zones.values()) {
      if (!zone.metadata.deletionTimestamp || zone.metadata.namespace !== rule.metadata.namespace) continue;
      const named = (r: StoredObject | undefined) => r !== undefined && zoneReferences(r, zone.metadata.name).length > 0;
      if (named(previous) && (deleted || !named(rule) || rule.metadata.deletionTimestamp)) this.zoneObjects.requeue(zone);
    }
  }

  private zoneChanged(zone: StoredObject, fingerprint: string): void {
    const key = keyOf(zone);
    const previous = this.zoneSpecs.get(key);
    if (fingerprint === 'deleted') this.zoneSpecs.delete(key);
    else this.zoneSpecs.set(key, fingerprint);
    // The first sighting is the state rules were (or are being) reconciled with.
    if (previous === undefined || previous === fingerprint || this.stopped) return;
    for (const rule of this.rules.values()) {
      if (rule.metadata.namespace !== zone.metadata.namespace) continue;
      const spec = (rule.spec ?? {}) as { zone?: string; peers?: { zone?: string }[] };
      if (spec.zone !== zone.metadata.name && !(spec.peers ?? []).some((p) => p.zone === zone.metadata.name)) continue;
      void this.objects.force(rule, `z${zone.metadata.resourceVersion ?? '0'}`);
    }
  }

  private deletedInput(namespace: string, name: string): PolicyChangeInput {
    return { changeId: `${name}-deleted`.slice(0, 63).replace(/[-.]+$/, ''), author: 'fos1-controller', source: { kind: 'FirewallRule', namespace, name }, namespace, rules: [] };
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

  /**
   * Starts (or joins) the object's workflow and waits for its outcome. The workflow id is per
   * object, so one policy change per rule runs at a time; a run of the same change id (a
   * controller restarted mid-change) is joined, never started twice.
   */
  private async runWorkflow(input: PolicyChangeInput, starting: (changeId: string) => void): Promise<ChangeOutcome> {
    const { temporal } = this.options;
    const workflowId = policyWorkflowId('FirewallRule', input.source.namespace, input.source.name);
    const outcome = (result: PolicyChangeResult): ChangeOutcome => ({
      kind: 'applied',
      changeId: input.changeId,
      workflowId,
      message: `applied ${result.applied.join(', ')}${result.pruned.length ? `; pruned ${result.pruned.join(', ')}` : ''}`,
    });
    for (;;) {
      try {
        const existing = temporal.workflow.getHandle(workflowId);
        const latest = await existing.describe().catch(() => undefined);
        if (latest && latest.typedSearchAttributes.get(SearchAttributes.changeId) === input.changeId) {
          starting(input.changeId);
          return outcome((await existing.result()) as PolicyChangeResult);
        }
        const handle = await temporal.workflow.start('policyChangeWorkflow', { workflowId, taskQueue: this.options.taskQueue ?? CLUSTER_TASK_QUEUE, args: [input] });
        starting(input.changeId);
        return outcome((await handle.result()) as PolicyChangeResult);
      } catch (err) {
        if (err instanceof WorkflowExecutionAlreadyStartedError) {
          // Another change of this object is running: let it finish, then start ours.
          await temporal.workflow.getHandle(workflowId).result().catch(() => undefined);
          continue;
        }
        if (err instanceof WorkflowFailedError) {
          const cause = applicationCause(err);
          const kind = cause.type === FailureType.PolicyRolledBack ? 'rolled-back' : cause.type === FailureType.PolicyRollbackFailed ? 'rollback-failed' : 'failed';
          return { kind, changeId: input.changeId, workflowId, type: cause.type, message: cause.message };
        }
        throw err;
      }
    }
  }
}

function keyOf(obj: StoredObject): string {
  return `${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
}

/** The workflow's failure type and message; `Failed` (a condition reason) when it carried no type. */
function applicationCause(err: WorkflowFailedError): FailureSummary {
  const cause = summariseFailure(err.cause ?? err);
  return cause.type === UNKNOWN_FAILURE ? { type: 'Failed', message: err.message } : cause;
}
