/** Change ids the controllers derive from an object and its generation (controllers/change-runner.ts). */
import { objectChangeId, objectProvenance } from '../../controllers/change-runner';
import type { StoredObject } from '../../k8s/client';

const obj = (name: string, uid = 'u-1', namespace = 'routers'): StoredObject => ({ apiVersion: 'network.fos1.io/v1alpha1', kind: 'NetworkInterface', metadata: { name, namespace, uid } });
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

describe('objectChangeId', () => {
  it('is the same for the same object and generation, and differs by generation, by delete, and by uid (a re-created object)', () => {
    const a = objectChangeId('nif', obj('lan'), { generation: 3 });
    expect(a).toMatch(/^nif-lan-[a-z0-9]+-g3$/);
    expect(objectChangeId('nif', obj('lan'), { generation: 3 })).toBe(a);
    expect(objectChangeId('nif', obj('lan'), { generation: 4 })).not.toBe(a);
    expect(objectChangeId('nif', obj('lan'), 'delete')).toBe(a.replace(/-g3$/, '-del'));
    expect(objectChangeId('nif', obj('lan', 'u-2'), { generation: 3 })).not.toBe(a);
    expect(objectChangeId('nif', obj('lan', 'u-1', 'other'), { generation: 3 })).not.toBe(a);
  });

  it('is a DNS label of at most 63 characters whatever the name (long names are cut, dots become dashes)', () => {
    for (const name of ['a', 'x'.repeat(253), 'router-1.lan0.10', 'ends-with-dash-'.repeat(10)]) {
      const id = objectChangeId('vlp', obj(name), { generation: 123456 });
      expect(id.length).toBeLessThanOrEqual(63);
      expect(id).toMatch(DNS_LABEL);
      expect(id).toMatch(/-g123456$/);
    }
  });

  it('a forced reconcile gets its own id: the tag after the generation, cut to a DNS label', () => {
    const plain = objectChangeId('vlp', obj('lan'), { generation: 2 });
    const forced = objectChangeId('vlp', obj('lan'), { generation: 2, forced: 'z1234' });
    expect(forced).toBe(`${plain}-z1234`);
    expect(objectChangeId('vlp', obj('lan'), { generation: 2, forced: 'z1235' })).not.toBe(forced);
    const long = objectChangeId('vlp', obj('x'.repeat(253)), { generation: 123456, forced: 'Z_99999999999999999999' });
    expect(long.length).toBeLessThanOrEqual(63);
    expect(long).toMatch(DNS_LABEL);
    expect(long).toMatch(/-g123456-z999999999999999$/);
  });
});

describe('objectProvenance', () => {
  it('names the uid, the resourceVersion and the field managers that last wrote the spec (newest first), never a user', () => {
    const o: StoredObject = {
      ...obj('lan'),
      metadata: {
        ...obj('lan').metadata,
        resourceVersion: '42',
        managedFields: [
          { manager: 'kubectl-client-side-apply', operation: 'Update', time: '2026-05-01T10:00:00Z', fieldsType: 'FieldsV1', fieldsV1: { 'f:metadata': {}, 'f:spec': { 'f:mtu': {} } } },
          { manager: 'fos1-controller', operation: 'Apply', time: '2026-05-01T10:00:05Z', subresource: 'status', fieldsType: 'FieldsV1', fieldsV1: { 'f:status': {} } },
          { manager: 'fos1-controller', operation: 'Update', time: '2026-05-01T10:00:04Z', fieldsType: 'FieldsV1', fieldsV1: { 'f:metadata': { 'f:finalizers': {} } } },
          { manager: 'helm', operation: 'Update', time: '2026-05-01T11:00:00Z', fieldsType: 'FieldsV1', fieldsV1: { 'f:spec': { 'f:addresses': {} } } },
        ],
      },
    };
    expect(objectProvenance(o)).toBe('uid u-1, resourceVersion 42; spec last written by field manager "helm" (Update 2026-05-01T11:00:00Z), "kubectl-client-side-apply" (Update 2026-05-01T10:00:00Z) (a client-chosen name, not the user)');
    expect(objectProvenance(obj('lan'))).toBe('uid u-1, resourceVersion unknown');
  });
});
