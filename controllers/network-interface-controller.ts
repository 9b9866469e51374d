/**
 * NetworkInterface controller: each `network.fos1.io/v1alpha1` NetworkInterface becomes a
 * change (workflows/change.ts) on the node it names (`spec.node`):
 *
 * - `type: vlan` is an 802.1Q sub-interface fos1 creates on `spec.parent` with `spec.vlanId`
 *   (and owns: the cleanup deletes it);
 * - any other type (physical, bridge, veth, vxlan) must exist on the node already: fos1 sets
 *   its MTU, admin state (up) and, when `spec.addresses` is given, its complete list of
 *   global addresses. The cleanup clears the addresses the object set (the object owned the
 *   whole list) and leaves the link and its MTU as they are.
 *
 * `spec.zone` is not acted on here: node zones need an eBPF zone id and are FirewallZone's
 * and VLANPolicy's business. The change is a patch of one interface, so other interfaces and
 * the rest of the node's state are left alone.
 */
import type { StoredObject } from '../k8s/client';
import type { ChangeRequestInput } from '../model/change-request';
import { objectChangeId, objectProvenance, type ChangeOutcome, type ChangeRunner } from './change-runner';
import { CONTROLLER_FIELD_MANAGER, type Reconciler } from './object-controller';

export const FOS1_NETWORK_API_VERSION = 'network.fos1.io/v1alpha1';

/** The spec as the CRD admits it (deploy/crds/network.fos1.io_networkinterfaces.yaml). */
export interface NetworkInterfaceSpec {
  node: string;
  name: string;
  type?: 'physical' | 'vlan' | 'bridge' | 'vxlan' | 'veth';
  parent?: string;
  vlanId?: number;
  mtu?: number;
  addresses?: string[];
  zone?: string;
}

/** Options shared by the controllers that start changes. */
export interface ChangeControllerOptions {
  runner: ChangeRunner;
  /** Bake of each wave of the default rollout strategy (seconds; the change workflow's default when not given). */
  bakeSeconds?: number;
}

/** The NetworkInterface {@link Reconciler}. */
export function networkInterfaceReconciler(options: ChangeControllerOptions): Reconciler {
  const request = (obj: StoredObject, id: string, reason: string, patch: ChangeRequestInput['patch']): ChangeRequestInput => ({
    id,
    author: CONTROLLER_FIELD_MANAGER,
    reason,
    targets: [(obj.spec as NetworkInterfaceSpec).node],
    patch,
    options: options.bakeSeconds === undefined ? {} : { defaultBakeSeconds: options.bakeSeconds },
  });
  const ref = (obj: StoredObject) => `NetworkInterface ${obj.metadata.namespace}/${obj.metadata.name} (${objectProvenance(obj)})`;
  return {
    apiVersion: FOS1_NETWORK_API_VERSION,
    kind: 'NetworkInterface',
    plural: 'networkinterfaces',
    apply(obj, starting): Promise<ChangeOutcome> {
      const spec = obj.spec as NetworkInterfaceSpec;
      const generation = obj.metadata.generation ?? 0;
      const iface = {
        name: spec.name,
        ...(spec.type === 'vlan' && spec.parent && spec.vlanId ? { vlan: { parent: spec.parent, id: spec.vlanId } } : {}),
        ...(spec.mtu !== undefined ? { mtu: spec.mtu } : {}),
        up: true,
        ...(spec.addresses !== undefined ? { addresses: spec.addresses } : {}),
      };
      return options.runner.run(request(obj, objectChangeId('nif', obj, { generation }), `${ref(obj)} generation ${generation}`, { interfaces: { upsert: [iface], remove: [] } }), starting);
    },
    cleanup(obj, starting): Promise<ChangeOutcome> {
      const spec = obj.spec as NetworkInterfaceSpec;
      const patch =
        spec.type === 'vlan'
          ? { interfaces: { upsert: [], remove: [spec.name] } }
          : { interfaces: { upsert: spec.addresses !== undefined ? [{ name: spec.name, addresses: [] }] : [], remove: [] } };
      return options.runner.run(request(obj, objectChangeId('nif', obj, 'delete'), `${ref(obj)} deleted`, patch), starting);
    },
  };
}
