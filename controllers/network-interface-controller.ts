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
 * - `spec.zone` puts the interface into that zone of the node, through a zone membership
 *   operation in the same change (`patch.zoneMembers`: the zone keeps its id, prefixes, policy
 *   and other members, in fos1's nftables sets and eBPF zone maps). The zone must exist on the
 *   node already (made by a change or a VLANPolicy): if it does not, the change fails before
 *   anything is applied and the conditions say `ZoneNotFound`, naming `spec.zone` and the
 *   node. Not retried by itself (as every failed change, see object-controller.ts): once the
 *   zone exists, the next edit of the spec applies it. An interface already in another zone is
 *   refused the same way (`ZoneMembershipConflict`). The zone the interface was put in is kept
 *   in `status.zoneMember`, so a changed or removed `spec.zone` leaves that zone in the same
 *   change, and the cleanup leaves it too.
 *
 * The change is a patch of one interface (and its zone membership), so other interfaces and
 * the rest of the node's state are left alone.
 */
import type { StoredObject } from '../k8s/client';
import type { ChangeRequestInput } from '../model/change-request';
import { FailureType } from '../model/failures';
import { ZONE_NAME } from '../model/node-state';
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

/** What the controller last put into a zone on the node (`status.zoneMember`). */
export interface ZoneMember {
  zone: string;
  interface: string;
}

/**
 * The zone membership operations of one generation (pure: unit-tested): leave the zone the
 * interface was put in before (`status.zoneMember`) when it is not the one wanted now, join
 * `spec.zone`. The cleanup (`wanted` undefined) leaves both.
 */
export function zoneMembersFor(spec: NetworkInterfaceSpec | undefined, previous: ZoneMember | undefined): { join: ZoneMember[]; leave: ZoneMember[] } {
  const wanted = spec?.zone !== undefined ? { zone: spec.zone, interface: spec.name } : undefined;
  const same = (a: ZoneMember | undefined, b: ZoneMember | undefined) => a !== undefined && b !== undefined && a.zone === b.zone && a.interface === b.interface;
  const leave = previous && !same(previous, wanted) ? [previous] : [];
  return { join: wanted ? [wanted] : [], leave };
}

/** The patch part of {@link zoneMembersFor}, or nothing when there is nothing to do (the patch then stays as before zones). */
function zoneMembersPatch(members: { join: ZoneMember[]; leave: ZoneMember[] }) {
  if (members.join.length + members.leave.length === 0) return {};
  const part = (list: ZoneMember[]) => list.map((m) => ({ zone: m.zone, interfaces: [m.interface] }));
  return { zoneMembers: { join: part(members.join), leave: part(members.leave) } };
}

/**
 * A failed change's outcome in the object's words: a zone membership refused on the node
 * (the node's failure type is in the change's message, `change failed on node N (Type: …)`)
 * becomes that type, the message naming `spec.zone`.
 */
export function zoneOutcome(spec: NetworkInterfaceSpec, outcome: ChangeOutcome): ChangeOutcome {
  if (outcome.kind === 'applied' || spec.zone === undefined) return outcome;
  if (outcome.message.includes(`(${FailureType.ZoneNotFound}: `)) {
    return { ...outcome, type: FailureType.ZoneNotFound, message: `spec.zone: zone "${spec.zone}" does not exist on node ${spec.node}; create it there (a change's zones, or a VLANPolicy), then edit this object to apply it again. ${outcome.message}` };
  }
  if (outcome.message.includes(`(${FailureType.ZoneMembershipConflict}: `)) {
    return { ...outcome, type: FailureType.ZoneMembershipConflict, message: `spec.zone: interface ${spec.name} is already in another zone on node ${spec.node}; an interface belongs to at most one zone. ${outcome.message}` };
  }
  return outcome;
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
  const previousMember = (obj: StoredObject): ZoneMember | undefined => {
    const member = obj.status?.zoneMember as Partial<ZoneMember> | undefined;
    return typeof member?.zone === 'string' && typeof member.interface === 'string' ? { zone: member.zone, interface: member.interface } : undefined;
  };
  return {
    apiVersion: FOS1_NETWORK_API_VERSION,
    kind: 'NetworkInterface',
    plural: 'networkinterfaces',
    async apply(obj, starting): Promise<ChangeOutcome> {
      const spec = obj.spec as NetworkInterfaceSpec;
      const generation = obj.metadata.generation ?? 0;
      const changeId = objectChangeId('nif', obj, { generation });
      // The CRD admits DNS-style names; node zones are nft set name parts (model/node-state.ts).
      if (spec.zone !== undefined && !ZONE_NAME.test(spec.zone)) {
        return { kind: 'failed', changeId, workflowId: '', type: 'InvalidSpec', message: `spec.zone: "${spec.zone}" is not a zone name: a lowercase letter, then up to 23 lowercase letters, digits or "_"` };
      }
      const iface = {
        name: spec.name,
        ...(spec.type === 'vlan' && spec.parent && spec.vlanId ? { vlan: { parent: spec.parent, id: spec.vlanId } } : {}),
        ...(spec.mtu !== undefined ? { mtu: spec.mtu } : {}),
        up: true,
        ...(spec.addresses !== undefined ? { addresses: spec.addresses } : {}),
      };
      const patch = { interfaces: { upsert: [iface], remove: [] }, ...zoneMembersPatch(zoneMembersFor(spec, previousMember(obj))) };
      return zoneOutcome(spec, await options.runner.run(request(obj, changeId, `${ref(obj)} generation ${generation}`, patch), starting));
    },
    cleanup(obj, starting): Promise<ChangeOutcome> {
      const spec = obj.spec as NetworkInterfaceSpec;
      // Leaves the zone it was put in, and `spec.zone` (a join the controller may not have recorded: leaving a zone the interface is not in changes nothing).
      const asked = spec.zone !== undefined && ZONE_NAME.test(spec.zone) ? zoneMembersFor(spec, undefined).join : [];
      const previous = previousMember(obj);
      const leave = [...(previous ? [previous] : []), ...asked.filter((m) => !(previous && previous.zone === m.zone && previous.interface === m.interface))];
      const members = zoneMembersPatch({ join: [], leave: leave.filter((m, i) => leave.findIndex((o) => o.interface === m.interface) === i) });
      const patch =
        spec.type === 'vlan'
          ? { interfaces: { upsert: [], remove: [spec.name] }, ...members }
          : { interfaces: { upsert: spec.addresses !== undefined ? [{ name: spec.name, addresses: [] }] : [], remove: [] }, ...members };
      return options.runner.run(request(obj, objectChangeId('nif', obj, 'delete'), `${ref(obj)} deleted`, patch), starting);
    },
    statusFields(obj, outcome) {
      const spec = obj.spec as NetworkInterfaceSpec;
      // Applied: the interface is in `spec.zone` now (or in none). Otherwise the node is as before.
      const member = outcome.kind === 'applied' ? zoneMembersFor(spec, undefined).join[0] : previousMember(obj);
      return member ? { zoneMember: member } : {};
    },
  };
}
