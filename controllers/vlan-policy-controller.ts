/**
 * VLANPolicy controller: a `network.fos1.io/v1alpha1` VLANPolicy becomes the node zone
 * `vlan<id>` (the VLAN's interfaces and `spec.subnets`) on every node that carries the VLAN —
 * the nodes of the NetworkInterfaces of `type: vlan` with that `vlanId` in the policy's
 * namespace — through one change (workflows/change.ts). The zone's id in the eBPF zone map is
 * the VLAN id, so only VLANs 1–254 can have a policy (the zone map's ids); others are refused
 * with a condition naming the field.
 *
 * Not yet acted on: `defaultAction` and `allowTo` (the zone pairs). main's change request has
 * zone membership but no zone-to-zone verdicts; the Applied message says so. The cleanup
 * removes the zone.
 */
import type { KubeClient, StoredObject } from '../k8s/client';
import type { ChangeRequestInput } from '../model/change-request';
import { objectChangeId, objectProvenance, type ChangeOutcome } from './change-runner';
import { FOS1_NETWORK_API_VERSION, type ChangeControllerOptions, type NetworkInterfaceSpec } from './network-interface-controller';
import { CONTROLLER_FIELD_MANAGER, type Reconciler } from './object-controller';

/** The spec as the CRD admits it (deploy/crds/network.fos1.io_vlanpolicies.yaml). */
export interface VlanPolicySpec {
  vlanId: number;
  defaultAction?: 'allow' | 'deny';
  allowTo?: number[];
  subnets?: string[];
}

/** Name of the node zone a VLAN's policy makes. */
export function vlanZoneName(vlanId: number): string {
  return `vlan${vlanId}`;
}

/** The VLANPolicy {@link Reconciler}. */
export function vlanPolicyReconciler(options: ChangeControllerOptions & { kube: KubeClient }): Reconciler {
  /** Nodes and interface names of the VLAN, from the namespace's NetworkInterfaces. */
  const vlanLinks = async (obj: StoredObject): Promise<{ nodes: string[]; interfaces: string[] }> => {
    const vlanId = (obj.spec as VlanPolicySpec).vlanId;
    const { items } = await options.kube.list(FOS1_NETWORK_API_VERSION, 'NetworkInterface', { namespace: obj.metadata.namespace });
    const specs = items.map((i) => i.spec as NetworkInterfaceSpec).filter((s) => s.type === 'vlan' && s.vlanId === vlanId);
    return { nodes: [...new Set(specs.map((s) => s.node))].sort(), interfaces: [...new Set(specs.map((s) => s.name))].sort() };
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
  const refused = (obj: StoredObject, id: string, type: string, message: string): ChangeOutcome => ({ kind: 'failed', changeId: id, workflowId: '', type, message });
  return {
    apiVersion: FOS1_NETWORK_API_VERSION,
    kind: 'VLANPolicy',
    plural: 'vlanpolicies',
    async apply(obj, starting): Promise<ChangeOutcome> {
      const spec = obj.spec as VlanPolicySpec;
      const generation = obj.metadata.generation ?? 0;
      const id = objectChangeId('vlp', obj, { generation });
      if (spec.vlanId > 254) return refused(obj, id, 'InvalidSpec', `spec.vlanId: ${spec.vlanId} cannot have a policy: the zone id is the VLAN id, and zone ids are 1–254`);
      const { nodes, interfaces } = await vlanLinks(obj);
      if (nodes.length === 0) return refused(obj, id, 'NoTargets', `spec.vlanId: no NetworkInterface of type vlan with vlanId ${spec.vlanId} in namespace ${obj.metadata.namespace}, so no node carries the VLAN`);
      const zone = { name: vlanZoneName(spec.vlanId), id: spec.vlanId, interfaces, prefixes: spec.subnets ?? [] };
      const outcome = await options.runner.run(request(id, `${ref(obj)} generation ${generation}`, nodes, { zones: { upsert: [zone], remove: [] } }), starting);
      if (outcome.kind !== 'applied') return outcome;
      const pairs = `defaultAction ${spec.defaultAction ?? 'deny'}, allowTo [${(spec.allowTo ?? []).join(', ')}]`;
      return { ...outcome, message: `${outcome.message}; zone ${zone.name} on ${nodes.join(', ')}; zone pairs (${pairs}) not enforced yet: the change request has no zone-to-zone policy` };
    },
    async cleanup(obj, starting): Promise<ChangeOutcome> {
      const spec = obj.spec as VlanPolicySpec;
      const id = objectChangeId('vlp', obj, 'delete');
      // Nothing was made for a refused policy (no status.workflowId): nothing to clean.
      if (!obj.status?.workflowId) return { kind: 'applied', changeId: id, workflowId: '', message: 'nothing was applied', unchanged: true };
      const { nodes } = await vlanLinks(obj);
      if (nodes.length === 0) return refused(obj, id, 'NoTargets', `the nodes of VLAN ${spec.vlanId} are no longer known (its NetworkInterfaces were deleted first); remove zone ${vlanZoneName(spec.vlanId)} by a change`);
      return options.runner.run(request(id, `${ref(obj)} deleted`, nodes, { zones: { upsert: [], remove: [vlanZoneName(spec.vlanId)] } }), starting);
    },
  };
}
