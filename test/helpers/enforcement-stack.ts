/**
 * The start-up of the enforcement tests: a Temporal server and the workers of one node
 * ({@link startTestNode}), plus an ingest worker tailing an EVE file with a rule set, its
 * bridge signalling the enforcement workflows through the server's client.
 */
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { startIngest, type IngestStartConfig, type RunningIngest } from '../../ingest/ingest-worker';
import type { WorkflowStarter } from '../../ingest/bridge';
import type { GuardConfig } from '../../model/enforcement-guard';
import { startTestNode, type TestNode, type TestNodeOptions } from './test-node';

/** An ingest tailing an EVE file of its own, in a folder with its rule set. */
export interface TestIngest {
  ingest: RunningIngest;
  /** The folder of the rule set (`rules.json`) and the EVE file. */
  dir: string;
  eveFile: string;
  /** Appends EVE lines to the file the ingest tails. */
  appendEve(lines: string[]): void;
  /** Stops the ingest; removes the folder when this helper made it. */
  stop(): Promise<void>;
}

/** Options of {@link startTestIngest}. */
export interface TestIngestOptions {
  /** The rule set (written to `rules.json`). */
  rules: unknown;
  /** The ingest bridge's guard (its early check only; the cluster worker's is enforced). */
  guard: GuardConfig;
  nodes: string[];
  /** A folder of the test's for the files (kept); a fresh temporary one (removed by stop) when not given. */
  dir?: string;
  /** The EVE file's name in the folder (default eve.json). */
  eveName?: string;
  /** More of the ingest's configuration. */
  config?: Partial<IngestStartConfig>;
}

/** Starts an ingest worker reading an empty EVE file from its end (coalescing repeats within 1 s). */
export async function startTestIngest(workflows: WorkflowStarter, options: TestIngestOptions): Promise<TestIngest> {
  const ownDir = options.dir === undefined;
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'fos1-ingest-test-'));
  const rulesFile = join(dir, 'rules.json');
  writeFileSync(rulesFile, JSON.stringify(options.rules));
  const eveFile = join(dir, options.eveName ?? 'eve.json');
  writeFileSync(eveFile, '');
  const ingest = await startIngest(
    { rulesFile, guard: options.guard, nodes: options.nodes, eveFile, eveFrom: 'end', coalesceMs: 1000, ...options.config },
    { workflows, logger: pino({ level: process.env.FOS1_TEST_LOG ?? 'silent' }) },
  );
  return {
    ingest,
    dir,
    eveFile,
    appendEve: (lines) => appendFileSync(eveFile, lines.map((l) => `${l}\n`).join('')),
    async stop() {
      await ingest.stop();
      if (ownDir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** What {@link startEnforcementStack} started. */
export interface EnforcementStack extends TestNode, Omit<TestIngest, 'stop'> {
  /** Stops the ingest, then the node (workers, maps, server). */
  stop(): Promise<void>;
}

/** Starts Temporal, the node's workers and an ingest for that node. */
export async function startEnforcementStack(options: TestNodeOptions & Omit<TestIngestOptions, 'nodes'>): Promise<EnforcementStack> {
  const node = await startTestNode(options);
  let ingest: TestIngest;
  try {
    ingest = await startTestIngest(node.env.client.workflow, { ...options, nodes: [options.node] });
  } catch (err) {
    await node.stop();
    throw err;
  }
  const stopNode = node.stop.bind(node);
  return Object.assign(node, {
    ingest: ingest.ingest,
    dir: ingest.dir,
    eveFile: ingest.eveFile,
    appendEve: ingest.appendEve,
    async stop() {
      await ingest.stop();
      await stopNode();
    },
  });
}
