/**
 * FirewallRule controller: watches `security.fos1.io/v1alpha1` FirewallRules, turns each spec
 * change into a **cluster-only change** of the change workflow (a request with `clusterPolicy`
 * and no node part: workflows/cluster-only-change.ts) — so a rule's Cilium policy gets the
 * approval policy, server-side dry-run, apply with fos1's field manager, read-back, verified
 * rollback and the durable audit like every change — and writes the outcome back as status
 * conditions.
 *
 * - The change id is derived from the object and its generation
 *   (`fwr-<name>-<hash of namespace/name/uid>-g<generation>`, `-del` for the cleanup; model:
 *   controllers/change-runner.ts `objectChangeId`); the workflow id is `change-<id>`, started
 *   REJECT_DUPLICATE, so a controller restarted mid-change joins the run of the same change
 *   id instead of starting it again. One change per rule at a time: the per-object queue of
 *   controllers/object-controller.ts, and before a start the controller waits for a running
 *   change of the same rule another process started (a leader handover).
 * - A generation is handled once: `status.observedGeneration` equal to `metadata.generation`
 *   means done (status writes do not bump the generation, so they do not loop).
 * - The request's `clusterPolicy` is the rule's whole desired set under its `source`
 *   (`FirewallRule <ns>/<name>`) with the namespace's zones; a rule carries fos1's finalizer,
 *   and its deletion starts a cluster-only change with no rules under the same source, which
 *   prunes (and verifies gone) every Cilium object the rule owned, then drops the finalizer.
 *   On start, policies of rules that no longer exist (deleted before they had the finalizer)
 *   are found by their labels and pruned the same way.
 * - A FirewallZone whose spec changes re-applies every rule of its namespace that names it
 *   (as its zone or as a peer): the rule's generation did not move, its policy must. With
 *   `zones: true` this is the FirewallZone controller's work (controllers/firewall-zone-controller.ts:
 *   validation, status, finalizer), run here because it drives this controller's rules;
 *   otherwise a plain watch of the zones forces the rules.
 * - Conditions: `Applied` (True/False), `RolledBack` (True after a verified rollback),
 *   `Failed` (True with the failure type as reason); each message names the workflow id.
 *
 * The policy change workflow (workflows/policy-change.ts) it started before is no longer
 * started here: it stays registered so runs already in flight finish.
 */
import { type Client } from '@temporalio/client';
import type { Logger } from 'pino';
import type { KubeClient, StoredObject } from '../k8s/client';
import { CILIUM_KINDS } from '../activities/cilium-policy';
import type { ChangeRequestInput } from '../model/change-request';
import { MANAGED_BY_LABEL, MANAGED_BY_VALUE, SOURCE_KIND_LABEL, SOURCE_NAME_LABEL, SOURCE_NAMESPACE_LABEL } from '../model/firewall-translate';
import { changeWorkflowId } from '../model/naming';
import { shortHash } from '../model/short-hash';
import { ChangeRunner, objectChangeId, objectProvenance, type ChangeOutcome } from './change-runner';
import { ListWatch } from './list-watch';
import { firewallZoneVerbs, zoneReferences } from './firewall-zone-controller';
import { CONTROLLER_FIELD_MANAGER, ObjectController } from './object-controller';

export const FOS1_SECURITY_API_VERSION = 'security.fos1.io/v1alpha1';
const ZONES_PATH = '/apis/security.fos1.io/v1alpha1/firewallzones';

/** A status condition as Kubernetes writes them (metav1.Condition). */
export type { Condition } from './object-controller';

/** Prefix of the FirewallRule controller's change ids. */
const CHANGE_PREFIX = 'fwr';

/**
 * The change id of a rule's generation (`forced`: a re-apply its zones asked for), or of its
 * cleanup: `fwr-<name>-<hash>-g<generation>[-<forced>]`, `fwr-<name>-<hash>-del`.
 */
export function firewallRuleChangeId(rule: StoredObject, what: { generation: number; forced?: string } | 'delete'): string {
  return objectChangeId(CHANGE_PREFIX, rule, what);
}

/**
 * The cluster-only change request for one rule (`rule` undefined: its cleanup, which prunes
 * every Cilium object of its source): the rule's whole desired set, with the namespace's zones.
 */
export function firewallRuleChangeRequest(
  id: string,
  ref: { namespace: string; name: string },
  rule: StoredObject | undefined,
  zones: StoredObject[],
  reason: string,
): ChangeRequestInput {
  return {
    id,
    author: CONTROLLER_FIELD_MANAGER,
    reason,
    clusterPolicy: {
      namespace: ref.namespace,
      source: { kind: 'FirewallRule', namespace: ref.namespace, name: ref.name },
      rules: rule ? [{ name: ref.name, ...(rule.spec as object) } as never] : [],
      zones: rule ? zones.map((z) => ({ name: z.metadata.name, ...(z.spec as object) }) as never) : [],
    },
  };
}

/** Options of {@link FirewallRuleController}. */
export interface FirewallRuleControllerOptions {
  kube: KubeClient;
  temporal: Client;
  logger: Logger;
  taskQueue?: string;
  /** Starts (or joins) the changes: the manager's, which signs them with the controllers' identity; default one of its own. */
  runner?: ChangeRunner;
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
 * conditions by server-side apply, per-object queue), with cluster-only changes of the change workflow.
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
  private readonly runner: ChangeRunner;

  constructor(private readonly options: FirewallRuleControllerOptions) {
    this.runner = options.runner ?? new ChangeRunner({ temporal: options.temporal, ...(options.taskQueue ? { taskQueue: options.taskQueue } : {}) });
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
        apply: async (obj, starting, forced) => this.run(obj, await this.requestFor(obj, forced), starting),
        cleanup: (obj, starting) => this.run(obj, this.deletedRequest(obj), starting),
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
    const sources = new Map<string, { namespace: string; name: string; versions: string[] }>();
    for (const k of CILIUM_KINDS) {
      const { items } = await this.options.kube.list(k.apiVersion, k.kind, { labelSelector: `${MANAGED_BY_LABEL}=${MANAGED_BY_VALUE},${SOURCE_KIND_LABEL}=firewallrule` });
      for (const o of items) {
        const namespace = o.metadata.labels?.[SOURCE_NAMESPACE_LABEL];
        const name = o.metadata.labels?.[SOURCE_NAME_LABEL];
        if (!namespace || !name) continue;
        const entry = sources.get(`${namespace}/${name}`) ?? { namespace, name, versions: [] };
        entry.versions.push(`${o.kind}/${o.metadata.uid ?? ''}/${o.metadata.resourceVersion ?? ''}`);
        sources.set(`${namespace}/${name}`, entry);
      }
    }
    for (const [key, ref] of sources) {
      if (this.rules.has(key)) continue;
      this.options.logger.info({ rule: key }, 'policies of a FirewallRule that no longer exists: pruning');
      // The rule's uid is gone with it: the orphaned objects' versions name this prune, so a
      // later orphan of the same name gets a change of its own (not the finished one's).
      const orphan = { metadata: { namespace: ref.namespace, name: ref.name, uid: `orphan-${shortHash(ref.versions.sort().join(','))}` } } as StoredObject;
      const request = firewallRuleChangeRequest(firewallRuleChangeId(orphan, 'delete'), ref, undefined, [], `FirewallRule ${key} no longer exists: pruning the Cilium policies it left`);
      const run = this.run(orphan, request, () => undefined).catch((err: unknown) => this.options.logger.error({ err: String(err), rule: key }, 'pruning failed'));
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

  private deletedRequest(obj: StoredObject): ChangeRequestInput {
    const ref = { namespace: obj.metadata.namespace ?? 'default', name: obj.metadata.name };
    return firewallRuleChangeRequest(firewallRuleChangeId(obj, 'delete'), ref, undefined, [], `FirewallRule ${ref.namespace}/${ref.name} (${objectProvenance(obj)}) deleted: pruning its Cilium policies`);
  }

  private async requestFor(obj: StoredObject, forced: string | undefined): Promise<ChangeRequestInput> {
    const ref = { namespace: obj.metadata.namespace ?? 'default', name: obj.metadata.name };
    const generation = obj.metadata.generation ?? 0;
    const { items: zones } = await this.options.kube.list(FOS1_SECURITY_API_VERSION, 'FirewallZone', { namespace: ref.namespace });
    const reason = `FirewallRule ${ref.namespace}/${ref.name} (${objectProvenance(obj)}) generation ${generation}${forced ? `, re-applied for ${forced}` : ''}`;
    return firewallRuleChangeRequest(firewallRuleChangeId(obj, { generation, ...(forced ? { forced } : {}) }), ref, obj, zones, reason);
  }

  /**
   * Starts (or joins) the rule's change and waits for its outcome. A change of the same rule
   * that another controller process started (before a leader handover) and that is still
   * running is waited for first: one change per rule at a time, as its snapshot and restore
   * assume. The run of the same change id (a controller restarted mid-change) is joined.
   */
  private async run(rule: StoredObject, request: ChangeRequestInput, starting: (changeId: string) => void): Promise<ChangeOutcome> {
    await this.othersOfTheSameRule(rule, request.id);
    return this.runner.run(request, starting);
  }

  private async othersOfTheSameRule(rule: StoredObject, changeId: string): Promise<void> {
    // Every change id of the rule carries the same hash (of namespace/name/uid), whatever its generation.
    const tag = `-${shortHash(`${rule.metadata.namespace ?? ''}/${rule.metadata.name}/${rule.metadata.uid ?? ''}`)}-`;
    const own = changeWorkflowId(changeId);
    const running: string[] = [];
    const query = `WorkflowType = 'changeWorkflow' AND ExecutionStatus = 'Running' AND WorkflowId STARTS_WITH '${changeWorkflowId(`${CHANGE_PREFIX}-`)}'`;
    for await (const w of this.options.temporal.workflow.list({ query })) {
      if (w.workflowId !== own && w.workflowId.includes(tag)) running.push(w.workflowId);
    }
    for (const workflowId of running) {
      this.options.logger.info({ workflowId, waiting: own }, 'another change of this FirewallRule is running: waiting for it');
      await this.runner.waitForClose(workflowId);
    }
  }
}

function keyOf(obj: StoredObject): string {
  return `${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
}
