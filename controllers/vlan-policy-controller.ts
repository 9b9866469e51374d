/**
 * VLANPolicy controller: a `network.fos1.io/v1alpha1` VLANPolicy becomes the node zone
 * `vlan<id>` (the VLAN's interfaces and `spec.subnets`) on every node that carries the VLAN —
 * the nodes of the NetworkInterfaces of `type: vlan` with that `vlanId` in the policy's
 * namespace — through one change (workflows/change.ts). The zone's id in the eBPF zone map is
 * the VLAN id, so only VLANs 1–254 can have a policy (the zone map's ids); others are refused
 * with a condition naming the field.
 *
 * Inter-VLAN policy is the zone's `policy` in the same change, so fos1's eBPF zone maps on the
 * nodes decide it (`zone_policy`, `zone_default`; stateful: replies of an allowed connection
 * pass by connection tracking):
 *
 * - `allowTo: [20, 30]` → rules `vlan<id> → vlan20 allow`, `→ vlan30 allow`;
 * - `defaultAction` → the zone's default (deny unless `allow`): any other zone is refused;
 * - the router itself (`host`) is always allowed: a VLANPolicy says which VLANs may talk to
 *   which, not whether hosts may reach their gateway, DHCP or DNS (that is the host
 *   firewall's); traffic towards interfaces in no zone (an uplink) is never decided by zones.
 *
 * An `allowTo` entry must name a VLAN that is a zone on every node of this VLAN: a VLANPolicy
 * of that VLAN in the same namespace, Applied at its current generation, whose VLAN is carried
 * by those nodes. Until then the policy is refused (reason `WaitingForZone`, the message names
 * `spec.allowTo[i]`), nothing of this generation is applied, and the controller applies it
 * again by itself when that VLANPolicy becomes Applied (see {@link VlanPolicyDependents}).
 * When an allowed VLAN's policy goes away, its zone's removal takes the rules towards it
 * along (model/zone-maps.ts) and this policy is reconciled again (and then waits).
 *
 * No Cilium policy: inter-VLAN traffic on a router node is forwarded between the node's own
 * interfaces. Cilium's policies select endpoints (pods) and, with its host firewall, traffic
 * to and from the node itself; neither decides packets routed from one VLAN interface to
 * another, so a Cilium object here would be applied and never consulted. The change carries
 * no `clusterPolicy`.
 *
 * The cleanup removes the zone (and with it the rules other zones had towards it).
 */
import type { KubeClient, StoredObject } from '../k8s/client';
import type { ChangeRequestInput } from '../model/change-request';
import type { ZoneInput } from '../model/node-state';
import { objectChangeId, objectProvenance, type ChangeOutcome } from './change-runner';
import { FOS1_NETWORK_API_VERSION, type ChangeControllerOptions, type NetworkInterfaceSpec } from './network-interface-controller';
import { CONTROLLER_FIELD_MANAGER, type Condition, type Reconciler } from './object-controller';

/** The spec as the CRD admits it (deploy/crds/network.fos1.io_vlanpolicies.yaml). */
export interface VlanPolicySpec {
  vlanId: number;
  defaultAction?: 'allow' | 'deny';
  allowTo?: number[];
  subnets?: string[];
}

/** Highest VLAN id that can be a zone (zone ids are 1–254 in the eBPF maps). */
export const MAX_ZONE_VLAN = 254;

/** Reason of a policy refused until the VLANs it allows are zones on its nodes. */
export const WAITING_FOR_ZONE = 'WaitingForZone';

/** Name of the node zone a VLAN's policy makes. */
export function vlanZoneName(vlanId: number): string {
  return `vlan${vlanId}`;
}

/** What the controller knows of another VLAN's policy when it plans this one's zone. */
export interface VlanPeer {
  /** `namespace/name` of the VLANPolicy. */
  ref: string;
  /** Applied (condition True) at its current generation, and not being deleted. */
  applied: boolean;
  /** The nodes that carry its VLAN. */
  nodes: string[];
}

/** The zone of a VLAN's policy, or why it cannot be applied now (the field and the rule). */
export type VlanZonePlan = { ok: true; zone: ZoneInput } | { ok: false; type: 'InvalidSpec' | typeof WAITING_FOR_ZONE; message: string };

/**
 * Plans the zone of one VLANPolicy (pure: unit-tested). `peers` gives, per VLAN id, the other
 * policies of the namespace for that VLAN; `nodes` and `interfaces` are this VLAN's.
 */
export function planVlanZone(spec: VlanPolicySpec, namespace: string, nodes: readonly string[], interfaces: readonly string[], peers: ReadonlyMap<number, VlanPeer>): VlanZonePlan {
  if (spec.vlanId > MAX_ZONE_VLAN) return { ok: false, type: 'InvalidSpec', message: `spec.vlanId: ${spec.vlanId} cannot have a policy: the zone id is the VLAN id, and zone ids are 1–${MAX_ZONE_VLAN}` };
  const allowTo = spec.allowTo ?? [];
  for (const [i, to] of allowTo.entries()) {
    if (to === spec.vlanId) return { ok: false, type: 'InvalidSpec', message: `spec.allowTo[${i}]: ${to} is this policy's own VLAN (traffic inside a VLAN does not cross the router)` };
    if (to > MAX_ZONE_VLAN) return { ok: false, type: 'InvalidSpec', message: `spec.allowTo[${i}]: VLAN ${to} cannot be a zone (zone ids are 1–${MAX_ZONE_VLAN}), so no traffic can be allowed towards it` };
  }
  for (const [i, to] of allowTo.entries()) {
    const peer = peers.get(to);
    if (!peer) return { ok: false, type: WAITING_FOR_ZONE, message: `spec.allowTo[${i}]: no VLANPolicy for VLAN ${to} in namespace ${namespace}, so zone ${vlanZoneName(to)} does not exist; applied again when one is Applied` };
    if (!peer.applied) return { ok: false, type: WAITING_FOR_ZONE, message: `spec.allowTo[${i}]: VLANPolicy ${peer.ref} (VLAN ${to}) is not Applied at its generation, so zone ${vlanZoneName(to)} is not on the nodes yet; applied again when it is` };
    const missing = nodes.filter((n) => !peer.nodes.includes(n));
    if (missing.length > 0) return { ok: false, type: WAITING_FOR_ZONE, message: `spec.allowTo[${i}]: VLAN ${to} is not carried by node(s) ${missing.join(', ')} (no NetworkInterface of type vlan with vlanId ${to} there), so zone ${vlanZoneName(to)} is not on every node of VLAN ${spec.vlanId}` };
  }
  const rules = [{ to: 'host', action: 'allow' as const }, ...[...allowTo].sort((a, b) => a - b).map((to) => ({ to: vlanZoneName(to), action: 'allow' as const }))];
  return {
    ok: true,
    zone: { name: vlanZoneName(spec.vlanId), id: spec.vlanId, interfaces: [...interfaces], prefixes: spec.subnets ?? [], policy: { default: spec.defaultAction ?? 'deny', rules } },
  };
}

const conditionOf = (obj: StoredObject, type: Condition['type']) => ((obj.status?.conditions ?? []) as Condition[]).find((c) => c?.type === type);

/** Applied at its current generation and not being deleted: its zone is on its nodes. */
function isApplied(obj: StoredObject): boolean {
  const generation = obj.metadata.generation ?? 0;
  return !obj.metadata.deletionTimestamp && obj.status?.observedGeneration === generation && conditionOf(obj, 'Applied')?.status === 'True' && conditionOf(obj, 'Applied')?.observedGeneration === generation;
}

/** Refused at its current generation because an allowed VLAN was not a zone yet. */
function isWaiting(obj: StoredObject): boolean {
  const generation = obj.metadata.generation ?? 0;
  const failed = conditionOf(obj, 'Failed');
  return obj.status?.observedGeneration === generation && failed?.status === 'True' && failed.reason === WAITING_FOR_ZONE;
}

/**
 * Re-reconciles the VLANPolicies that allow a VLAN when that VLAN's policy becomes Applied or
 * stops being (created, applied, failed, deleted). Fed by the controller's watch; `force` is
 * `ObjectController.force`. Loops are impossible: a policy is forced only when the readiness
 * of a VLAN it allows *changed*, and a forced reconcile that changes nothing of its own
 * readiness forces nobody.
 */
export class VlanPolicyDependents {
  private readonly policies = new Map<string, StoredObject>();
  /** `namespace/vlanId` → applied, as last seen. */
  private readonly readiness = new Map<string, boolean>();

  constructor(private readonly force: (obj: StoredObject, tag: string) => void) {}

  /** Sees one watch event. */
  seen(obj: StoredObject, deleted: boolean): void {
    const key = `${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
    if (deleted) this.policies.delete(key);
    else this.policies.set(key, obj);
    const vlanId = (obj.spec as VlanPolicySpec | undefined)?.vlanId;
    if (vlanId === undefined) return;
    const vlanKey = `${obj.metadata.namespace ?? ''}/${vlanId}`;
    const ready = [...this.policies.values()].some((p) => p.metadata.namespace === obj.metadata.namespace && (p.spec as VlanPolicySpec).vlanId === vlanId && isApplied(p));
    const before = this.readiness.get(vlanKey);
    this.readiness.set(vlanKey, ready);
    if (before === ready) return;
    // The event's resourceVersion names this readiness change: a restarted controller that
    // sees the same object forces the same change id, and so joins it.
    const tag = `z${obj.metadata.resourceVersion ?? '0'}`;
    for (const p of this.policies.values()) {
      if (p === obj || p.metadata.namespace !== obj.metadata.namespace || p.metadata.deletionTimestamp) continue;
      if (!((p.spec as VlanPolicySpec).allowTo ?? []).includes(vlanId)) continue;
      // First sighting (a controller just started): only a policy that waits for it needs it.
      if (before === undefined && !(ready && isWaiting(p))) continue;
      this.force(p, tag);
    }
  }
}

/** The VLANPolicy {@link Reconciler}. */
export function vlanPolicyReconciler(options: ChangeControllerOptions & { kube: KubeClient }): Reconciler {
  /** Nodes and interface names of each VLAN of the namespace, from its NetworkInterfaces. */
  const vlanLinks = async (namespace: string | undefined): Promise<(vlanId: number) => { nodes: string[]; interfaces: string[] }> => {
    const { items } = await options.kube.list(FOS1_NETWORK_API_VERSION, 'NetworkInterface', { namespace });
    const specs = items.map((i) => i.spec as NetworkInterfaceSpec).filter((s) => s.type === 'vlan');
    return (vlanId) => {
      const of = specs.filter((s) => s.vlanId === vlanId);
      return { nodes: [...new Set(of.map((s) => s.node))].sort(), interfaces: [...new Set(of.map((s) => s.name))].sort() };
    };
  };
  const request = (id: string, reason: string, targets: string[], patch: ChangeRequestInput['patch']): ChangeRequestInput => ({
    id,
    author: CONTROLLER_FIELD_MANAGER,
    reason,
    targets,
    patch,
    options: options.bakeSeconds === undefined ? {} : { defaultBakeSeconds: options.bakeSeconds },
  });
  const ref = (obj: StoredObject) => `VLANPolicy ${obj.metadata.namespace}/${obj.metadata.name} (${objectProvenance(obj)})`;
  const refused = (id: string, type: string, message: string): ChangeOutcome => ({ kind: 'failed', changeId: id, workflowId: '', type, message });
  return {
    apiVersion: FOS1_NETWORK_API_VERSION,
    kind: 'VLANPolicy',
    plural: 'vlanpolicies',
    async apply(obj, starting, forced): Promise<ChangeOutcome> {
      const spec = obj.spec as VlanPolicySpec;
      const generation = obj.metadata.generation ?? 0;
      const id = objectChangeId('vlp', obj, { generation, ...(forced ? { forced } : {}) });
      const links = await vlanLinks(obj.metadata.namespace);
      const { nodes, interfaces } = links(spec.vlanId);
      if (spec.vlanId <= MAX_ZONE_VLAN && nodes.length === 0) return refused(id, 'NoTargets', `spec.vlanId: no NetworkInterface of type vlan with vlanId ${spec.vlanId} in namespace ${obj.metadata.namespace}, so no node carries the VLAN`);
      const peers = new Map<number, VlanPeer>();
      if ((spec.allowTo ?? []).length > 0) {
        const { items } = await options.kube.list(FOS1_NETWORK_API_VERSION, 'VLANPolicy', { namespace: obj.metadata.namespace });
        for (const p of items) {
          const vlanId = (p.spec as VlanPolicySpec).vlanId;
          if (p.metadata.uid === obj.metadata.uid || !(spec.allowTo ?? []).includes(vlanId)) continue;
          // Several policies for one VLAN: an applied one makes the zone.
          if (peers.get(vlanId)?.applied) continue;
          peers.set(vlanId, { ref: `${p.metadata.namespace}/${p.metadata.name}`, applied: isApplied(p), nodes: links(vlanId).nodes });
        }
      }
      const plan = planVlanZone(spec, obj.metadata.namespace ?? '', nodes, interfaces, peers);
      if (!plan.ok) return refused(id, plan.type, plan.message);
      const outcome = await options.runner.run(request(id, `${ref(obj)} generation ${generation}${forced ? ` (again: an allowed VLAN's zone changed, ${forced})` : ''}`, nodes, { zones: { upsert: [plan.zone], remove: [] } }), starting);
      if (outcome.kind !== 'applied') return outcome;
      const allowTo = spec.allowTo ?? [];
      return { ...outcome, message: `${outcome.message}; zone ${plan.zone.name} on ${nodes.join(', ')}: default ${spec.defaultAction ?? 'deny'}, allowed towards host${allowTo.length ? `, ${[...allowTo].sort((a, b) => a - b).map(vlanZoneName).join(', ')}` : ''} (eBPF zone maps)` };
    },
    async cleanup(obj, starting): Promise<ChangeOutcome> {
      const spec = obj.spec as VlanPolicySpec;
      const id = objectChangeId('vlp', obj, 'delete');
      const { nodes } = (await vlanLinks(obj.metadata.namespace))(spec.vlanId);
      // The removal is idempotent, so it runs wherever the VLAN is carried, even when the last
      // generation was refused (an earlier one may have made the zone). With no nodes, a
      // policy that never started a change (no status.workflowId) made nothing.
      if (nodes.length === 0 && !obj.status?.workflowId) return { kind: 'applied', changeId: id, workflowId: '', message: 'nothing was applied', unchanged: true };
      if (nodes.length === 0) return refused(id, 'NoTargets', `the nodes of VLAN ${spec.vlanId} are no longer known (its NetworkInterfaces were deleted first); remove zone ${vlanZoneName(spec.vlanId)} by a change`);
      return options.runner.run(request(id, `${ref(obj)} deleted`, nodes, { zones: { upsert: [], remove: [vlanZoneName(spec.vlanId)] } }), starting);
    },
  };
}
