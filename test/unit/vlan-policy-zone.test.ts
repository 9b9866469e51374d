import type { StoredObject } from '../../k8s/client';
import { planVlanZone, VlanPolicyDependents, type VlanPeer } from '../../controllers/vlan-policy-controller';

const peer = (ref: string, applied: boolean, nodes: string[]): VlanPeer => ({ ref, applied, nodes });

describe('planVlanZone', () => {
  it('allowTo becomes allow rules towards the VLAN zones, the router itself is always allowed, the default is deny unless allow', () => {
    const plan = planVlanZone({ vlanId: 10, allowTo: [30, 20], subnets: ['10.0.10.0/24'] }, 'ns', ['r1'], ['lan0.10'], new Map([[20, peer('ns/b', true, ['r1'])], [30, peer('ns/c', true, ['r1', 'r2'])]]));
    expect(plan).toEqual({
      ok: true,
      zone: {
        name: 'vlan10',
        id: 10,
        interfaces: ['lan0.10'],
        prefixes: ['10.0.10.0/24'],
        policy: { default: 'deny', rules: [{ to: 'host', action: 'allow' }, { to: 'vlan20', action: 'allow' }, { to: 'vlan30', action: 'allow' }] },
      },
    });
    const open = planVlanZone({ vlanId: 10, defaultAction: 'allow' }, 'ns', ['r1'], ['lan0.10'], new Map());
    expect(open.ok && open.zone.policy).toEqual({ default: 'allow', rules: [{ to: 'host', action: 'allow' }] });
  });

  it('waits, naming spec.allowTo[i], for a VLAN with no policy, one not applied, or one missing on a node', () => {
    const nodes = ['r1', 'r2'];
    expect(planVlanZone({ vlanId: 10, allowTo: [20] }, 'ns', nodes, [], new Map())).toMatchObject({ ok: false, type: 'WaitingForZone', message: expect.stringMatching(/^spec\.allowTo\[0\]: no VLANPolicy for VLAN 20 in namespace ns/) });
    expect(planVlanZone({ vlanId: 10, allowTo: [20] }, 'ns', nodes, [], new Map([[20, peer('ns/b', false, nodes)]]))).toMatchObject({ ok: false, type: 'WaitingForZone', message: expect.stringContaining('VLANPolicy ns/b (VLAN 20) is not Applied') });
    expect(planVlanZone({ vlanId: 10, allowTo: [20] }, 'ns', nodes, [], new Map([[20, peer('ns/b', true, ['r1'])]]))).toMatchObject({ ok: false, type: 'WaitingForZone', message: expect.stringContaining('not carried by node(s) r2') });
  });

  it('refuses as InvalidSpec its own VLAN, or VLANs that cannot be zones, naming the field', () => {
    expect(planVlanZone({ vlanId: 300 }, 'ns', ['r1'], [], new Map())).toMatchObject({ ok: false, type: 'InvalidSpec', message: expect.stringMatching(/^spec\.vlanId: 300/) });
    expect(planVlanZone({ vlanId: 10, allowTo: [20, 10] }, 'ns', ['r1'], [], new Map())).toMatchObject({ ok: false, type: 'InvalidSpec', message: expect.stringMatching(/^spec\.allowTo\[1\]: 10 is this policy's own VLAN/) });
    expect(planVlanZone({ vlanId: 10, allowTo: [4000] }, 'ns', ['r1'], [], new Map())).toMatchObject({ ok: false, type: 'InvalidSpec', message: expect.stringMatching(/^spec\.allowTo\[0\]: VLAN 4000 cannot be a zone/) });
  });
});

describe('VlanPolicyDependents', () => {
  let rv = 0;
  const policy = (name: string, vlanId: number, allowTo: number[], state: 'applied' | 'waiting' | 'none', extra: Partial<StoredObject['metadata']> = {}): StoredObject => ({
    apiVersion: 'network.fos1.io/v1alpha1',
    kind: 'VLANPolicy',
    metadata: { name, namespace: 'ns', uid: name, generation: 1, resourceVersion: String(++rv), ...extra },
    spec: { vlanId, allowTo },
    status:
      state === 'none'
        ? {}
        : { observedGeneration: 1, conditions: state === 'applied' ? [{ type: 'Applied', status: 'True', observedGeneration: 1 }] : [{ type: 'Applied', status: 'False', observedGeneration: 1 }, { type: 'Failed', status: 'True', reason: 'WaitingForZone', observedGeneration: 1 }] },
  });

  it('forces the policies allowing a VLAN when its readiness changes, never in a loop', () => {
    const forced: string[] = [];
    const d = new VlanPolicyDependents((obj, tag) => forced.push(`${obj.metadata.name}:${tag}`));
    d.seen(policy('a', 10, [20], 'waiting'), false);
    d.seen(policy('b', 20, [], 'none'), false);
    expect(forced).toEqual([]); // b not applied yet: a keeps waiting
    const bApplied = policy('b', 20, [], 'applied');
    d.seen(bApplied, false);
    expect(forced).toEqual([`a:z${bApplied.metadata.resourceVersion}`]);
    // b's status written again (still applied): nothing new.
    d.seen(policy('b', 20, [], 'applied'), false);
    expect(forced).toHaveLength(1);
    // a's own events (applied now) force nobody that does not allow VLAN 10.
    d.seen(policy('a', 10, [20], 'applied'), false);
    expect(forced).toHaveLength(1);
    // b deleted: a (applied, allowing 20) is reconciled again.
    d.seen(policy('b', 20, [], 'applied', { deletionTimestamp: '2026-12-02T00:00:00Z' }), false);
    expect(forced).toHaveLength(2);
    expect(forced[1]).toMatch(/^a:z\d+$/);
  });

  it('after a restart (first sighting) forces only a policy that waits for a now-applied VLAN', () => {
    const forced: string[] = [];
    const d = new VlanPolicyDependents((obj) => forced.push(obj.metadata.name));
    d.seen(policy('a', 10, [20], 'waiting'), false);
    d.seen(policy('c', 30, [20], 'applied'), false);
    d.seen(policy('b', 20, [], 'applied'), false);
    expect(forced).toEqual(['a']);
  });
});
