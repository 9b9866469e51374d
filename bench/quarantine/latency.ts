/**
 * Decision-to-isolation latency of quarantine: a quarantine decision signalled to the
 * enforcement workflow → the quarantine label on the pod, as the apiserver returns it (from
 * then on the pod is selected by the policy; Cilium's own reaction to the label is not part
 * of this, there is no Cilium agent here). Real kube-apiserver + etcd (k8s/harness.ts) with
 * Cilium's CRDs, real Temporal dev server (the built CLI), the cluster worker with the Cilium
 * and quarantine activities.
 *
 *   npx tsx bench/quarantine/latency.ts [--samples 20] [--json bench/quarantine/results/latency.json]
 *
 * Contenders, side by side in one run, each on its own fresh pod per sample:
 *   fos1 path           — signalWithStart(enforcementWorkflow) → guard → child quarantineWorkflow
 *                         (find pod → policy snapshot (already in place: skipped) → read label →
 *                         label → verify) → label visible
 *   quarantine workflow — quarantineWorkflow started directly (the child alone)
 *   label apply         — one server-side apply of the label from this process (the floor:
 *                         one apiserver write)
 * The pod is polled (GET) every 5 ms. Sample 0 of the fos1 path also creates the policy and
 * is reported apart as the cold start.
 */
import * as k8s from '@kubernetes/client-node';
import { writeFileSync, mkdirSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname } from 'node:path';
import { performance } from 'node:perf_hooks';
import pino from 'pino';
import type { KubeClient } from '../../k8s/client';
import { CLUSTER_TASK_QUEUE } from '../../model/naming';
import { parseQuarantineConfig } from '../../model/quarantine';
import { enforcementWorkflowId } from '../../model/enforcement-decision';
import { testAuditStores } from '../../test/helpers/audit-stores';
import { startKubeWithCrds } from '../../test/helpers/kube';
import { startTemporal, workflowBundle } from '../../test/helpers/temporal';
import { createNodeDeps, createWorkers } from '../../workers/fos1-worker';
import { enforcementWorkflow, verdictSignal } from '../../workflows/enforcement';
import { quarantineWorkflow, type QuarantineResult } from '../../workflows/quarantine';

const args = process.argv.slice(2);
const samples = Number(args[args.indexOf('--samples') + 1] ?? 20) || 20;
const jsonOut = args.includes('--json') ? args[args.indexOf('--json') + 1] : undefined;
const NS = 'bench-quarantine';
const LABEL = 'fos1.io/quarantine=true';
const logger = pino({ level: 'silent' });

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

async function main(): Promise<void> {
  const [kube, env] = await Promise.all([startKubeWithCrds(), startTemporal()]);
  const client: KubeClient = kube.client;
  const core = client.config.makeApiClient(k8s.CoreV1Api);
  await client.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } });
  const workers = await createWorkers({
    connection: env.nativeConnection,
    namespace: env.namespace ?? 'default',
    nodeName: 'bench-q',
    clusterWorker: true,
    // Every workflow waits for its audit records to be stored (a file store in a temporary folder).
    audit: testAuditStores(),
    // The node worker only reports the node's protected addresses (the guard's defaults), read in this process's namespace.
    nodeDeps: createNodeDeps({ netns: undefined, routeProtocol: 241, bpfPinDir: '/sys/fs/bpf/fos1-unused-bench', blocklistMaxEntries: { v4: 16, v6: 16 } }, logger),
    ciliumDeps: { kube: client, fieldManager: 'fos1', logger },
    quarantineDeps: { kube: client, fieldManager: 'fos1', config: parseQuarantineConfig({}), logger },
    logger,
    workflowBundle: await workflowBundle(),
  });
  const running = Promise.all(workers.map((w) => w.run()));

  let next = 0;
  async function createPod(): Promise<{ name: string; ip: string }> {
    const n = next++;
    const name = `p${n}`;
    const ip = `10.250.${n >> 8}.${n & 255}`;
    await client.create({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: NS }, spec: { nodeName: 'node-1', containers: [{ name: 'c', image: 'registry.k8s.io/pause:3.10' }] } });
    const pod = await core.readNamespacedPod({ name, namespace: NS });
    pod.status = { phase: 'Running', podIP: ip, podIPs: [{ ip }] };
    await core.replaceNamespacedPodStatus({ name, namespace: NS, body: pod });
    return { name, ip };
  }
  async function waitForLabel(name: string, started: number, timeoutMs = 60_000): Promise<number> {
    for (;;) {
      const pod = await client.get({ apiVersion: 'v1', kind: 'Pod', namespace: NS, name });
      if (pod?.metadata.labels?.['fos1.io/quarantine'] === 'true') return performance.now() - started;
      if (performance.now() - started > timeoutMs) throw new Error(`${name} not labelled within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  const results: Record<string, number[]> = { 'fos1 path': [], 'quarantine workflow': [], 'label apply': [] };
  const steps: Record<string, number[]> = {};
  let cold: number | undefined;
  try {
    for (let i = 0; i <= samples; i++) {
      const [a, b, c] = [await createPod(), await createPod(), await createPod()];

      let t0 = performance.now();
      await env.client.workflow.signalWithStart(enforcementWorkflow, {
        workflowId: enforcementWorkflowId(`${a.ip}/32`),
        taskQueue: CLUSTER_TASK_QUEUE,
        args: [{ target: `${a.ip}/32`, nodes: ['bench-q'] }],
        signal: verdictSignal,
        signalArgs: [
          { rule: 'bench', action: 'quarantine', target: `${a.ip}/32`, durationMs: 3_600_000, escalation: { factor: 2, maxDurationMs: 3_600_000 }, memoryMs: 0, quarantineLabel: LABEL, reason: 'bench', evidence: { source: 'suricata', eventType: 'alert', timestamp: new Date().toISOString() } },
        ],
      });
      const full = await waitForLabel(a.name, t0);
      if (i === 0) cold = full;
      else results['fos1 path']!.push(full);

      t0 = performance.now();
      const handle = await env.client.workflow.start(quarantineWorkflow, { taskQueue: CLUSTER_TASK_QUEUE, workflowId: `bench-q-${i}`, args: [{ changeId: `bench-q-${i}`, author: 'bench', operation: 'apply', target: b.ip, label: LABEL }] });
      const direct = await waitForLabel(b.name, t0);
      const result: QuarantineResult = await handle.result();
      if (i > 0) {
        results['quarantine workflow']!.push(direct);
        for (const r of result.audit) (steps[r.step] ??= []).push(r.durationMs);
      }

      t0 = performance.now();
      await client.apply({ apiVersion: 'v1', kind: 'Pod', metadata: { name: c.name, namespace: NS, labels: { 'fos1.io/quarantine': 'true' } } }, { fieldManager: 'bench' });
      const floor = await waitForLabel(c.name, t0);
      if (i > 0) results['label apply']!.push(floor);
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    for (const w of workers) w.shutdown();
    await running;
    await env.teardown();
    await kube.stop();
  }
  const rows = Object.entries(results).map(([contender, values]) => {
    const sorted = [...values].sort((x, y) => x - y);
    return { contender, samples: sorted.length, p50: percentile(sorted, 50), p90: percentile(sorted, 90), p99: percentile(sorted, 99), max: sorted[sorted.length - 1]! };
  });
  const meta = { node: process.version, samples, coldStartMs: Number(cold?.toFixed(1)), loadavg: loadavg().map((l) => Number(l.toFixed(2))), at: new Date().toISOString() };
  const fmt = (ms: number) => (ms >= 10 ? ms.toFixed(0) : ms.toFixed(2));
  console.log(`Quarantine decision-to-label latency, ${samples} samples each (load average ${meta.loadavg.join(' ')}; cold start of the fos1 path, policy created: ${fmt(cold ?? 0)} ms)`);
  console.log('| contender | p50 ms | p90 ms | p99 ms | max ms | p50 vs fos1 path |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
  const base = rows[0]!.p50;
  for (const r of rows) console.log(`| ${r.contender} | ${fmt(r.p50)} | ${fmt(r.p90)} | ${fmt(r.p99)} | ${fmt(r.max)} | ${(r.p50 / base).toFixed(3)} |`);
  const stepRows = Object.entries(steps).map(([step, values]) => ({ step, p50: percentile([...values].sort((x, y) => x - y), 50) }));
  console.log('\nquarantineWorkflow steps (audit durations, p50 ms): ' + stepRows.map((r) => `${r.step} ${r.p50}`).join(', '));
  if (jsonOut) {
    mkdirSync(dirname(jsonOut), { recursive: true });
    writeFileSync(jsonOut, `${JSON.stringify({ meta, rows, quarantineSteps: stepRows }, null, 2)}\n`);
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
