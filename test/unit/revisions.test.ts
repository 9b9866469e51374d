/**
 * Revisions: the merge of a change's delta over its parent, the diff in fos1's words, the
 * rollback request (and its refusals), content addressing and the file store's idempotency.
 */
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileRevisionStore, REVISIONS_FILE, RevisionIntegrityError } from '../../activities/audit-store/revisions';
import { validateChangeRequest } from '../../model/change-request';
import { applyRevisionDelta, diffRevisionStates, fleetRollbackRequest, rollbackRequest, type Revision, type RevisionCommit, type RevisionNetwork } from '../../model/revision';

const route = (destination: string) => ({ destination, gateway: '10.0.0.1', table: 254, metric: 0 });
const network = (...nets: string[]): RevisionNetwork => ({ interfaces: [], routes: nets.map(route), rules: [], zones: [], nat: { sourceNat: [], portForwards: [] } });
const full = (...nets: string[]) => ({ network: network(...nets), rateLimits: { mode: 'all' as const, entries: [] }, blocklist: { mode: 'entries' as const, entries: [{ cidr: '192.0.2.0/24' }] } });
const commit = (changeId: string, delta: RevisionCommit['nodes'][number]['delta'], node = 'n1'): RevisionCommit => ({ changeId, author: 'alice', approvers: [], reason: 'test', time: '2026-03-01T10:00:00.000Z', nodes: [{ node, delta }] });

describe('revision state', () => {
  test('a patch merges over the parent; a part never set stays unknown', () => {
    const first = applyRevisionDelta(undefined, { rateLimits: { mode: 'patch', present: [{ cidr: '198.51.100.1/32', pps: 10, burst: 10 }], absent: [] } });
    expect(first.rateLimits).toBeUndefined();
    const base = applyRevisionDelta(undefined, full('10.1.0.0/24'));
    const patched = applyRevisionDelta(base, { blocklist: { mode: 'patch', present: [{ cidr: '203.0.113.7/32', expiresAt: 2_000_000_000 }], absent: ['192.0.2.0/24'] } });
    expect(patched.blocklist).toEqual({ kind: 'entries', entries: [{ cidr: '203.0.113.7/32', expiresAt: 2_000_000_000 }] });
    expect(patched.network).toEqual(base.network);
  });

  test('the diff of two states is in fos1 words', () => {
    const a = applyRevisionDelta(undefined, full('10.1.0.0/24', '10.2.0.0/24'));
    const b = applyRevisionDelta(a, { network: network('10.1.0.0/24', '10.3.0.0/24'), blocklist: { mode: 'patch', present: [{ cidr: '203.0.113.7/32' }], absent: [] } });
    expect(diffRevisionStates(a, b)).toEqual(['+ route 10.3.0.0/24 via 10.0.0.1 table 254 metric 0', '- route 10.2.0.0/24 via 10.0.0.1 table 254 metric 0', '+ block 203.0.113.7/32 (no expiry)']);
    expect(diffRevisionStates(b, a)).toEqual(['+ route 10.2.0.0/24 via 10.0.0.1 table 254 metric 0', '- route 10.3.0.0/24 via 10.0.0.1 table 254 metric 0', '- block 203.0.113.7/32 (no expiry)']);
    expect(diffRevisionStates(a, a)).toEqual([]);
  });
});

describe('rollback request', () => {
  const revision = (state: Revision['state']): Revision => ({ id: 'f'.repeat(64), node: 'n1', number: 3, changeId: 'c3', author: 'alice', approvers: [], reason: 'r', time: '2026-03-01T10:00:00.000Z', stateHash: 'e'.repeat(64), state });

  test('a complete revision becomes a valid full-state change for its node; expired entries are left out', () => {
    const state = applyRevisionDelta(undefined, { ...full('10.1.0.0/24'), blocklist: { mode: 'entries', entries: [{ cidr: '192.0.2.0/24' }, { cidr: '198.51.100.0/24', expiresAt: 1000 }] } });
    const plan = rollbackRequest(revision(state), { id: 'rb-1', author: 'bob', now: Date.parse('2026-03-02T00:00:00Z') });
    expect(plan.ok).toBe(true);
    if (!plan.ok) return;
    const parsed = validateChangeRequest(plan.request, Date.parse('2026-03-02T00:00:00Z'));
    expect(parsed.ok).toBe(true);
    if (!parsed.ok) return;
    expect(parsed.request).toMatchObject({ id: 'rb-1', author: 'bob', targets: ['n1'] });
    expect(parsed.request.desired?.routes.map((r) => r.destination)).toEqual(['10.1.0.0/24']);
    expect(parsed.request.desired?.blocklist.map((e) => e.cidr)).toEqual(['192.0.2.0/24']);
  });

  test('a revision that does not know every part is refused, naming what is missing', () => {
    const plan = rollbackRequest(revision({ network: network('10.1.0.0/24') }), { id: 'rb-2', author: 'bob', now: 0 });
    expect(plan).toEqual({ ok: false, reasons: [expect.stringContaining("rate limits"), expect.stringContaining('blocklist')] });
  });

  test('a blocklist by reference is restored by its store sha256; with patches still in force on top it is refused', () => {
    const sha = 'a'.repeat(64);
    const byRef = applyRevisionDelta(undefined, { ...full('10.1.0.0/24'), blocklist: { mode: 'ref', ref: { sha256: sha }, digest: 'd', count: 5 } });
    const plan = rollbackRequest(revision(byRef), { id: 'rb-3', author: 'bob', now: 0 });
    expect(plan.ok && plan.request.desired).toMatchObject({ blocklistRef: { sha256: sha } });
    const patched = applyRevisionDelta(byRef, { blocklist: { mode: 'patch', present: [{ cidr: '203.0.113.7/32' }], absent: [] } });
    const refused = rollbackRequest(revision(patched), { id: 'rb-4', author: 'bob', now: 0 });
    expect(refused).toEqual({ ok: false, reasons: [expect.stringContaining(`store ${sha} with 1 entry patched on top`)] });
  });
});

describe('fleet rollback request', () => {
  const at = (node: string, state: Revision['state'], stateHash: string): Revision => ({ id: `${node.length}`.repeat(64), node, number: 2, changeId: 'c2', author: 'alice', approvers: [], reason: 'r', time: '2026-03-01T10:00:00.000Z', stateHash, state });
  const state = applyRevisionDelta(undefined, full('10.1.0.0/24'));

  test('revisions of one change that hold the same state become one change targeting every node', () => {
    const plan = fleetRollbackRequest('c2', [at('n1', state, 'a'.repeat(64)), at('node2', state, 'a'.repeat(64))], { id: 'rb-f', author: 'bob', now: 0 });
    expect(plan.ok).toBe(true);
    if (!plan.ok) return;
    expect(plan.request).toMatchObject({ id: 'rb-f', author: 'bob', targets: ['n1', 'node2'], reason: expect.stringContaining('to the revisions of change c2') });
    expect(validateChangeRequest(plan.request, 0).ok).toBe(true);
  });

  test('different states, or no revision at all, are refused, naming the nodes', () => {
    const differ = fleetRollbackRequest('c2', [at('n1', state, 'a'.repeat(64)), at('node2', applyRevisionDelta(undefined, full('10.2.0.0/24')), 'b'.repeat(64))], { id: 'rb-g', author: 'bob', now: 0 });
    expect(differ).toEqual({ ok: false, reasons: [expect.stringMatching(/different states \(n1: a{12}; node2: b{12}\)/)] });
    expect(fleetRollbackRequest('c9', [], { id: 'rb-h', author: 'bob', now: 0 })).toEqual({ ok: false, reasons: [expect.stringContaining('change c9 made no revision')] });
  });
});

describe('file revision store', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'fos1-rev-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  test('revisions chain per node, are content-addressed, and a retried commit writes nothing twice', async () => {
    const store = FileRevisionStore.open({ dir });
    const [r1] = await store.commit(commit('c1', full('10.1.0.0/24')));
    const [r2] = await store.commit(commit('c2', { network: network('10.2.0.0/24') }));
    const [again] = await store.commit(commit('c2', { network: network('10.2.0.0/24') }));
    expect(again).toEqual(r2);
    expect(r2).toMatchObject({ number: 2, parent: r1!.id });
    expect(r2!.state.blocklist).toEqual(r1!.state.blocklist);
    expect(r1!.id).toMatch(/^[0-9a-f]{64}$/);
    expect(readFileSync(join(dir, REVISIONS_FILE), 'utf8').trim().split('\n')).toHaveLength(2);
    expect((await store.list('n1')).map((r) => r.number)).toEqual([2, 1]);
    // Another node has its own line of revisions.
    const [other] = await store.commit(commit('c2', full('10.9.0.0/24'), 'n2'));
    expect(other).toMatchObject({ number: 1 });
    expect(other!.parent).toBeUndefined();
    await store.close();

    const reader = FileRevisionStore.open({ dir, readOnly: true });
    expect(await reader.get(r2!.id)).toEqual(r2);
    // A change's revisions, one per node it changed, by node name.
    expect((await reader.forChange('c2')).map((r) => r.node)).toEqual(['n1', 'n2']);
    expect(await reader.forChange('c9')).toEqual([]);
    // A torn last line (a crash mid-append) is not a revision.
    appendFileSync(join(dir, REVISIONS_FILE), '{"id":"half');
    expect((await reader.list('n1')).length).toBe(2);
    // The next writer starts on a fresh line and chains on from the newest whole revision.
    const writer = FileRevisionStore.open({ dir });
    const [r3] = await writer.commit(commit('c3', { network: network('10.3.0.0/24') }));
    await writer.close();
    expect(r3).toMatchObject({ number: 3, parent: r2!.id });
    expect((await reader.list('n1')).map((r) => r.number)).toEqual([3, 2, 1]);
  });

  test('a revision edited in the file no longer matches its id', async () => {
    const store = FileRevisionStore.open({ dir });
    const [r1] = await store.commit(commit('c1', full('10.1.0.0/24')));
    await store.close();
    const path = join(dir, REVISIONS_FILE);
    writeFileSync(path, readFileSync(path, 'utf8').replace('10.1.0.0/24', '10.1.1.0/24'));
    const reader = FileRevisionStore.open({ dir, readOnly: true });
    await expect(reader.get(r1!.id)).rejects.toThrow(RevisionIntegrityError);
  });
});
