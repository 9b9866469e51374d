/**
 * Records the histories the replay test (test/replay) replays: every long-lived or
 * rollback-bearing workflow run through representative paths on a real Temporal dev server
 * (the CLI scripts/bootstrap.sh builds), with fake activities where the real ones need root,
 * a kernel or Kubernetes (test/helpers/fake-node.ts). A history only records what the
 * activities returned, so fakes record the same commands the workflow code issues in
 * production.
 *
 *   npx tsx scripts/record-histories.ts                          # writes test/replay/histories/*.json
 *   npx tsx scripts/record-histories.ts --only nodeChangeWorkflow  # writes only these types' files
 *   npx tsx scripts/record-histories.ts --suffix durable-audit     # writes <type>-<scenario>-durable-audit.json beside the others
 *
 * Re-record only on purpose (see docs/workflow-versioning.md): a history recorded from
 * today's code is what a running execution of today's code looks like, and the point of
 * the replay test is that new code still replays it. `--only` (workflow types, comma
 * separated) runs every scenario but writes only those types' histories, so re-recording
 * one workflow after a drained upgrade leaves the others' histories as they were. Workflows are named by their type
 * names, so the script does not depend on which file holds which workflow.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { WorkflowClient, type WorkflowHandle } from '@temporalio/client';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { bundleWorkflowCode, DefaultLogger, Runtime } from '@temporalio/worker';
import { CLUSTER_TASK_QUEUE, nodeLockWorkflowId, SearchAttributes } from '../model/naming';
import { FakeCluster, FakeNode, startFakeWorkers } from '../test/helpers/fake-node';
import { guardConfigSchema } from '../model/enforcement-guard';
import { historyToObject } from '../test/helpers/history-file';
import { temporalCliPath } from './paths';
import { workflowBundleOptions } from '../workers/workflow-bundle';

const OUT_DIR = resolve(__dirname, '..', 'test', 'replay', 'histories');
const COORDINATOR_ID = 'fos1-enforcement-coordinator';
/** The cluster worker's guard (the fake cluster's readEnforcementConfig): workflow inputs and requests carry none. */
const GUARD = guardConfigSchema.parse({ allowLists: { management: ['10.77.0.0/24'] }, minPrefixLengthV4: 24, minPrefixLengthV6: 64, maxActiveBlocks: 100, maxNewBlocksPerMinute: 60 });

/** One saved history: what the replay test needs, and where it came from. */
export interface RecordedHistory {
  workflowId: string;
  workflowType: string;
  scenario: string;
  /** The commit whose workflow code produced it. */
  recordedFrom: string;
  history: unknown;
}

/**
 * `--suffix NAME`: file names get `-NAME`, so histories of a patched code path are added
 * beside the pre-patch ones (which running executions still look like) instead of replacing them.
 */
function suffixArg(argv: string[]): string {
  const i = argv.indexOf('--suffix');
  if (i < 0) return '';
  const name = argv[i + 1] ?? '';
  if (!/^[a-z0-9][a-z0-9-]{0,40}$/.test(name)) throw new Error('--suffix needs a name of lowercase letters, digits and "-"');
  return `-${name}`;
}

/** The workflow types `--only` names (undefined: all). */
function onlyTypes(argv: string[]): Set<string> | undefined {
  const i = argv.indexOf('--only');
  if (i < 0) return undefined;
  const types = (argv[i + 1] ?? '').split(',').filter((t) => t !== '');
  if (types.length === 0) throw new Error('--only needs workflow types, e.g. --only nodeChangeWorkflow');
  return new Set(types);
}

async function main(): Promise<void> {
  const only = onlyTypes(process.argv.slice(2));
  const suffix = suffixArg(process.argv.slice(2));
  Runtime.install({ logger: new DefaultLogger('ERROR') });
  // The histories belong to the workflow code (and the model/rules code it runs) as committed.
  const sources = ['workflows', 'model', 'rules'];
  if (execFileSync('git', ['status', '--porcelain', '--', ...sources], { encoding: 'utf8' }).trim() !== '') {
    throw new Error(`uncommitted changes in ${sources.join(', ')}: commit first, so each history names the code that made it`);
  }
  const commit = execFileSync('git', ['log', '-1', '--format=%h', '--', ...sources], { encoding: 'utf8' }).trim();
  const env = await TestWorkflowEnvironment.createLocal({
    server: { executable: { type: 'existing-path', path: temporalCliPath() }, searchAttributes: Object.values(SearchAttributes), ip: '127.0.0.1', ui: false },
  });
  const nodes = ['rec-a', 'rec-b', 'rec-rb-a', 'rec-rb-b', 'rec-rv', 'rec-rl', 'rec-rt', 'rec-bl', 'rec-enf', 'rec-cp', 'rec-retry'].map((n) => new FakeNode(n));
  const node = (name: string) => nodes.find((n) => n.name === name)!;
  const cluster = new FakeCluster();
  cluster.guard = GUARD;
  cluster.addPod('10.1.2.3', 'shop', 'web-0');
  const workflowBundle = await bundleWorkflowCode(workflowBundleOptions({ logger: { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error: console.error } }));
  const workers = await startFakeWorkers({ connection: env.nativeConnection, workflowBundle, nodes, cluster });
  const client = env.client.workflow as WorkflowClient;
  mkdirSync(OUT_DIR, { recursive: true });
  let saved = 0;

  const save = async (scenario: string, workflowType: string, workflowId: string, runId?: string): Promise<void> => {
    if (only && !only.has(workflowType)) return;
    const history = await client.getHandle(workflowId, runId).fetchHistory();
    const record: RecordedHistory = { workflowId, workflowType, scenario, recordedFrom: commit, history: historyToObject(history) };
    const file = join(OUT_DIR, `${workflowType}-${scenario}${suffix}.json`);
    writeFileSync(file, `${JSON.stringify(record, null, 1)}\n`);
    saved++;
    console.log(`saved ${file} (${history.events?.length ?? 0} events)`);
  };
  const phase = async (handle: WorkflowHandle, want: string): Promise<void> => {
    await until(async () => (await handle.query<{ phase: string }>('status')).phase === want, `change ${handle.workflowId} to reach ${want}`);
  };
  const farExpiry = () => new Date(Date.now() + 86_400_000).toISOString();
  const block = (cidr: string) => ({ blocklist: { upsert: [{ cidr, reason: 'recorded scenario', expiresAt: farExpiry() }] } });
  const change = (id: string, targets: string[], patch: unknown, options: Record<string, unknown> = {}) =>
    client.start('changeWorkflow', { taskQueue: CLUSTER_TASK_QUEUE, workflowId: `change-${id}`, args: [{ id, author: 'recorder', reason: 'recorded scenario', targets, patch, options }] });

  try {
    // ── change: two nodes, held, confirmed → applied ──
    const applied = await change('rec-applied', ['rec-a', 'rec-b'], block('198.51.100.1/32'), { confirmTimeout: '10m' });
    await phase(applied, 'awaiting-confirmation');
    await applied.executeUpdate('confirm', { args: [{ by: 'recorder', reason: 'recorded' }] });
    await applied.result();
    await save('applied-confirmed', 'changeWorkflow', applied.workflowId);
    await save('applied-held-committed', 'nodeChangeWorkflow', nodeLockWorkflowId('rec-a'));

    // ── change: the second node fails → it rolls back, the first is restored ──
    node('rec-rb-b').failBlocklistApply = 'recorded failure';
    const rolledBack = await change('rec-rolled-back', ['rec-rb-a', 'rec-rb-b'], block('198.51.100.2/32'));
    await rolledBack.result().catch(() => undefined);
    await save('rolled-back', 'changeWorkflow', rolledBack.workflowId);
    await save('rolled-back', 'nodeChangeWorkflow', nodeLockWorkflowId('rec-rb-b'));
    await save('held-restored', 'nodeChangeWorkflow', nodeLockWorkflowId('rec-rb-a'));

    // ── change: not confirmed in time → reverted ──
    const reverted = await change('rec-reverted', ['rec-rv'], block('198.51.100.3/32'), { confirmTimeout: '2s' });
    await reverted.result();
    await save('reverted-unconfirmed', 'changeWorkflow', reverted.workflowId);

    // ── change with cluster policy (patched 'cilium-step'): the node fails → node restored, then the policy ──
    node('rec-cp').failBlocklistApply = 'recorded failure';
    const withPolicy = await client.start('changeWorkflow', {
      taskQueue: CLUSTER_TASK_QUEUE,
      workflowId: 'change-rec-cluster-policy',
      args: [
        {
          id: 'rec-cluster-policy',
          author: 'recorder',
          reason: 'recorded scenario',
          targets: ['rec-cp'],
          patch: block('198.51.100.5/32'),
          clusterPolicy: { namespace: 'recorded', cilium: [{ apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'recorded' }, spec: { endpointSelector: {}, ingress: [{ fromEntities: ['cluster'] }] } }] },
        },
      ],
    });
    await withPolicy.result().catch(() => undefined);
    await save('cluster-policy-rolled-back', 'changeWorkflow', withPolicy.workflowId);

    // ── cluster-only change (patched 'cluster-only-change'): clusterPolicy and no node part, applied with 0 nodes ──
    const clusterOnly = await client.start('changeWorkflow', {
      taskQueue: CLUSTER_TASK_QUEUE,
      workflowId: 'change-rec-cluster-only',
      args: [
        {
          id: 'rec-cluster-only',
          author: 'recorder',
          reason: 'recorded scenario',
          clusterPolicy: { namespace: 'recorded', cilium: [{ apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'recorded-only' }, spec: { endpointSelector: {}, ingress: [{ fromEntities: ['cluster'] }] } }] },
        },
      ],
    });
    await clusterOnly.result();
    await save('cluster-only-applied', 'changeWorkflow', clusterOnly.workflowId);

    // ── node-change: a rate-limit-only patch (only the rate limits read, regular activities) ──
    const rateLimited = await change('rec-rate-limit', ['rec-rl'], { rateLimits: { upsert: [{ cidr: '198.51.100.4/32', pps: 10, reason: 'recorded', expiresAt: farExpiry() }] } });
    await rateLimited.result();
    await save('applied-rate-limit', 'nodeChangeWorkflow', nodeLockWorkflowId('rec-rl'));

    // ── node-change: a route patch (every network table in scope, one step, regular activities) ──
    const routed = await change('rec-route', ['rec-rt'], { routes: { upsert: [{ destination: '203.0.113.0/24', gateway: '192.0.2.1', table: 254, metric: 100 }] } });
    await routed.result();
    await save('applied-route', 'nodeChangeWorkflow', nodeLockWorkflowId('rec-rt'));

    // ── node-change: a blocklist-only patch, not held (local activities, the alert-to-drop path) ──
    const blocked = await change('rec-blocklist', ['rec-bl'], block('198.51.100.5/32'));
    await blocked.result();
    await save('applied-blocklist-patch', 'nodeChangeWorkflow', nodeLockWorkflowId('rec-bl'));

    // ── node-change: a rollback whose restores fail at first, retried (patch restore-retries) until they verify ──
    node('rec-retry').failBlocklistApply = 'recorded failure';
    node('rec-retry').failRestores = 'recorded: node unreachable';
    const retried = await change('rec-retried', ['rec-retry'], block('198.51.100.6/32'));
    const retryProgress = () => client.getHandle(nodeLockWorkflowId('rec-retry')).query<{ restore?: { attempt: number; nextTryAt?: string } }>('nodeProgress');
    await until(async () => (await retryProgress().catch(() => undefined))?.restore?.attempt === 1, 'a failed restore round');
    node('rec-retry').failRestores = undefined;
    await retried.result().catch(() => undefined);
    await save('rollback-retried', 'nodeChangeWorkflow', nodeLockWorkflowId('rec-retry'));

    // ── coordinator: started with a low continue-as-new bound, so a carried-state run is recorded too ──
    const coordinator = await client.start('enforcementCoordinatorWorkflow', {
      taskQueue: CLUSTER_TASK_QUEUE,
      workflowId: COORDINATOR_ID,
      args: [{ activeBlocks: [], recentStarts: [], queue: [], granted: 0, refused: 0, continueAsNewAfter: 2 }],
    });

    // ── enforcement: a block admitted by the coordinator (admit update), lifted at expiry;
    //    a repeat offence blocks longer; both forgotten after memory ──
    const target = '198.51.100.10/32';
    const enforcementId = `enforce-${target.replace(/\//g, '_')}`;
    const verdict = (durationMs: number, admission?: { token: string; expiresAt: string }) => ({
      rule: 'recorded-rule',
      action: 'block',
      target,
      durationMs,
      escalation: { factor: 2, maxDurationMs: 3_600_000 },
      memoryMs: 4000,
      reason: 'recorded verdict',
      evidence: { source: 'suricata', eventType: 'alert', timestamp: new Date().toISOString(), signatureId: 1, srcIp: '198.51.100.10' },
      ...(admission ? { admission } : {}),
    });
    const admit = async () => {
      const answer = await client.getHandle(COORDINATOR_ID).executeUpdate<{ granted: boolean; token: string; expiresAt: string }, [unknown]>('admit', {
        args: [{ target, deadline: new Date(Date.now() + 30_000).toISOString() }],
      });
      if (!answer.granted) throw new Error(`coordinator refused: ${JSON.stringify(answer)}`);
      return { token: answer.token, expiresAt: answer.expiresAt };
    };
    const input = { target, nodes: ['rec-enf'] };
    const enforcement = await client.signalWithStart('enforcementWorkflow', { workflowId: enforcementId, taskQueue: CLUSTER_TASK_QUEUE, args: [input], signal: 'verdict', signalArgs: [verdict(1500, await admit())] });
    const enfStatus = () => enforcement.query<{ phase: string; offences: number; active?: unknown }>('enforcement');
    await until(async () => (await enfStatus()).offences === 1 && (await enfStatus()).active !== undefined, 'the first block');
    await until(async () => (await enfStatus()).active === undefined, 'the first block to lift at expiry');
    // Repeat offence without an admission: the workflow asks the coordinator (acquire → leaseGrant).
    await enforcement.signal('verdict', verdict(1500));
    await until(async () => (await enfStatus()).offences === 2, 'the repeat block');
    await enforcement.result();
    await save('block-expiry-escalation', 'enforcementWorkflow', enforcementId);

    // ── enforcement: continue-as-new with the offence carried over ──
    const target2 = '198.51.100.11/32';
    const enforcement2Id = `enforce-${target2.replace(/\//g, '_')}`;
    const enforcement2 = await client.signalWithStart('enforcementWorkflow', {
      workflowId: enforcement2Id,
      taskQueue: CLUSTER_TASK_QUEUE,
      args: [{ ...input, target: target2, continueAsNewAfter: 10 }],
      signal: 'verdict',
      signalArgs: [{ ...verdict(1500), target: target2 }],
    });
    await enforcement2.result();
    const firstRun = enforcement2.signaledRunId;
    await save('continued-as-new-first-run', 'enforcementWorkflow', enforcement2Id, firstRun);
    await save('continued-as-new-carried', 'enforcementWorkflow', enforcement2Id);

    // ── enforcement → quarantine (apply), lifted at expiry (lift) ──
    const target3 = '10.1.2.3/32';
    const enforcement3Id = `enforce-${target3.replace(/\//g, '_')}`;
    const enforcement3 = await client.signalWithStart('enforcementWorkflow', {
      workflowId: enforcement3Id,
      taskQueue: CLUSTER_TASK_QUEUE,
      args: [{ ...input, target: target3 }],
      signal: 'verdict',
      signalArgs: [{ ...verdict(1500), target: target3, action: 'quarantine' }],
    });
    await enforcement3.result();
    await save('quarantine-expiry', 'enforcementWorkflow', enforcement3Id);
    const quarantines = [];
    for await (const w of client.list({ query: `WorkflowType = 'quarantineWorkflow'` })) quarantines.push(w);
    for (const [scenario, prefix] of [['apply', 'quarantine-enf-quarantine-'], ['lift', 'quarantine-enf-unquarantine-']] as const) {
      const run = quarantines.find((w) => w.workflowId.startsWith(prefix));
      if (!run) throw new Error(`no quarantine ${scenario} run among ${quarantines.map((w) => w.workflowId).join(', ')}`);
      await save(scenario, 'quarantineWorkflow', run.workflowId, run.runId);
    }

    // ── quarantine: the label step fails → label taken off, rolled back ──
    const failed = await client.start('quarantineWorkflow', {
      taskQueue: CLUSTER_TASK_QUEUE,
      workflowId: 'quarantine-rec-rolled-back',
      args: [{ changeId: 'rec-rolled-back', author: 'recorder', operation: 'apply', target: '10.1.2.3/32', failAfter: 'label' }],
    });
    await failed.result().catch(() => undefined);
    await save('rolled-back', 'quarantineWorkflow', failed.workflowId);

    // ── coordinator: its first run (ended by continue-as-new) and the run now in progress ──
    await save('first-run-continued-as-new', 'enforcementCoordinatorWorkflow', COORDINATOR_ID, coordinator.firstExecutionRunId);
    await save('admit-acquire-release-running', 'enforcementCoordinatorWorkflow', COORDINATOR_ID);
    await coordinator.terminate('recording done');
    console.log(`${saved} histories recorded from ${commit}${only ? ` (only ${[...only].join(', ')})` : ''}`);
  } finally {
    await workers.stop();
    await env.teardown();
  }
}

async function until(check: () => Promise<boolean>, what: string, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
