/** Label selectors with Kubernetes' semantics, and the inventory's validation. */
import { labelSelectorSchema, matchesSelector, parseInventory, selectNodes, type InventoryNode } from '../../model/inventory';

const fleet: InventoryNode[] = [
  { name: 'router-1', labels: { site: 'ams', role: 'edge', 'topology.kubernetes.io/zone': 'a' } },
  { name: 'router-2', labels: { site: 'ams', role: 'core' } },
  { name: 'router-3', labels: { site: 'fra', role: 'edge', canary: '' } },
];
const names = (selector: Parameters<typeof selectNodes>[1]) => selectNodes(fleet, selector).map((n) => n.name);

describe('label selectors', () => {
  it('matches every node with an empty selector', () => {
    expect(names({})).toEqual(['router-1', 'router-2', 'router-3']);
  });

  it('ANDs matchLabels and matchExpressions', () => {
    expect(names({ matchLabels: { site: 'ams' } })).toEqual(['router-1', 'router-2']);
    expect(names({ matchLabels: { site: 'ams', role: 'edge' } })).toEqual(['router-1']);
    expect(names({ matchLabels: { site: 'ams' }, matchExpressions: [{ key: 'role', operator: 'NotIn', values: ['edge'] }] })).toEqual(['router-2']);
  });

  it('implements In, NotIn (true without the key), Exists and DoesNotExist', () => {
    expect(names({ matchExpressions: [{ key: 'site', operator: 'In', values: ['fra', 'lon'] }] })).toEqual(['router-3']);
    expect(names({ matchExpressions: [{ key: 'topology.kubernetes.io/zone', operator: 'NotIn', values: ['a'] }] })).toEqual(['router-2', 'router-3']);
    expect(names({ matchExpressions: [{ key: 'canary', operator: 'Exists' }] })).toEqual(['router-3']);
    expect(names({ matchExpressions: [{ key: 'canary', operator: 'DoesNotExist' }] })).toEqual(['router-1', 'router-2']);
    expect(matchesSelector({ matchExpressions: [{ key: 'site', operator: 'In', values: ['ams'] }] }, {})).toBe(false);
  });

  it('refuses In without values and Exists with values, naming the field', () => {
    const inNoValues = labelSelectorSchema.safeParse({ matchExpressions: [{ key: 'site', operator: 'In' }] });
    expect(inNoValues.error?.issues[0]).toMatchObject({ path: ['matchExpressions', 0, 'values'], message: 'must list at least one value for In' });
    const existsValues = labelSelectorSchema.safeParse({ matchExpressions: [{ key: 'site', operator: 'Exists', values: ['x'] }] });
    expect(existsValues.error?.issues[0]?.message).toBe('must be empty for Exists');
    const badOp = labelSelectorSchema.safeParse({ matchExpressions: [{ key: 'site', operator: 'Gt', values: ['1'] }] });
    expect(badOp.error?.issues[0]?.message).toBe('must be In, NotIn, Exists or DoesNotExist');
  });
});

describe('inventory', () => {
  it('accepts nodes with labels (labels default to none)', () => {
    expect(parseInventory([{ name: 'router-1', labels: { site: 'ams' } }, { name: 'router-2' }])).toEqual({
      ok: true,
      nodes: [
        { name: 'router-1', labels: { site: 'ams' } },
        { name: 'router-2', labels: {} },
      ],
    });
  });

  it('names the bad field: duplicate names, bad names, bad label values', () => {
    const r = parseInventory([{ name: 'router-1' }, { name: 'router-1' }, { name: 'Router_3' }, { name: 'router-4', labels: { site: 'a b' } }]);
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.issues.map((i) => i.field).sort()).toEqual(['[1].name', '[2].name', '[3].labels.site']);
    expect(r.issues.find((i) => i.field === '[1].name')?.message).toBe('"router-1" is listed twice');
  });
});

it('names a bad label key at its own path', () => {
  const r = parseInventory([{ name: 'router-1', labels: { 'bad key': 'x' } }]);
  expect(r).toEqual({ ok: false, issues: [{ field: '[0].labels.bad key', message: expect.stringContaining('key: must be a Kubernetes label key') }] });
});
