/**
 * Runs a validated rule set over verdicts: sliding windows first, then the
 * json-rules-engine rules for the verdict's event type, then one decision (the
 * matching rule with the highest priority wins; ties go to the earlier rule, so an
 * `allow` rule placed high can exempt traffic from the blocking rules below it).
 */
import { Engine, type Almanac } from 'json-rules-engine';
import type { Decision, DecisionEvidence } from '../model/enforcement-decision';
import { prefixOf } from '../model/enforcement-decision';
import { remoteEndpoint, type CompiledLocalNetworks, type WithheldReason } from '../model/local-networks';
import type { VerdictFacts } from './facts';
import type { EnforcementGuard } from '../model/enforcement-guard';
import { createOperators } from './operators';
import type { RuleSet, RuleSpec } from './rule-set';
import { SlidingWindows, type WindowDefinition } from './windows';

/** The outcome of one verdict. */
export interface Evaluation {
  /** The deciding rule's decision; null when no rule matched (or the rule's target address is absent). */
  decision: Decision | null;
  /** Names of every rule that matched, highest priority first. */
  matched: string[];
  /**
   * Set when the deciding rule aims at the flow's `remote` endpoint and the flow has none
   * (both sides local, neither, not unicast…): the decision is withheld, no address blocked.
   */
  withheld?: { rule: string; reason: WithheldReason; detail: string };
}

/** What the evaluator reads of the world besides the verdict. */
export interface EvaluatorContext {
  /** The node's local networks now (refreshed by the ingest); undefined while not known. */
  localNetworks?: () => CompiledLocalNetworks | undefined;
}

const WINDOW_COUNTS = '__windowCounts';

/** Evaluates verdicts against one rule set. Not shared between streams: windows are per evaluator. */
export class RuleEvaluator {
  private readonly engines = new Map<string, { engine: Engine; facts: (keyof VerdictFacts)[]; usesWindows: boolean }>();
  private readonly order = new Map<string, number>();
  private readonly windows: SlidingWindows;
  private readonly cache = new Map<string, RuleSpec[]>();
  private readonly windowClamp = new Map<string, number>();
  private readonly targets = new Map<string, string | null>();
  /** Engine runs and cache hits, for metrics and the benchmark. */
  readonly stats = { engineRuns: 0, cacheHits: 0 };

  constructor(
    private readonly ruleSet: RuleSet,
    guard: EnforcementGuard,
    /** Distinct fact combinations remembered; 0 turns the cache off (the benchmark's worst case). */
    private readonly cacheLimit = 10_000,
    private readonly context: EvaluatorContext = {},
  ) {
    this.windows = new SlidingWindows(ruleSet.windows.map((w) => ({ name: w.name, groupBy: w.groupBy as keyof VerdictFacts, windowMs: w.window, where: w.where as WindowDefinition['where'] })));
    for (const w of ruleSet.windows) this.windowClamp.set(w.name, windowBound(ruleSet.rules, w.name));
    const operators = createOperators(guard);
    const byType = new Map<string, RuleSpec[]>();
    ruleSet.rules.forEach((rule, index) => {
      this.order.set(rule.name, index);
      for (const type of rule.eventTypes) byType.set(type, [...(byType.get(type) ?? []), rule]);
    });
    // One engine per event type, so a DNS record never runs the alert rules.
    for (const [type, rules] of byType) {
      const engine = new Engine([], { allowUndefinedFacts: true });
      for (const op of operators) engine.addOperator(op);
      engine.addFact('window', async (params: Record<string, unknown>, almanac: Almanac) => {
        const counts = await almanac.factValue<Record<string, number>>(WINDOW_COUNTS);
        return counts[String(params.name)] ?? 0;
      });
      const used = new Set<string>();
      for (const rule of rules) {
        engine.addRule({ name: rule.name, priority: rule.priority, conditions: rule.conditions as never, event: { type: rule.decision.action, params: { rule: rule.name } } });
        collectFacts(rule.conditions, used);
      }
      // The almanac turns every run-time fact into a Fact object; handing it only the
      // facts these rules read is most of the cost of a run.
      const usesWindows = used.delete('window');
      this.engines.set(type, { engine, facts: [...used] as (keyof VerdictFacts)[], usesWindows });
    }
  }

  /** Evaluates one verdict. */
  async evaluate(facts: VerdictFacts): Promise<Evaluation> {
    const counts = this.windows.record(facts);
    const entry = this.engines.get(facts.event_type);
    if (!entry) return { decision: null, matched: [] };
    const runFacts: Record<string, unknown> = entry.usesWindows ? { [WINDOW_COUNTS]: counts } : {};
    const keyParts: unknown[] = [facts.event_type];
    for (const name of entry.facts) {
      runFacts[name] = facts[name];
      keyParts.push(facts[name]);
    }
    if (entry.usesWindows) {
      // A count above every constant the rules compare it with behaves like that bound + 1
      // in every comparison, so clamping keeps the key exact and the cache effective.
      for (const name in counts) keyParts.push(Math.min(counts[name]!, this.windowClamp.get(name) ?? Infinity));
    }
    // Rules are pure functions of the facts they read (operators and allow-lists are
    // fixed for the evaluator's life), so the same facts always match the same rules.
    // IDS streams repeat themselves (one signature, one source, thousands of times);
    // this cache turns the repeats into a map lookup instead of an engine run.
    const key = JSON.stringify(keyParts);
    let matched = this.cache.get(key);
    if (matched === undefined) {
      const result = await entry.engine.run(runFacts);
      matched = result.results
        .map((r) => this.ruleByName(r.name))
        .sort((a, b) => b.priority - a.priority || (this.order.get(a.name) ?? 0) - (this.order.get(b.name) ?? 0));
      if (this.cacheLimit > 0) {
        if (this.cache.size >= this.cacheLimit) this.cache.clear();
        this.cache.set(key, matched);
      }
      this.stats.engineRuns++;
    } else {
      this.stats.cacheHits++;
    }
    if (matched.length === 0) return { decision: null, matched: [] };
    const rule = matched[0]!;
    const names = matched.map((r) => r.name);
    if (rule.decision.target === 'remote') {
      const remote = remoteEndpoint(facts.src_ip, facts.dest_ip, this.context.localNetworks?.());
      if ('withheld' in remote) return { decision: null, matched: names, withheld: { rule: rule.name, reason: remote.withheld, detail: remote.detail } };
      return { decision: this.decide(rule, facts, remote.address), matched: names };
    }
    return { decision: this.decide(rule, facts, facts[rule.decision.target]), matched: names };
  }

  /** The rule set this evaluator runs. */
  get rules(): RuleSet {
    return this.ruleSet;
  }

  /** Window sizes, for metrics. */
  windowSizes(): Record<string, number> {
    return this.windows.sizes();
  }

  private ruleByName(name: string): RuleSpec {
    return this.ruleSet.rules[this.order.get(name) ?? -1]!;
  }

  private decide(rule: RuleSpec, facts: VerdictFacts, address: string | undefined): Decision | null {
    const spec = rule.decision;
    if (address === undefined) return null;
    const length = address.includes(':') ? spec.prefixLengthV6 : spec.prefixLengthV4;
    const key = `${address}/${length}`;
    let target = this.targets.get(key);
    if (target === undefined) {
      target = prefixOf(address, length);
      if (this.targets.size >= 131_072) this.targets.clear();
      this.targets.set(key, target);
    }
    if (target === null) return null;
    const evidence: DecisionEvidence = { source: facts.source, eventType: facts.event_type, timestamp: facts.timestamp };
    if (facts.signature_id !== undefined) evidence.signatureId = facts.signature_id;
    if (facts.signature !== undefined) evidence.signature = facts.signature;
    if (facts.flow_id !== undefined) evidence.flowId = facts.flow_id;
    if (facts.src_ip !== undefined) evidence.srcIp = facts.src_ip;
    if (facts.dest_ip !== undefined) evidence.destIp = facts.dest_ip;
    const appProto = facts.ndpi_protocol ?? facts.app_proto;
    if (appProto !== undefined) evidence.appProto = appProto;
    const what = facts.signature ? `${facts.signature_id}: ${facts.signature}` : facts.ndpi_protocol ? `nDPI ${facts.ndpi_protocol}` : facts.event_type;
    const decision: Decision = {
      rule: rule.name,
      action: spec.action,
      target,
      durationMs: spec.duration,
      escalation: { factor: spec.escalation.factor, maxDurationMs: spec.escalation.maxDuration },
      memoryMs: spec.memory,
      reason: `${rule.name}: ${what} (${facts.src_ip ?? '?'} → ${facts.dest_ip ?? '?'})`.slice(0, 200),
      evidence,
    };
    if (spec.action === 'rate-limit' && spec.rateLimitPps !== undefined) decision.rateLimitPps = spec.rateLimitPps;
    if (spec.action === 'quarantine') decision.quarantineLabel = spec.quarantineLabel;
    return decision;
  }
}

/** Adds every fact name a condition tree reads to `out`. */
function collectFacts(node: unknown, out: Set<string>): void {
  if (typeof node !== 'object' || node === null) return;
  const c = node as Record<string, unknown>;
  if (typeof c.fact === 'string') out.add(c.fact);
  for (const key of ['all', 'any']) if (Array.isArray(c[key])) for (const child of c[key] as unknown[]) collectFacts(child, out);
  if (c.not) collectFacts(c.not, out);
}

/**
 * The value above which a window's count can no longer change any rule's outcome:
 * one more than the largest number any condition compares it with; Infinity when a
 * condition compares it with something else (no clamping then).
 */
function windowBound(rules: readonly RuleSpec[], name: string): number {
  let max = -Infinity;
  let exact = true;
  const visit = (node: unknown): void => {
    if (typeof node !== 'object' || node === null) return;
    const c = node as Record<string, unknown>;
    if (c.fact === 'window' && (c.params as { name?: unknown } | undefined)?.name === name) {
      const values = Array.isArray(c.value) ? c.value : [c.value];
      for (const v of values) {
        if (typeof v === 'number' && Number.isFinite(v)) max = Math.max(max, v);
        else exact = false;
      }
    }
    for (const key of ['all', 'any']) if (Array.isArray(c[key])) (c[key] as unknown[]).forEach(visit);
    if (c.not) visit(c.not);
  };
  rules.forEach((r) => visit(r.conditions));
  return exact && max > -Infinity ? Math.floor(max) + 1 : Infinity;
}
