/**
 * The ingest pipeline: a line of EVE JSON or ndpiReader output → parse → rules →
 * bridge. Every input path (file tail, unix socket, HTTP, ndpiReader) feeds it.
 *
 * It never throws and never waits on Temporal for long: a bad line is counted and
 * logged with its reason (rate-limited, so a broken sensor cannot flood the log); a
 * decision is handed to the bridge without blocking the next line, up to a bound of
 * decisions in flight, past which the stream waits (back-pressure instead of memory).
 */
import type { Logger } from 'pino';
import type { BridgeOutcome, EnforcementBridge } from './bridge';
import type { Decision } from '../model/enforcement-decision';
import { parseEveLine } from '../rules/eve';
import type { RuleEvaluator } from '../rules/evaluator';
import type { VerdictFacts } from '../rules/facts';
import { decisionsTotal, ingestLinesTotal } from '../metrics/registry';
import { parseNdpiFlowLine } from '../rules/ndpi';

/** Counters of one pipeline. */
export interface PipelineStats {
  lines: number;
  accepted: number;
  rejected: number;
  /** Rejections by reason (the reason's first clause), for spotting a sensor's quirk. */
  rejectedBy: Record<string, number>;
  decisions: Record<string, number>;
  outcomes: Partial<Record<BridgeOutcome, number>>;
  /** Decisions aimed at a flow's remote endpoint that had none, by reason (`local-to-local`, …). */
  withheld: Record<string, number>;
  errors: number;
}

/** What became of one line. */
export type LineResult = { ok: true; decision: Decision | null } | { ok: false; reason: string } | { skipped: true } | { full: true; reason: string };

/** What a source does when the spool is full: wait for room (streams) or be refused (requests). */
export type WhenFull = 'wait' | 'refuse';

/** Options of {@link IngestPipeline}. */
export interface PipelineOptions {
  /** The rule set's evaluator; {@link IngestPipeline.setEvaluator} swaps it when the rules are reloaded. */
  evaluator: RuleEvaluator;
  /** Where decisions go; absent = evaluate only (benchmarks, dry runs). */
  bridge?: Pick<EnforcementBridge, 'submit'> & Partial<Pick<EnforcementBridge, 'full' | 'whenRoom'>>;
  logger: Logger;
  /** Decisions in flight to the bridge before lines wait. */
  maxInFlight?: number;
}

/** Parses, evaluates and forwards verdict lines. */
export class IngestPipeline {
  readonly stats: PipelineStats = { lines: 0, accepted: 0, rejected: 0, rejectedBy: {}, decisions: {}, outcomes: {}, withheld: {}, errors: 0 };
  /** Lines refused (not taken) because the decision spool was full. */
  refusedFull = 0;
  private readonly inFlight = new Set<Promise<void>>();
  private stopping = false;
  private wakeStopped: () => void = () => undefined;
  private readonly stopped = new Promise<void>((resolve) => (this.wakeStopped = resolve));
  private lastRejectLog = 0;
  private suppressedRejects = 0;

  private evaluator: RuleEvaluator;

  constructor(private readonly options: PipelineOptions) {
    this.evaluator = options.evaluator;
  }

  /** Evaluates later lines with `evaluator` (a reloaded rule set); lines in evaluation finish with the old one. */
  setEvaluator(evaluator: RuleEvaluator): void {
    this.evaluator = evaluator;
  }

  /** The evaluator lines are evaluated with now. */
  get currentEvaluator(): RuleEvaluator {
    return this.evaluator;
  }

  /** Handles one EVE JSON line. */
  async eveLine(line: string, origin = 'eve', whenFull: WhenFull = 'wait'): Promise<LineResult> {
    if (line.trim() === '') return { skipped: true };
    const full = await this.room(whenFull);
    if (full) return full;
    this.stats.lines++;
    const parsed = parseEveLine(line);
    if (!parsed.ok) return this.reject(parsed.reason, origin);
    return this.evaluate(parsed.facts, origin);
  }

  /** Handles one line of `ndpiReader -v 2` output (non-flow lines are skipped). */
  async ndpiLine(line: string, observedAtMs: number): Promise<LineResult> {
    const parsed = parseNdpiFlowLine(line, observedAtMs);
    if ('skip' in parsed) return { skipped: true };
    await this.room('wait');
    this.stats.lines++;
    if (!parsed.ok) return this.reject(parsed.reason, 'ndpi');
    return this.evaluate(parsed.facts, 'ndpi');
  }

  /**
   * Waits for the decisions handed to the bridge so far (not for later ones, so a steady
   * stream cannot keep it waiting for ever).
   */
  async settle(): Promise<void> {
    await Promise.all([...this.inFlight]);
  }

  /** Waits until every decision handed to the bridge has been handled. */
  async drain(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all([...this.inFlight]);
  }

  /** Waits for room in the spool, or (`refuse`) says it is full; null when the line may go on. */
  private async room(whenFull: WhenFull): Promise<{ full: true; reason: string } | null> {
    const bridge = this.options.bridge;
    if (!bridge?.full) return null;
    if (whenFull === 'refuse') {
      this.refusedFull++;
      return { full: true, reason: 'the decision spool is full (Temporal has been unreachable); try again later' };
    }
    while (bridge.full && bridge.whenRoom && !this.stopping) await Promise.race([bridge.whenRoom(), this.stopped]);
    // Not taken: the source must not count the line as handled (the tail saves no position past it).
    if (bridge.full && this.stopping) throw new Error('ingest stopping while the decision spool is full: the line was not taken (the EVE tail reads it again on the next start)');
    return null;
  }

  /** Ends waits for room in the spool (shutdown): waiting lines are not taken, their sources see an error. */
  stopWaiting(): void {
    this.stopping = true;
    this.wakeStopped();
  }

  private async evaluate(facts: VerdictFacts, origin: string): Promise<LineResult> {
    this.stats.accepted++;
    ingestLinesTotal.inc({ source: origin, result: 'accepted' });
    let decision: Decision | null;
    try {
      const evaluation = await this.evaluator.evaluate(facts);
      decision = evaluation.decision;
      if (evaluation.withheld) {
        const { rule, reason, detail } = evaluation.withheld;
        this.stats.withheld[reason] = (this.stats.withheld[reason] ?? 0) + 1;
        this.options.logger.info({ rule, reason, src: facts.src_ip, dest: facts.dest_ip, app: facts.ndpi_protocol ?? facts.app_proto }, `rule ${rule} aims at the remote endpoint: ${detail}`);
      }
    } catch (err) {
      this.stats.errors++;
      this.options.logger.error({ err, facts }, 'rule evaluation failed');
      return { ok: true, decision: null };
    }
    if (!decision) return { ok: true, decision: null };
    this.stats.decisions[decision.action] = (this.stats.decisions[decision.action] ?? 0) + 1;
    decisionsTotal.inc({ action: decision.action });
    const bridge = this.options.bridge;
    if (bridge) {
      if (this.inFlight.size >= (this.options.maxInFlight ?? 1000)) await Promise.race(this.inFlight);
      const task: Promise<void> = bridge
        .submit(decision)
        .then((outcome) => {
          this.stats.outcomes[outcome] = (this.stats.outcomes[outcome] ?? 0) + 1;
        })
        .catch((err: unknown) => {
          this.stats.errors++;
          this.options.logger.error({ err }, 'bridge failed');
        })
        .finally(() => this.inFlight.delete(task));
      this.inFlight.add(task);
    }
    return { ok: true, decision };
  }

  private reject(reason: string, origin: string): LineResult {
    this.stats.rejected++;
    ingestLinesTotal.inc({ source: origin, result: 'rejected' });
    const key = reason.split(/[;:]/, 1)[0] ?? reason;
    this.stats.rejectedBy[key] = (this.stats.rejectedBy[key] ?? 0) + 1;
    const now = Date.now();
    if (now - this.lastRejectLog >= 1000) {
      this.options.logger.warn({ origin, reason, suppressed: this.suppressedRejects }, `rejected a ${origin} line: ${reason}`);
      this.lastRejectLog = now;
      this.suppressedRejects = 0;
    } else {
      this.suppressedRejects++;
    }
    return { ok: false, reason };
  }
}
