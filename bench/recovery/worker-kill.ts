/**
 * Recovery after a SIGKILLed node worker (issue 16): how long after the worker is
 * restarted its interrupted activity runs again, and whether heartbeats get out while a
 * million-entry blocklist by reference loads.
 *
 *   sudo npx tsx bench/recovery/worker-kill.ts                       # this checkout
 *   sudo npx tsx bench/recovery/worker-kill.ts --repo /work/main     # the workers of another checkout ("before")
 *   options: --entries N (1,000,000)  --down-ms MS (worker away for, 2,000)
 *
 * Real parts: the Temporal dev server, a network namespace, pinned eBPF maps, and the node
 * and cluster workers as their own processes (`workers/main.ts` of `--repo`), so the node
 * worker can be SIGKILLed. Two changes replace the blocklist with a list file of N hosts:
 *
 * 1. undisturbed: the node workflow's pending activity is described every 100 ms; the
 *    longest gap between two heartbeats the server recorded during prepare and apply is
 *    reported (and the phases the heartbeats named);
 * 2. the node worker is SIGKILLed while `applySubsystem` runs, restarted after --down-ms,
 *    and the time from the restart to the activity's next attempt starting is measured;
 *    the change must end `applied` with the maps equal to the file (by digest).
 *
 * Prints one JSON line of results; copies nothing from the machine but the figures.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { WorkflowClient } from '@temporalio/client';
import { imageDigest, parseBlocklistText } from '../../bpf/blocklist-image';
import { BlocklistMaps, removePinnedBlocklist } from '../../bpf/blocklist-maps';
import { CLUSTER_TASK_QUEUE, nodeLockWorkflowId } from '../../model/naming';
import { TestNamespace } from '../../test/helpers/netns';
import { startTemporal } from '../../test/helpers/temporal';

const args = process.argv.slice(2);
const option = (name: string, fallback: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? (args[i + 1] as string) : fallback;
};
const REPO = resolve(option('repo', resolve(__dirname, '../..')));
const ENTRIES = Number(option('entries', '1000000'));
const DOWN_MS = Number(option('down-ms', '2000'));
const NODE = 'node-rk';

function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? done(address.port) : fail(new Error('no port'))));
    });
  });
}

function listText(n: number): string {
  const lines: string[] = [];
  for (let i = 0; i < n; i++) {
    const h = (i * 2_654_435 + 7_919) % 2 ** 24;
    lines.push(`10.${h >>> 16}.${(h >>> 8) & 255}.${h & 255}`);
  }
  return `${lines.join('\n')}\n`;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const port = await freePort();
  const env = await startTemporal({ port });
  const ns = TestNamespace.create('fos1rk');
  const pinDir = `/sys/fs/bpf/fos1-rk-${randomBytes(3).toString('hex')}`;
  const dir = mkdtempSync(join(tmpdir(), 'fos1-rk-'));
  const list = join(dir, 'list.txt');
  writeFileSync(list, listText(ENTRIES));
  const processes = new Set<ChildProcess>();
  const workerEnv = (extra: Record<string, string>) => ({
    ...process.env,
    TEMPORAL_ADDRESS: `127.0.0.1:${port}`,
    FOS1_NODE_NAME: NODE,
    FOS1_NETNS: ns.name,
    FOS1_BPF_PIN_DIR: pinDir,
    FOS1_BLOCKLIST_STORE_DIR: join(dir, 'store'),
    FOS1_FEED_DIRS: dir,
    FOS1_BLOCKLIST_MAX_ENTRIES_V4: String(ENTRIES + 1024),
    FOS1_BLOCKHOST_MAX_ENTRIES_V4: String(ENTRIES + 1024),
    FOS1_BLOCKLIST_MAX_ENTRIES_V6: '65536',
    FOS1_BLOCKHOST_MAX_ENTRIES_V6: '65536',
    LOG_LEVEL: 'info',
    ...extra,
  });
  /** Starts a worker process; `ready` resolves when it logs that its workers run (they poll from then on). */
  const startWorker = (extra: Record<string, string>) => {
    // One process (node with tsx's loader), not the tsx CLI, which runs node as a child a SIGKILL would not reach.
    const child = spawn(process.execPath, ['--import', 'tsx', join(REPO, 'workers/main.ts')], { cwd: REPO, env: workerEnv(extra), stdio: ['ignore', 'pipe', 'inherit'] });
    processes.add(child);
    child.on('exit', () => processes.delete(child));
    const ready = new Promise<number>((done) => {
      let buffered = '';
      child.stdout?.on('data', (chunk: Buffer) => {
        buffered = (buffered + chunk.toString()).slice(-4096);
        if (buffered.includes('fos1 worker running')) done(Date.now());
      });
    });
    return { child, ready };
  };
  const client = new WorkflowClient({ connection: env.connection });
  const nodeHandle = () => client.getHandle(nodeLockWorkflowId(NODE));
  let sequence = 0;
  const startChange = () =>
    client.start('changeWorkflow', {
      taskQueue: CLUSTER_TASK_QUEUE,
      workflowId: `change-rk-${++sequence}`,
      args: [{ id: `rk-${sequence}-${randomBytes(2).toString('hex')}`, author: 'bench', reason: 'recovery bench', targets: [NODE], patch: { blocklist: { replaceRef: { file: list } } }, options: { defaultBakeSeconds: 0 } }],
    });
  /** The node workflow's pending activity, if any. */
  const pending = async () => {
    try {
      const d = await nodeHandle().describe();
      return d.raw.pendingActivities?.[0];
    } catch {
      return undefined;
    }
  };

  const results: Record<string, unknown> = { repo: REPO, entries: ENTRIES, downMs: DOWN_MS };
  const clusterWorker = startWorker({ FOS1_NODE_WORKER: 'false', FOS1_CLUSTER_WORKER: 'true' });
  let nodeWorker = startWorker({ FOS1_CLUSTER_WORKER: 'false' });
  try {
    // Both polling before the first change (a change refuses a node without a polling worker).
    await Promise.all([clusterWorker.ready, nodeWorker.ready]);
    // 1. Undisturbed: heartbeats during prepare and apply of the full list.
    {
      const handle = await startChange();
      const beats = new Map<string, number[]>();
      const phases = new Set<string>();
      let done = false;
      void handle.result().finally(() => (done = true));
      while (!done) {
        const p = await pending();
        const type = p?.activityType?.name ?? undefined;
        const beat = p?.lastHeartbeatTime?.seconds ? Number(p.lastHeartbeatTime.seconds) * 1000 + Math.floor((p.lastHeartbeatTime.nanos ?? 0) / 1e6) : undefined;
        if (type && beat) {
          const seen = beats.get(type) ?? [];
          if (seen[seen.length - 1] !== beat) seen.push(beat);
          beats.set(type, seen);
          const details = p?.heartbeatDetails?.payloads?.[0]?.data;
          if (details) phases.add((JSON.parse(Buffer.from(details).toString()) as { phase?: string }).phase ?? '?');
        }
        await sleep(100);
      }
      const status = (await handle.result()) as { phase: string };
      const gaps = Object.fromEntries([...beats].map(([type, times]) => [type, { heartbeats: times.length, maxGapMs: Math.max(0, ...times.slice(1).map((t, i) => t - (times[i] as number))) }]));
      results.undisturbed = { phase: status.phase, heartbeats: gaps, phases: [...phases] };
    }
    // 2. SIGKILL during the apply of a second full load (the maps are emptied first by a list of one entry).
    {
      writeFileSync(list, listText(ENTRIES).replace(/^10\./gm, '11.'));
      const handle = await startChange();
      let p = await pending();
      while (p?.activityType?.name !== 'applySubsystem' || !p.lastStartedTime) {
        await sleep(50);
        p = await pending();
      }
      const killedAt = Date.now();
      nodeWorker.child.kill('SIGKILL');
      await new Promise((r) => nodeWorker.child.once('exit', r));
      await sleep(DOWN_MS);
      const restartedAt = Date.now();
      nodeWorker = startWorker({ FOS1_CLUSTER_WORKER: 'false' });
      let again: number | undefined;
      let completedFirst = false;
      while (again === undefined) {
        const q = await pending();
        if (q?.activityType?.name === 'applySubsystem' && (q.attempt ?? 1) > 1 && q.lastStartedTime && Number(q.lastStartedTime.seconds) * 1000 >= killedAt - 1000) again = Date.now();
        else if (q?.activityType?.name !== 'applySubsystem' && q !== undefined) {
          completedFirst = true; // the retried apply finished between two polls
          again = Date.now();
        }
        await sleep(100);
      }
      const status = (await handle.result()) as { phase: string };
      const maps = BlocklistMaps.open({ pinDir, maxEntriesV4: ENTRIES + 1024, maxEntriesV6: 65536, hostMaps: { maxEntriesV4: ENTRIES + 1024, maxEntriesV6: 65536 } });
      const equal = imageDigest(maps.dumpImage()) === imageDigest(parseBlocklistText(readFileSync(list)));
      maps.close();
      results.killed = {
        phase: status.phase,
        mapsEqualList: equal,
        restartToRetryMs: again - restartedAt,
        workerStartMs: (await nodeWorker.ready) - restartedAt,
        pollingToRetryMs: again - (await nodeWorker.ready),
        killToRetryMs: again - killedAt,
        killToAppliedMs: Date.now() - killedAt,
        ...(completedFirst ? { note: 'retry seen after it had already finished (upper bound)' } : {}),
      };
    }
  } finally {
    for (const child of processes) child.kill('SIGKILL');
    for (const cleanup of [() => env.teardown(), () => removePinnedBlocklist(pinDir), () => ns.destroy(), () => rmSync(dir, { recursive: true, force: true })]) {
      try {
        await cleanup();
      } catch (err) {
        console.error('cleanup failed:', err);
      }
    }
  }
  console.log(JSON.stringify(results));
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
