/**
 * Assembles the ingest worker: rule set → evaluator → bridge → pipeline, and the
 * configured sources (EVE file tail, unix socket, NDJSON over HTTP, live ndpiReader).
 * Rule evaluation happens here, outside Temporal; only decisions reach workflows.
 */
import type { Server as HttpServer } from 'node:http';
import type { Server as NetServer } from 'node:net';
import type { Logger } from 'pino';
import type { Authenticator } from '../auth/authenticator';
import { authEnvSchema, createAuthenticator, httpSecurityFrom } from '../auth/config';
import { EnforcementBridge, type WorkflowStarter } from './bridge';
import { RuleEvaluator } from '../rules/evaluator';
import { EnforcementGuard } from '../model/enforcement-guard';
import { loadRuleSetFile } from '../rules/rule-set';
import type { IngestConfig } from './config';
import { EveFileTail } from './eve-tail';
import { listenNdjsonHttp, listenUnixSocket } from './line-servers';
import { runNdpiReader } from './ndpi-reader';
import { IngestPipeline } from './pipeline';
import { DecisionSpool } from './spool';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A running ingest worker. */
export interface RunningIngest {
  pipeline: IngestPipeline;
  bridge: EnforcementBridge;
  /** Verdicts kept while Temporal is unreachable. */
  spool: DecisionSpool;
  tail?: EveFileTail;
  http?: HttpServer;
  socket?: NetServer;
  stop(): Promise<void>;
}

/** What the worker needs from outside: a Temporal workflow client and a logger. */
export interface IngestDeps {
  workflows: WorkflowStarter;
  logger: Logger;
  /** Checks the HTTP endpoint's callers; built from `config.auth` when not given. */
  authenticator?: Authenticator;
}

/**
 * What {@link startIngest} reads of the configuration (`auth`, the line cap and the spool
 * cap have defaults). Without `stateDir` the decision spool lives in a fresh temporary
 * folder: it survives an outage of Temporal, not a restart of this process.
 */
export type IngestStartConfig = Omit<IngestConfig, 'temporal' | 'logLevel' | 'auth' | 'maxNdjsonLines' | 'stateDir' | 'spoolMaxBytes'> &
  Partial<Pick<IngestConfig, 'auth' | 'maxNdjsonLines' | 'stateDir' | 'spoolMaxBytes'>> & {
    /** Back-off of the spool's delivery (default 0.5 s doubling to 30 s). */
    retryBackoffMs?: { initial: number; max: number };
    /** Targets the bridge's coalescing map remembers at most (default 100,000). */
    maxRecentTargets?: number;
  };

/** Starts the ingest worker's sources. Throws (before starting anything) on an invalid rule set. */
export async function startIngest(config: IngestStartConfig, deps: IngestDeps): Promise<RunningIngest> {
  const { logger } = deps;
  const guard = new EnforcementGuard(config.guard);
  const ruleSet = loadRuleSetFile(config.rulesFile, { allowListNames: new Set(Object.keys(config.guard.allowLists)) });
  const evaluator = new RuleEvaluator(ruleSet, guard);
  const stateDir = config.stateDir ?? (await mkdtemp(join(tmpdir(), 'fos1-ingest-')));
  const spool = await DecisionSpool.open({ dir: stateDir, ...(config.spoolMaxBytes ? { maxBytes: config.spoolMaxBytes } : {}), logger });
  const bridge = new EnforcementBridge({
    workflows: deps.workflows,
    guard,
    nodes: config.nodes,
    logger,
    coalesceMs: config.coalesceMs,
    spool,
    ...(config.retryBackoffMs ? { retryBackoffMs: config.retryBackoffMs } : {}),
    ...(config.maxRecentTargets ? { maxRecent: config.maxRecentTargets } : {}),
  });
  const pipeline = new IngestPipeline({ evaluator, bridge, logger });
  const running: RunningIngest = { pipeline, bridge, spool, stop: async () => undefined };
  let stopping = false;

  if (config.eveFile) {
    running.tail = new EveFileTail(config.eveFile, {
      from: config.eveFrom,
      ...(config.eveStateFile ? { stateFile: config.eveStateFile } : {}),
      // A line counts as handled, and its position may be saved, once its decision is sent.
      beforeSave: () => pipeline.settle(),
      onLine: (line) => pipeline.eveLine(line, 'eve-file'),
      onError: (err) => logger.error({ err }, `reading ${config.eveFile} failed`),
    });
    await running.tail.start();
  }
  if (config.eveSocket) running.socket = await listenUnixSocket(config.eveSocket, (line) => pipeline.eveLine(line, 'eve-socket'));
  if (config.httpPort) {
    const auth = config.auth ?? authEnvSchema.parse({});
    // A request is refused (503) rather than held while the spool is full; answered once its decisions are kept.
    running.http = await listenNdjsonHttp(config.httpPort, (line) => pipeline.eveLine(line, 'eve-http', 'refuse'), {
      security: httpSecurityFrom(auth, deps.authenticator ?? createAuthenticator(auth)),
      logger,
      settle: () => pipeline.settle(),
      ...(config.maxNdjsonLines ? { maxLines: config.maxNdjsonLines } : {}),
    });
  }
  let ndpiLoop: Promise<void> | undefined;
  if (config.ndpi) {
    const ndpi = config.ndpi;
    ndpiLoop = (async () => {
      while (!stopping) {
        try {
          await runNdpiReader({
            input: { interface: ndpi.interface, seconds: ndpi.seconds },
            ...(ndpi.configDir ? { configDir: ndpi.configDir } : {}),
            onLine: (line) => pipeline.ndpiLine(line, Date.now()),
          });
        } catch (err) {
          logger.error({ err }, 'ndpiReader failed; retrying in 10s');
          await new Promise((r) => setTimeout(r, 10_000));
        }
      }
    })();
  }
  logger.info({ rules: ruleSet.rules.length, ruleSet: ruleSet.name, eveFile: config.eveFile, eveStateFile: config.eveStateFile, eveSocket: config.eveSocket, stateDir, spool: spool.stats, httpPort: config.httpPort, ndpi: config.ndpi?.interface }, 'fos1 ingest running');

  running.stop = async () => {
    stopping = true;
    pipeline.stopWaiting();
    await running.tail?.stop();
    await Promise.all([running.http, running.socket].filter((s) => s !== undefined).map((s) => new Promise((r) => s.close(r))));
    await pipeline.drain();
    // Kept verdicts not yet delivered stay on disk for the next start.
    await bridge.close();
    // A temporary spool folder of ours goes, unless it still holds something (then it is logged where).
    if (!config.stateDir) {
      if (spool.pending === 0) await rm(stateDir, { recursive: true, force: true });
      else logger.warn({ stateDir, pending: spool.pending }, 'verdicts left undelivered in a temporary decision spool (set FOS1_INGEST_STATE_DIR to keep them across restarts)');
    }
    // A live ndpiReader round ends by itself within FOS1_NDPI_SECONDS.
    void ndpiLoop;
  };
  return running;
}
