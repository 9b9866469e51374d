/**
 * The kube-apiserver down for the Cilium step (issue 16, item 1): a change that carries cluster
 * policy (`clusterPolicy`, workflows/cluster-policy-step.ts) and node state, with the apiserver
 * stopped at each boundary of the cluster policy step and started again:
 *
 * - before the apply (the plan is validated and snapshotted, nothing written yet);
 * - after the apply, before its read-back and the node steps (objects written, no node touched);
 * - before the restore of a rollback (the node failed its verification and is restored);
 * - after the restore, before its read-back.
 *
 * Each change stands at its step (the cluster worker's Kubernetes client holds its first
 * request there, test/chaos/chaos-worker.ts), then the apiserver is stopped and every change
 * let go; the apiserver stays down until each change has found it down more times than the old
 * retry policy of the apply allowed (5 attempts) — the outage every change must outlast — and is
 * started again (same port, certificates and etcd). Every change must then end `applied` (the
 * Cilium objects and the node as planned) or `rolled-back` (the objects exactly as before, same
 * uid, and the node equal to its snapshot), by read-back; nothing else.
 *
 * Privileged: needs root, netns, bpffs, the built Temporal CLI and kube-apiserver + etcd.
 */
import { appendFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { normaliseDocument } from '../../activities/cluster-policy';
import type { KubeApiServer } from '../../k8s/harness';
import type { ChangeRequestInput } from '../../model/change-request';
import type { KubeObject } from '../../model/firewall-translate';
import { changeWorkflowId } from '../../model/naming';
import { eventually } from '../helpers/eventually';
import { describeKube, startKubeWithCrds } from '../helpers/kube';
import type { ClusterStep } from './chaos-worker';
import { ChaosHarness, judge, type CellResult } from './harness';

/** More failed requests than the old apply policy's 5 attempts: every change outlasts an outage it would have given up in. */
const OUTAGE_FAILURES = 6;
const CHANGE_DEADLINE_MS = 10 * 60_000;
const MAX_RECOVERY_MS = process.env.FOS1_CHAOS_MAX_RECOVERY_MS ? Number(process.env.FOS1_CHAOS_MAX_RECOVERY_MS) : undefined;

/** The cells: the step the change stands at when the apiserver goes down, and whether its node fails verification (so it rolls back). */
const CELLS: { name: string; stop: ClusterStep; failVerify: boolean }[] = [
  { name: 'cp-apply', stop: 'cluster policy: apply', failVerify: false },
  { name: 'cp-verify', stop: 'cluster policy: verify', failVerify: false },
  { name: 'cp-restore', stop: 'cluster policy: restore', failVerify: true },
  { name: 'cp-verify-restore', stop: 'cluster policy: verify restore', failVerify: true },
];
const STEP_LABEL: Record<string, string> = {
  'cluster policy: apply': 'cluster policy: apply (before)',
  'cluster policy: verify': 'cluster policy: apply (after), before its read-back and the node steps',
  'cluster policy: restore': 'cluster policy: restore (before), node restored',
  'cluster policy: verify restore': 'cluster policy: restore (after), before its read-back',
};

/** A CiliumNetworkPolicy as an operator writes it (the change's namespace). */
function allowWeb(port: string, name = 'allow-web'): KubeObject {
  return { apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name }, spec: { endpointSelector: { matchLabels: { app: 'web' } }, ingress: [{ fromEntities: ['world'], toPorts: [{ ports: [{ port, protocol: 'TCP' }] }] }] } };
}

describeKube('chaos: the kube-apiserver down during the Cilium step (privileged)', ['root', 'netns', 'bpffs', 'temporal-cli'], () => {
  const h = new ChaosHarness();
  let kube: KubeApiServer;
  const results: CellResult[] = [];

  beforeAll(async () => {
    kube = await startKubeWithCrds();
    await h.start();
    h.kube = kube.connection;
    for (const c of CELLS) {
      h.addNode(c.name, 'apiserver');
      await kube.client.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: `fos1-chaos-${c.name}` } });
      // The state before: policy v1 (port 80), written by fos1's field manager as an earlier change would have.
      await kube.client.apply({ ...allowWeb('80'), metadata: { name: 'allow-web', namespace: `fos1-chaos-${c.name}` } }, { fieldManager: 'fos1' });
    }
  }, 300_000);

  afterAll(async () => {
    const table = `${resultsRows(results)}\n\nLoad average at the end: ${loadavg().map((l) => l.toFixed(1)).join(' ')} (2 cores).`;
    console.log(`apiserver-down results:\n${table}`);
    if (process.env.FOS1_CHAOS_REPORT) appendFileSync(process.env.FOS1_CHAOS_REPORT, `${table}\n`);
    await h.terminateLeftovers().catch(() => undefined);
    await h.destroy();
    await kube?.stop();
  }, 120_000);

  /** The Cilium policies in a cell's namespace, normalised, with their uids, by name. */
  async function policies(cell: string): Promise<Record<string, { uid: string; doc: KubeObject }>> {
    const out: Record<string, { uid: string; doc: KubeObject }> = {};
    for (const item of (await kube.client.list('cilium.io/v2', 'CiliumNetworkPolicy', { namespace: `fos1-chaos-${cell}` })).items) out[item.metadata.name] = { uid: item.metadata.uid ?? '', doc: normaliseDocument(item) };
    return out;
  }

  test('the apiserver stopped before the apply, after it, before the restore and after it, then started again: every change ends applied (objects and node as planned) or rolled back (objects exactly as before, node equal to its snapshot)', async () => {
    await h.startRound(new Map(CELLS.map((c) => [c.name, { failVerify: c.failVerify }])), { clusterGroup: 'cluster' });
    let salt = Number(process.pid % 1000) * 11;
    const cells = await Promise.all(
      CELLS.map(async (c) => {
        const { request, added } = h.request('network', c.name, ++salt);
        const nodeBefore = await h.readState('network', c.name);
        const full = { ...request, clusterPolicy: { namespace: `fos1-chaos-${c.name}`, cilium: [allowWeb('443'), allowWeb('8443', 'allow-admin')] } } as ChangeRequestInput;
        return { ...c, request: full, nodeBefore, nodePlanned: h.planned('network', nodeBefore, added), clusterBefore: await policies(c.name), workflowId: changeWorkflowId(full.id) };
      }),
    );
    h.setClusterBehaviour(Object.fromEntries(cells.map((c) => [c.workflowId, { name: c.name, stop: c.stop }])));
    const startedAt = Date.now();
    for (const c of cells) await h.startChange(c.request);
    await eventually(() => cells.filter((c) => !h.clusterStopped(c.name)).map((c) => c.name), (left) => left.length === 0, 'every change standing at its cluster policy step (the list: those not yet)', 300_000);

    // The fault: the apiserver down while each change goes on into its step.
    const faultAt = Date.now();
    await kube.stopApiServer();
    for (const c of cells) h.releaseCluster(c.name);
    await eventually(() => cells.filter((c) => h.unreachableCount(c.name) < OUTAGE_FAILURES).map((c) => `${c.name}: ${h.unreachableCount(c.name)}`), (left) => left.length === 0, `every change finding the apiserver down ${OUTAGE_FAILURES} times (the list: those not yet)`, 300_000);
    await kube.startApiServer();
    const backAt = Date.now();

    for (const c of cells) {
      let phase: string;
      try {
        phase = (await h.result(c.workflowId, CHANGE_DEADLINE_MS)).phase;
      } catch (err) {
        phase = `no result (${err instanceof Error ? err.message.split('\n')[0] : String(err)})`;
      }
      const endedAt = Date.now();
      const node = judge(phase, await h.readState('network', c.name), c.nodeBefore, c.nodePlanned);
      const cluster = clusterVerdict(phase, await policies(c.name), c.clusterBefore);
      results.push({
        fault: 'kube-apiserver down',
        kind: 'network',
        step: STEP_LABEL[c.stop] ?? c.stop,
        node: c.name,
        phase,
        converged: node.converged && cluster.converged,
        detail: [node.detail, cluster.detail].join('; '),
        recoveryMs: endedAt - backAt,
        faultToEndMs: endedAt - faultAt,
        totalMs: endedAt - startedAt,
      });
    }
    expect(results.filter((r) => !r.converged).map((r) => `${r.step}: ${r.phase}: ${r.detail}`)).toEqual([]);
    // Where each change was sent: the two that reach their node's verification unharmed apply; the two made to fail it roll back.
    expect(results.map((r) => `${r.node}: ${r.phase}`)).toEqual(CELLS.map((c) => `${c.name}: ${c.failVerify ? 'rolled-back' : 'applied'}`));
    if (MAX_RECOVERY_MS !== undefined) expect(results.filter((r) => (r.recoveryMs ?? 0) > MAX_RECOVERY_MS).map((r) => `${r.step}: ${r.recoveryMs} ms`)).toEqual([]);
  }, 20 * 60_000);
});

/** Applied: the two policies as the change wrote them (and nothing else); rolled back: every object exactly as before (same uid). */
function clusterVerdict(phase: string, after: Record<string, { uid: string; doc: KubeObject }>, before: Record<string, { uid: string; doc: KubeObject }>): { converged: boolean; detail: string } {
  const names = Object.keys(after).sort();
  if (phase === 'applied') {
    const want = { 'allow-admin': allowWeb('8443').spec, 'allow-web': allowWeb('443').spec };
    const ok = names.join(',') === 'allow-admin,allow-web' && names.every((n) => JSON.stringify(after[n]?.doc.spec) === JSON.stringify(want[n as keyof typeof want]));
    return ok ? { converged: true, detail: 'objects equal the plan' } : { converged: false, detail: `applied, but the objects differ from the plan: ${JSON.stringify(after)}` };
  }
  if (phase === 'rolled-back') {
    const ok = JSON.stringify(Object.keys(before).sort()) === JSON.stringify(names) && names.every((n) => after[n]?.uid === before[n]?.uid && JSON.stringify(after[n]?.doc) === JSON.stringify(before[n]?.doc));
    return ok ? { converged: true, detail: 'objects exactly as before' } : { converged: false, detail: `rolled back, but the objects differ from before: ${JSON.stringify(after)}` };
  }
  return { converged: false, detail: `ended ${phase}` };
}

/** The cells' rows, in the columns of RESULTS.md's fault table. */
function resultsRows(cells: CellResult[]): string {
  const secs = (ms: number | undefined) => (ms === undefined ? '–' : `${(ms / 1000).toFixed(1)} s`);
  const rows = cells.map((c) => `| ${c.fault} | ${c.step} | network + clusterPolicy | ${c.converged ? `${c.phase} ✓` : `**${c.phase}: ${c.detail}**`} | ${secs(c.recoveryMs)} | ${secs(c.faultToEndMs)} | ${secs(c.totalMs)} |`);
  return ['| Fault | Step (stopped there) | Change | Outcome (read back) | Back → end | Fault → end | Change total |', '|---|---|---|---|---:|---:|---:|', ...rows].join('\n');
}
