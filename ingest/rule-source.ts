/**
 * The ingest's rule set, reloaded without a restart: the base rule set file
 * (FOS1_RULES_FILE, watched) plus the rules of every DPIProfile the ingest follows
 * (ingest/dpi-profile-controller.ts). Each change composes a new rule set, validates it as a
 * whole and, only if it is valid, swaps a new evaluator into the pipeline; otherwise the rules
 * in force stay (a bad file is logged; a bad profile is reported on the profile).
 *
 * A reload starts the sliding windows afresh (they belong to one evaluator); the coalescing
 * of the bridge and the enforcement workflows' memory of offences are untouched.
 */
import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { Logger } from 'pino';
import type { ValidationIssue } from '../model/change-request';
import type { EnforcementGuard } from '../model/enforcement-guard';
import { RuleEvaluator, type EvaluatorContext } from '../rules/evaluator';
import { loadRuleSetFile, RuleSetError, validateRuleSet, type RuleSet, type RuleSpec } from '../rules/rule-set';

/** Options of {@link RuleSource}. */
export interface RuleSourceOptions {
  baseFile: string;
  guard: EnforcementGuard;
  allowListNames: ReadonlySet<string>;
  context: EvaluatorContext;
  /** Called with each new evaluator (the pipeline's setEvaluator). */
  onReload: (evaluator: RuleEvaluator) => void;
  logger: Logger;
  /** Watch the base file and reload when it changes (default true). */
  watchFile?: boolean;
}

/** The outcome of a change to the rules: applied, or refused with every problem. */
export type RuleChange = { ok: true; ruleSet: RuleSet } | { ok: false; issues: ValidationIssue[] };

/** Holds the base rule set and the profiles' rules; builds the evaluator. */
export class RuleSource {
  /** How many times a new evaluator was swapped in (0 = the one from start). */
  reloads = 0;
  private base: RuleSet;
  private readonly profiles = new Map<string, RuleSpec[]>();
  private current: RuleEvaluator;
  private watcher: FSWatcher | undefined;
  private debounce: NodeJS.Timeout | undefined;

  /** Loads the base file; throws {@link RuleSetError} when it is invalid (a configuration error at start). */
  constructor(private readonly options: RuleSourceOptions) {
    this.base = loadRuleSetFile(options.baseFile, { allowListNames: options.allowListNames });
    this.current = new RuleEvaluator(this.base, options.guard, undefined, options.context);
    if (options.watchFile ?? true) {
      // The folder, not the file: editors and `kubectl`'s ConfigMap updates replace the file (rename), which a file watch loses.
      const name = basename(options.baseFile);
      this.watcher = watch(dirname(options.baseFile), (_event, file) => {
        if (file !== null && file !== name && !file.startsWith('..')) return;
        clearTimeout(this.debounce);
        this.debounce = setTimeout(() => this.reloadFile(), 200);
      });
    }
  }

  /** The evaluator in force. */
  get evaluator(): RuleEvaluator {
    return this.current;
  }

  /** Names of the rules in force that came from `key`'s profile. */
  rulesOf(key: string): string[] {
    return (this.profiles.get(key) ?? []).map((r) => r.name);
  }

  /** Re-reads the base file; a bad one is logged and the rules in force stay. */
  reloadFile(): RuleChange {
    let base: RuleSet;
    try {
      base = loadRuleSetFile(this.options.baseFile, { allowListNames: this.options.allowListNames });
    } catch (err) {
      if (!(err instanceof RuleSetError)) throw err;
      this.options.logger.error({ issues: err.issues }, `${err.message}\nthe rules in force stay`);
      return { ok: false, issues: err.issues };
    }
    if (JSON.stringify(base) === JSON.stringify(this.base)) return { ok: true, ruleSet: this.current.rules };
    const change = this.compose(base, this.profiles);
    if (change.ok) this.base = base;
    return change;
  }

  /** Puts a profile's rules in force (null removes them); refused as a whole when the result is invalid. */
  setProfile(key: string, rules: RuleSpec[] | null): RuleChange {
    const next = new Map(this.profiles);
    if (rules === null) next.delete(key);
    else next.set(key, rules);
    const same = JSON.stringify(this.profiles.get(key) ?? null) === JSON.stringify(rules);
    if (same) return { ok: true, ruleSet: this.current.rules };
    const change = this.compose(this.base, next);
    if (change.ok) {
      this.profiles.clear();
      for (const [k, v] of next) this.profiles.set(k, v);
    }
    return change;
  }

  /** Stops watching the file. */
  close(): void {
    clearTimeout(this.debounce);
    this.watcher?.close();
  }

  private compose(base: RuleSet, profiles: ReadonlyMap<string, RuleSpec[]>): RuleChange {
    // Profiles in a stable order, so equal inputs give equal rule sets (ties go to the earlier rule).
    const extra = [...profiles.keys()].sort().flatMap((k) => profiles.get(k)!);
    let ruleSet: RuleSet;
    try {
      ruleSet = validateRuleSet({ ...base, rules: [...base.rules, ...extra] }, `${this.options.baseFile} + ${profiles.size} DPIProfile(s)`, { allowListNames: this.options.allowListNames });
    } catch (err) {
      if (!(err instanceof RuleSetError)) throw err;
      return { ok: false, issues: err.issues };
    }
    this.current = new RuleEvaluator(ruleSet, this.options.guard, undefined, this.options.context);
    this.reloads++;
    this.options.onReload(this.current);
    this.options.logger.info({ ruleSet: ruleSet.name, rules: ruleSet.rules.length, profiles: profiles.size }, 'rule set reloaded');
    return { ok: true, ruleSet };
  }
}
