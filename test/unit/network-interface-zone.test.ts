/**
 * NetworkInterface `spec.zone`, the pure parts: which zone membership operations a generation
 * (or the cleanup) asks for, and how a refusal on the node reads in the object's conditions.
 * The controller against a real apiserver, Temporal and node: test/integration/k8s-network-controllers.privileged.test.ts.
 */
import type { ChangeOutcome } from '../../controllers/change-runner';
import { type NetworkInterfaceSpec, zoneMembersFor, zoneOutcome } from '../../controllers/network-interface-controller';
import { nodePatchSchema } from '../../model/change-request';

const spec = (zone?: string): NetworkInterfaceSpec => ({ node: 'router-1', name: 'br0', type: 'bridge', ...(zone ? { zone } : {}) });

describe('zone membership operations of a NetworkInterface', () => {
  test('first zone: join only; same zone again: join (a no-op on the node); moved: leave the old, join the new; removed: leave', () => {
    expect(zoneMembersFor(spec('lan'), undefined)).toEqual({ join: [{ zone: 'lan', interface: 'br0' }], leave: [] });
    expect(zoneMembersFor(spec('lan'), { zone: 'lan', interface: 'br0' })).toEqual({ join: [{ zone: 'lan', interface: 'br0' }], leave: [] });
    expect(zoneMembersFor(spec('dmz'), { zone: 'lan', interface: 'br0' })).toEqual({ join: [{ zone: 'dmz', interface: 'br0' }], leave: [{ zone: 'lan', interface: 'br0' }] });
    expect(zoneMembersFor(spec(), { zone: 'lan', interface: 'br0' })).toEqual({ join: [], leave: [{ zone: 'lan', interface: 'br0' }] });
    expect(zoneMembersFor(spec(), undefined)).toEqual({ join: [], leave: [] });
    // A renamed interface: the old name leaves, the new one joins (both valid in one patch).
    const renamed = zoneMembersFor({ ...spec('lan'), name: 'br1' }, { zone: 'lan', interface: 'br0' });
    const part = (list: { zone: string; interface: string }[]) => list.map((m) => ({ zone: m.zone, interfaces: [m.interface] }));
    expect(nodePatchSchema.safeParse({ zoneMembers: { join: part(renamed.join), leave: part(renamed.leave) } }).success).toBe(true);
  });
});

describe('a refusal on the node in the object\'s words', () => {
  const failed = (message: string): ChangeOutcome => ({ kind: 'rolled-back', changeId: 'nif-x-g3', workflowId: 'change-nif-x-g3', type: 'ChangeRolledBack', message });

  test('ZoneNotFound and ZoneMembershipConflict name spec.zone and keep the node\'s message; other failures pass as they are', () => {
    const missing = zoneOutcome(spec('nosuch'), failed('change failed on node router-1 (ZoneNotFound: patch.zoneMembers.join[0].zone: zone "nosuch" is not a zone of the node nor of this patch (known: lan))'));
    expect(missing).toMatchObject({ kind: 'rolled-back', type: 'ZoneNotFound', message: expect.stringMatching(/^spec\.zone: zone "nosuch" does not exist on node router-1; .*\(ZoneNotFound: patch\.zoneMembers\.join\[0\]\.zone/) });
    const conflict = zoneOutcome(spec('lan'), failed('change failed on node router-1 (ZoneMembershipConflict: patch.zoneMembers.join[0].interfaces[0]: interface br0 is already in zone dmz; …)'));
    expect(conflict).toMatchObject({ type: 'ZoneMembershipConflict', message: expect.stringMatching(/^spec\.zone: interface br0 is already in another zone on node router-1/) });
    const other = failed('change failed on node router-1 (LinkApplyFailed: no such device)');
    expect(zoneOutcome(spec('lan'), other)).toBe(other);
    expect(zoneOutcome(spec(), failed('change failed on node router-1 (ZoneNotFound: …)'))).toMatchObject({ type: 'ChangeRolledBack' });
  });
});
