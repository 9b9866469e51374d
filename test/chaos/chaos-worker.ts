/**
 * Test-only worker process for the chaos harness (test/chaos/harness.ts). It runs real node
 * workers (the production node activities on real namespaces and pinned maps) and, when asked,
 * the real cluster worker, as its own process so the harness can SIGKILL it at an exact step.
 *
 *   node --import tsx test/chaos/chaos-worker.ts <spec.json>
 *
 * What it adds to production is one activity interceptor (never in production code). Told by a
 * behaviour file per node (under the control folder argv's spec names, see {@link ChaosBehaviour}),
 * it can stop at one step of the node workflow — before the activity runs, or after it ran and
 * before its result is reported — by writing `<controlDir>/<node>.stopped` and blocking until
 * `<controlDir>/<node>.release` exists (or the harness kills the process). A stop happens once
 * per round: the restarted process finds the marker and runs through. It can also make the first
 * verification report a difference (`failVerify`, so the workflow rolls back and its restores can
 * be stopped at) and run every node activity twice in a row (`twice`, idempotency).
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { appendFileSync } from 'node:fs';
import { Context } from '@temporalio/activity';
import { DefaultLogger, NativeConnection, Runtime, Worker, type ActivityExecuteInput, type ActivityInboundCallsInterceptor, type Next } from '@temporalio/worker';
import pino from 'pino';
import { createNodeGateActivities } from '../../activities/gates';
import { createNodeActivities } from '../../activities/node-activities';
import type { ClusterPolicyKubeClient } from '../../activities/cluster-policy';
import { KubeApiError, KubeClient, type KubeConnection } from '../../k8s/client';
import { DEFAULT_ROUTE_PROTOCOL } from '../../activities/system/route-table';
import { nodeTaskQueue } from '../../model/naming';
import { auditConfigFrom, openWorkerAuditStores } from '../../workers/audit';
import { auditSinks, createNodeDeps, createWorkers, WORKER_RECOVERY_OPTIONS } from '../../workers/fos1-worker';

/** Where and how a node's step is stopped. */
export interface ChaosStop {
  /** A step of the node workflow: `snapshot`, `apply <subsystem>`, `verify`, `restore <subsystem>`, `verify rollback`. */
  step: string;
  /** `before` the activity runs, or `after` it ran (the kernel changed) and before its result is reported. */
  when: 'before' | 'after';
}

/** One node this process serves. */
export interface ChaosNodeSpec {
  name: string;
  netns: string;
  pinDir: string;
  storeDir: string;
  feedDir: string;
}

/**
 * What a node's interceptor does in the current round: `<controlRoot>/behaviour-<node>.json`,
 * read at every activity call, so one process serves round after round (a process start costs
 * seconds of CPU on a loaded machine) and a restarted one picks up where the killed one was.
 */
export interface ChaosBehaviour {
  /** The round's markers: `<node>.stopped`, `<node>.release`, `<node>.verified`, `<node>.verify-failed`. */
  controlDir: string;
  stop?: ChaosStop;
  /** The first verification reports a difference, once: the change rolls back. */
  failVerify?: boolean;
  /** Every node activity runs twice in a row; the second result is reported. */
  twice?: boolean;
}

/** The process's instructions (a JSON file named by argv). */
export interface ChaosWorkerSpec {
  temporalAddress: string;
  namespace: string;
  /** The workflow bundle, built once by the harness. */
  bundlePath: string;
  /** Behaviour files and `ready.<pid>` markers. */
  controlRoot: string;
  cluster: boolean;
  nodes: ChaosNodeSpec[];
  /** Capacity of each test blocklist map (v4 and v6, LPM and host maps). */
  mapEntries: number;
  /** The cluster worker's Kubernetes API (its cluster policy activities use it, through {@link ChaosKubeClient}); none: no Cilium step. */
  kube?: KubeConnection;
}

/** A cluster policy step of the change workflow, as the cluster interceptor names it. */
export type ClusterStep = 'cluster policy: validate' | 'cluster policy: apply' | 'cluster policy: verify' | 'cluster policy: restore' | 'cluster policy: verify restore';

/**
 * What the cluster worker's Kubernetes client does in the current round:
 * `<controlRoot>/behaviour-cluster.json`. Per change (its workflow id): a name for its markers
 * and the cluster policy step to stop at, before that step's first request to the apiserver.
 * Markers: `cluster-<name>.stopped` / `.release` (as a node's), `.restore-began`, and
 * `.unreachable` (a line per request that found the apiserver down).
 */
export interface ChaosClusterBehaviour {
  controlDir: string;
  changes: Record<string, { name: string; stop?: ClusterStep }>;
}

/** The node workflow's step an activity call is. */
export function stepOf(activityType: string, input: unknown, verified: boolean): string {
  const subsystem = (input as { subsystem?: string } | undefined)?.subsystem;
  switch (activityType) {
    case 'prepareSubsystems':
      return 'snapshot';
    case 'applySubsystem':
      return `apply ${subsystem}`;
    case 'restoreSubsystem':
      return `restore ${subsystem}`;
    case 'checkSubsystems':
      return verified ? 'verify rollback' : 'verify';
    default:
      return activityType;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The interceptor of one node: stop, fail verification once, run twice. */
class ChaosInterceptor implements ActivityInboundCallsInterceptor {
  constructor(
    private readonly ctx: Context,
    private readonly node: ChaosNodeSpec,
    private readonly controlRoot: string,
  ) {}

  private behaviour(): ChaosBehaviour | undefined {
    try {
      return JSON.parse(readFileSync(join(this.controlRoot, `behaviour-${this.node.name}.json`), 'utf8')) as ChaosBehaviour;
    } catch {
      return undefined;
    }
  }

  async execute(input: ActivityExecuteInput, next: Next<ActivityInboundCallsInterceptor, 'execute'>): Promise<unknown> {
    const b = this.behaviour();
    if (!b) return next(input);
    const marker = (name: string) => join(b.controlDir, `${this.node.name}.${name}`);
    const hold = async (step: string) => {
      writeFileSync(marker('stopped'), `${step}\n`);
      while (!existsSync(marker('release'))) await sleep(100);
    };
    const type = this.ctx.info.activityType;
    // The first check of a change is its verification; every later one reads back a rollback.
    const verified = existsSync(marker('verified'));
    const step = stepOf(type, input.args[0], verified);
    if (type === 'checkSubsystems' && !verified) writeFileSync(marker('verified'), '');
    const stop = b.stop;
    const stopHere = stop !== undefined && stop.step === step && !existsSync(marker('stopped'));
    if (stopHere && stop.when === 'before') await hold(step);
    let result = await next(input);
    if (b.twice) result = await next(input);
    if (stopHere && stop.when === 'after') await hold(step);
    if (step === 'verify' && b.failVerify && !existsSync(marker('verify-failed'))) {
      writeFileSync(marker('verify-failed'), '');
      return ['chaos: verification made to fail once (the change must roll back)'];
    }
    return result;
  }
}

/**
 * The cluster worker's Kubernetes client, wrapped: the activity a request comes from
 * (Context.current()) names the cluster policy step, so a change can be stopped at the start
 * of a step, and every request that finds the apiserver down is counted.
 */
function chaosKubeClient(inner: KubeClient, controlRoot: string): ClusterPolicyKubeClient {
  const behaviour = (): ChaosClusterBehaviour | undefined => {
    try {
      return JSON.parse(readFileSync(join(controlRoot, 'behaviour-cluster.json'), 'utf8')) as ChaosClusterBehaviour;
    } catch {
      return undefined;
    }
  };
  const wrap =
    <A extends unknown[], R>(call: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      const b = behaviour();
      let info: { activityType: string; workflowId: string } | undefined;
      try {
        const i = Context.current().info;
        info = { activityType: i.activityType, workflowId: i.workflowExecution?.workflowId ?? '' };
      } catch {
        info = undefined; // not inside an activity
      }
      const change = info && b?.changes[info.workflowId];
      if (!b || !info || !change) return call(...args);
      const marker = (m: string) => join(b.controlDir, `cluster-${change.name}.${m}`);
      if (info.activityType === 'restoreClusterPolicy' && !existsSync(marker('restore-began'))) writeFileSync(marker('restore-began'), '');
      const step = clusterStepOf(info.activityType, existsSync(marker('restore-began')));
      if (change.stop === step && !existsSync(marker('stopped'))) {
        writeFileSync(marker('stopped'), `${step}\n`);
        while (!existsSync(marker('release'))) await sleep(100);
      }
      try {
        return await call(...args);
      } catch (err) {
        if (err instanceof KubeApiError && err.status === 0) appendFileSync(marker('unreachable'), `${Date.now()} ${step}\n`);
        throw err;
      }
    };
  return {
    apply: wrap(inner.apply.bind(inner)),
    list: wrap(inner.list.bind(inner)),
    delete: wrap(inner.delete.bind(inner)),
    get: wrap(inner.get.bind(inner)),
    create: wrap(inner.create.bind(inner)),
    replace: wrap(inner.replace.bind(inner)),
  };
}

/** The cluster policy step an activity is (a read after a restore began reads the restore back). */
export function clusterStepOf(activityType: string, restoreBegan: boolean): ClusterStep | string {
  switch (activityType) {
    case 'prepareClusterPolicy':
      return 'cluster policy: validate';
    case 'applyClusterPolicy':
      return 'cluster policy: apply';
    case 'restoreClusterPolicy':
      return 'cluster policy: restore';
    case 'readClusterPolicy':
      return restoreBegan ? 'cluster policy: verify restore' : 'cluster policy: verify';
    default:
      return activityType;
  }
}

async function main(): Promise<void> {
  const specFile = process.argv[2];
  if (!specFile) throw new Error('usage: chaos-worker.ts <spec.json>');
  const spec = JSON.parse(readFileSync(specFile, 'utf8')) as ChaosWorkerSpec;
  Runtime.install({ logger: new DefaultLogger('ERROR'), shutdownSignals: ['SIGINT', 'SIGTERM'] });
  const logger = pino({ level: process.env.FOS1_TEST_LOG ?? 'silent' });
  const connection = await NativeConnection.connect({ address: spec.temporalAddress });
  // Loaded from the file, as workers/main.ts does with FOS1_WORKFLOW_BUNDLE.
  const workflowBundle = { codePath: spec.bundlePath };
  const workers: Worker[] = [];
  const entries = { v4: spec.mapEntries, v6: spec.mapEntries };
  for (const node of spec.nodes) {
    const deps = createNodeDeps(
      { netns: node.netns, routeProtocol: DEFAULT_ROUTE_PROTOCOL, bpfPinDir: node.pinDir, blocklistMaxEntries: entries, blocklistHostMaxEntries: entries, blocklistStoreDir: node.storeDir, feeds: { dirs: [node.feedDir] } },
      logger.child({ node: node.name }),
    );
    // As workers/fos1-worker.ts builds the node worker, plus the chaos interceptor.
    workers.push(
      await Worker.create({
        connection,
        namespace: spec.namespace,
        taskQueue: nodeTaskQueue(node.name),
        workflowBundle,
        activities: { ...createNodeActivities(deps), ...createNodeGateActivities({ netns: node.netns, bpfPinDir: node.pinDir }) },
        sinks: auditSinks(logger),
        maxConcurrentActivityTaskExecutions: 1,
        ...WORKER_RECOVERY_OPTIONS,
        interceptors: { activity: [(ctx) => ({ inbound: new ChaosInterceptor(ctx, node, spec.controlRoot) })] },
      }),
    );
  }
  if (spec.cluster) {
    // The production cluster worker; its node dependencies are never used (no node queue).
    const unused = createNodeDeps({ netns: undefined, routeProtocol: DEFAULT_ROUTE_PROTOCOL, bpfPinDir: '/sys/fs/bpf/fos1-chaos-unused', blocklistMaxEntries: entries, blocklistStoreDir: join(spec.controlRoot, 'unused-store') }, logger);
    // The durable audit in a file store under the control root: a restarted cluster worker
    // appends to the same chain (a torn last line from a SIGKILL is the store's to handle).
    const audit = openWorkerAuditStores(auditConfigFrom({ FOS1_AUDIT_DIR: join(spec.controlRoot, 'audit'), FOS1_AUDIT_CHECKPOINT_MS: 600_000 }), logger);
    const ciliumDeps = spec.kube ? { ciliumDeps: { kube: chaosKubeClient(new KubeClient(spec.kube), spec.controlRoot), fieldManager: 'fos1', logger } } : {};
    workers.push(...(await createWorkers({ connection, namespace: spec.namespace, nodeName: 'chaos-cluster', clusterWorker: true, nodeWorker: false, nodeDeps: unused, audit, logger, workflowBundle, ...ciliumDeps })));
  }
  const running = Promise.all(workers.map((w) => w.run()));
  while (!workers.every((w) => w.getState() === 'RUNNING')) await sleep(20);
  writeFileSync(join(spec.controlRoot, `ready.${process.pid}`), '');
  await running;
  await connection.close();
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
