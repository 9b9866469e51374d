/**
 * The enforcement guard's configuration, as the cluster worker holds it (FOS1_GUARD_FILE,
 * parsed by workers/config.ts). The enforcement and coordinator workflows read it through
 * this local activity, so the value they enforce with is recorded in their history (a
 * replay uses the recorded value, not whatever the worker holds then) and never comes from
 * a workflow input or a signal.
 */
import type { GuardConfig } from '../model/enforcement-guard';

/** What the activity needs: the configuration, or a function returning the current one (tests change it between cases). */
export interface EnforcementConfigDeps {
  guard: GuardConfig | (() => GuardConfig);
}

/** Builds the enforcement configuration activity of the cluster worker. */
export function createEnforcementConfigActivities(deps: EnforcementConfigDeps) {
  return {
    /** The cluster worker's guard configuration (allow-lists, prefix bounds, caps). */
    async readEnforcementConfig(): Promise<GuardConfig> {
      return typeof deps.guard === 'function' ? deps.guard() : deps.guard;
    },
  };
}

/** The activity interface workflows proxy (`import type` only). */
export type EnforcementConfigActivities = ReturnType<typeof createEnforcementConfigActivities>;
