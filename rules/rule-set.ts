/**
 * Rule sets: JSON files of json-rules-engine rules plus what fos1 adds around them
 * (the event types a rule looks at, the decision it makes, sliding windows).
 *
 * Validated at load: a rule set with any problem is refused as a whole, with every
 * problem listed as `path: rule` (`rules[2].conditions.all[0].operator: "inCIDR" is not
 * an operator; …`), so a typo never silently turns a blocking rule into a no-op.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { durationMsSchema, formatIssues, type ValidationIssue } from '../model/change-request';
import { formatPath } from '../model/issue-path';
import { DEFAULT_QUARANTINE_LABEL, parseQuarantineLabel, QuarantineInputError } from '../model/quarantine';
import { ENFORCEMENT_ACTIONS } from '../model/enforcement-decision';
import { FACT_NAMES } from './facts';
import { checkOperatorValue, KNOWN_OPERATORS } from './operators';

const NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const nameSchema = z.string().regex(NAME, 'must be 1–63 lowercase letters, digits or "-"');
const factName = z.enum(FACT_NAMES as [string, ...string[]], { message: `must be one of the facts: ${FACT_NAMES.join(', ')}` });
const scalar = z.union([z.string(), z.number(), z.boolean()]);

/** What a rule decides when its conditions hold. */
export const decisionSpecSchema = z
  .object({
    action: z.enum(ENFORCEMENT_ACTIONS),
    /**
     * Which address of the event the action applies to. `remote`: the flow's remote
     * endpoint, the side outside the node's local networks, whichever position it holds;
     * nothing when both sides are local or neither is (model/local-networks.ts, docs/dpi.md).
     */
    target: z.enum(['src_ip', 'dest_ip', 'remote']).default('src_ip'),
    prefixLengthV4: z.number().int().min(0).max(32).default(32),
    prefixLengthV6: z.number().int().min(0).max(128).default(128),
    /** Base duration of a block, quarantine or rate limit. */
    duration: durationMsSchema.default(3_600_000),
    escalation: z
      .object({
        factor: z.number().min(1, 'must be 1 (no escalation) or more').max(100).default(2),
        maxDuration: durationMsSchema.default(7 * 24 * 3_600_000),
      })
      .strict()
      .default({ factor: 2, maxDuration: 7 * 24 * 3_600_000 }),
    /** How long a lifted target's offences still count towards escalation. */
    memory: durationMsSchema.default(24 * 3_600_000),
    rateLimitPps: z.number().int().min(1).max(100_000_000).optional(),
    quarantineLabel: z
      .string()
      .superRefine((text, ctx) => {
        // The same check the quarantine workflow makes, so a bad label fails at load, not at the first alert.
        try {
          parseQuarantineLabel(text);
        } catch (err) {
          if (!(err instanceof QuarantineInputError)) throw err;
          ctx.addIssue({ code: 'custom', message: `must be a Kubernetes label "key=value": ${err.rule}` });
        }
      })
      .default(DEFAULT_QUARANTINE_LABEL),
  })
  .strict()
  .superRefine((d, ctx) => {
    if (d.action === 'rate-limit' && d.rateLimitPps === undefined) {
      ctx.addIssue({ code: 'custom', path: ['rateLimitPps'], message: 'a rate-limit decision needs rateLimitPps' });
    }
  });

/** One rule. `conditions` is json-rules-engine's condition tree, checked separately. */
export const ruleSpecSchema = z
  .object({
    name: nameSchema,
    description: z.string().min(1, 'must say what the rule is for').max(500),
    /** Higher runs first; among matching rules the highest priority decides. */
    priority: z.number().int().min(1).max(1000).default(1),
    /** Event types the rule looks at (`alert`, `dns`, `ndpi`, …); others never reach it. */
    eventTypes: z.array(z.string().min(1)).min(1, 'must name at least one event type'),
    conditions: z.record(z.string(), z.unknown()),
    decision: decisionSpecSchema,
  })
  .strict();

/** A sliding-window counter declared by the rule set. */
export const windowSpecSchema = z
  .object({
    name: nameSchema,
    groupBy: factName,
    window: durationMsSchema,
    where: z.partialRecord(factName, z.union([scalar, z.array(scalar).min(1)])).default({}),
  })
  .strict();

export const ruleSetSchema = z
  .object({
    name: nameSchema,
    description: z.string().max(2000).default(''),
    windows: z.array(windowSpecSchema).default([]),
    rules: z.array(ruleSpecSchema).min(1, 'a rule set needs at least one rule'),
  })
  .strict();

export type RuleSet = z.output<typeof ruleSetSchema>;
export type RuleSpec = z.output<typeof ruleSpecSchema>;
export type DecisionSpec = z.output<typeof decisionSpecSchema>;

/** A rule set that failed validation; `issues` lists every problem. */
export class RuleSetError extends Error {
  override readonly name = 'RuleSetError';
  constructor(
    readonly source: string,
    readonly issues: ValidationIssue[],
  ) {
    super(`invalid rule set ${source}:\n${formatIssues(issues)}`);
  }
}

/** Options of {@link validateRuleSet}. */
export interface RuleSetContext {
  /** Allow-list names the configuration defines; `inAllowList` must name one of them. */
  allowListNames?: ReadonlySet<string>;
}

/** Validates a decoded rule set; throws {@link RuleSetError} naming each field and rule. */
export function validateRuleSet(input: unknown, source = '(inline)', context: RuleSetContext = {}): RuleSet {
  const parsed = ruleSetSchema.safeParse(input);
  if (!parsed.success) {
    throw new RuleSetError(source, parsed.error.issues.map((i) => ({ field: formatPath(i.path), message: i.message })));
  }
  const set = parsed.data;
  const issues: ValidationIssue[] = [];
  const windowNames = new Set<string>();
  set.windows.forEach((w, i) => {
    if (windowNames.has(w.name)) issues.push({ field: `windows[${i}].name`, message: `duplicate window "${w.name}"` });
    windowNames.add(w.name);
  });
  const ruleNames = new Set<string>();
  set.rules.forEach((rule, i) => {
    if (ruleNames.has(rule.name)) issues.push({ field: `rules[${i}].name`, message: `duplicate rule "${rule.name}"` });
    ruleNames.add(rule.name);
    checkCondition(rule.conditions, `rules[${i}].conditions`, true, issues, windowNames, context);
  });
  if (issues.length > 0) throw new RuleSetError(source, issues);
  return set;
}

/** Reads and validates a rule set file. */
export function loadRuleSetFile(path: string, context: RuleSetContext = {}): RuleSet {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new RuleSetError(path, [{ field: '(file)', message: `cannot be read: ${err instanceof Error ? err.message : String(err)}` }]);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new RuleSetError(path, [{ field: '(file)', message: `is not JSON: ${err instanceof Error ? err.message : String(err)}` }]);
  }
  return validateRuleSet(json, path, context);
}

/** Checks a json-rules-engine condition tree: shape, fact names, operators and their values. */
function checkCondition(node: unknown, path: string, topLevel: boolean, issues: ValidationIssue[], windows: ReadonlySet<string>, context: RuleSetContext): void {
  if (typeof node !== 'object' || node === null || Array.isArray(node)) {
    issues.push({ field: path, message: 'must be a condition object' });
    return;
  }
  const c = node as Record<string, unknown>;
  const groups = ['all', 'any', 'not'].filter((k) => k in c);
  if (topLevel && groups.length !== 1) {
    issues.push({ field: path, message: 'the top level must be exactly one of "all", "any" or "not"' });
    return;
  }
  if (groups.length > 1) {
    issues.push({ field: path, message: `has ${groups.join(' and ')}; a condition has one of "all", "any", "not", or a fact` });
    return;
  }
  if (groups.length === 1) {
    const key = groups[0]!;
    const extra = Object.keys(c).filter((k) => k !== key && k !== 'name' && k !== 'priority');
    if (extra.length > 0) issues.push({ field: path, message: `has unexpected key(s) ${extra.join(', ')} next to "${key}"` });
    if (key === 'not') {
      checkCondition(c.not, `${path}.not`, false, issues, windows, context);
      return;
    }
    const list = c[key];
    if (!Array.isArray(list) || list.length === 0) {
      issues.push({ field: `${path}.${key}`, message: 'must be a non-empty list of conditions' });
      return;
    }
    list.forEach((child, i) => checkCondition(child, `${path}.${key}[${i}]`, false, issues, windows, context));
    return;
  }
  const extra = Object.keys(c).filter((k) => !['fact', 'operator', 'value', 'params', 'path', 'priority', 'name'].includes(k));
  if (extra.length > 0) issues.push({ field: path, message: `has unexpected key(s) ${extra.join(', ')}` });
  if (typeof c.fact !== 'string' || !(FACT_NAMES as readonly string[]).includes(c.fact)) {
    issues.push({ field: `${path}.fact`, message: `${JSON.stringify(c.fact)} is not a fact; facts are ${FACT_NAMES.join(', ')}` });
  }
  if (typeof c.operator !== 'string' || !KNOWN_OPERATORS.has(c.operator)) {
    issues.push({ field: `${path}.operator`, message: `${JSON.stringify(c.operator)} is not an operator; operators are ${[...KNOWN_OPERATORS].join(', ')}` });
  } else {
    if (!('value' in c)) issues.push({ field: `${path}.value`, message: 'is required' });
    const problem = checkOperatorValue(c.operator, c.value, context.allowListNames);
    if (problem) issues.push({ field: `${path}.value`, message: problem });
  }
  if (c.fact === 'window') {
    const name = (c.params as { name?: unknown } | undefined)?.name;
    if (typeof name !== 'string' || !windows.has(name)) {
      issues.push({ field: `${path}.params.name`, message: `must name a declared window (declared: ${[...windows].join(', ') || 'none'})` });
    }
  }
}
