/**
 * A staged rollout's strategy: which nodes go in which wave, how many at once, how long each
 * wave bakes, which health gates must hold during the bake, and what a failed gate does —
 * plus the pure wave planner that turns a strategy and the target nodes into waves.
 *
 *   strategy: {
 *     waves: [{ name?, nodes? | selector? | percent? | size?, parallelism?, maxUnavailable?, bakeSeconds?, gates? }],
 *     gates?: { <name>: GateSpec },
 *     onGateFailure?: 'rollback' (default) | 'pause'
 *   }
 *
 * Planning is deterministic (the change workflow runs it): waves take nodes in target
 * order from the nodes no earlier wave took, and every target lands in exactly one wave.
 *
 * Pure code: workflows import it (no Node built-ins here).
 */
import { z } from 'zod';
import { gatesSchema, type GateSpec } from './gates';
import { labelSelectorSchema, matchesSelector, type InventoryNode, type LabelSelector } from './inventory';
import { formatPath } from './issue-path';

/** DNS-1123 label: node names (as in change requests). */
const NODE_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
/** Wave names: they appear in the status, the audit trail, search attributes and child workflow ids. */
const WAVE_NAME = /^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$/;

/** Longest bake of one wave: a week, like confirmTimeout. */
export const MAX_BAKE_SECONDS = 7 * 24 * 3600;
/** Most waves a strategy may have: each is a child workflow and a few events in the change's history. */
export const MAX_WAVES = 100;
/** Bake of the default strategy's canary and middle wave, when the request says nothing else. */
export const DEFAULT_BAKE_SECONDS = 30;

/** One wave: which nodes (one of nodes / selector / percent / size; none: all that remain) and how to roll them. */
export const waveSchema = z
  .object({
    name: z.string().regex(WAVE_NAME, 'must be 1–32 lowercase letters, digits or "-"').optional(),
    /** These nodes (each one of the targets, in no earlier wave). */
    nodes: z
      .array(z.string().regex(NODE_NAME, 'must be a node name (DNS-1123 label: lowercase letters, digits, "-")'))
      .min(1, 'must name at least one node (leave "nodes" out to take every remaining node)')
      .refine((n) => new Set(n).size === n.length, 'must not name a node twice')
      .optional(),
    /** The remaining targets whose inventory labels match (Kubernetes label selector semantics). */
    selector: labelSelectorSchema.optional(),
    /** This share of the nodes no earlier wave took, rounded up (at least one while any remain). */
    percent: z.number().gt(0, 'must be more than 0').max(100, 'must be at most 100').optional(),
    /** This many of the nodes no earlier wave took (the default strategy's canary is `size: 1`). */
    size: z.number().int('must be a whole number').min(1, 'must be at least 1').optional(),
    /** Node workflows of this wave running at once (default: the whole wave). */
    parallelism: z.number().int('must be a whole number').min(1, 'must be at least 1').max(1000, 'must be at most 1000').optional(),
    /** Nodes of this wave that may be mid-change (unavailable) at once; caps parallelism (default: no cap). */
    maxUnavailable: z.number().int('must be a whole number').min(1, 'must be at least 1').optional(),
    /** How long the wave bakes once applied, its gates measuring, before the next wave starts (default 0). */
    bakeSeconds: z.number().int('must be a whole number').min(0, 'must be 0 or more').max(MAX_BAKE_SECONDS, `must be at most ${MAX_BAKE_SECONDS} (7 days)`).default(0),
    /** Names of gates (from the strategy's `gates`) that must hold during this wave's bake. */
    gates: z.array(z.string()).max(16, 'must name at most 16 gates').default([]),
  })
  .strict()
  .superRefine((wave, ctx) => {
    const given = (['nodes', 'selector', 'percent', 'size'] as const).filter((k) => wave[k] !== undefined);
    if (given.length > 1) {
      ctx.addIssue({ code: 'custom', path: [given[1] as string], message: `give at most one of nodes, selector, percent or size (this wave has ${given.join(' and ')})` });
    }
  });

/** What a failed gate does: restore every node changed so far (default), or wait for an operator. */
export const onGateFailureSchema = z.enum(['rollback', 'pause'], { error: 'must be "rollback" or "pause"' });

export const rolloutStrategySchema = z
  .object({
    waves: z.array(waveSchema).min(1, 'must have at least one wave').max(MAX_WAVES, `must have at most ${MAX_WAVES} waves`),
    gates: gatesSchema.default({}),
    onGateFailure: onGateFailureSchema.default('rollback'),
  })
  .strict()
  .superRefine((strategy, ctx) => {
    const known = Object.keys(strategy.gates);
    const names = new Map<string, number>();
    strategy.waves.forEach((wave, i) => {
      wave.gates.forEach((gate, j) => {
        if (!known.includes(gate)) {
          ctx.addIssue({ code: 'custom', path: ['waves', i, 'gates', j], message: `names no gate of strategy.gates (${known.length > 0 ? `known: ${known.join(', ')}` : 'it defines none'})` });
        }
      });
      const name = waveName(wave, i);
      const earlier = names.get(name);
      if (earlier !== undefined) ctx.addIssue({ code: 'custom', path: ['waves', i, 'name'], message: `"${name}" is also the name of waves[${earlier}]` });
      names.set(name, i);
    });
  });

export type Wave = z.output<typeof waveSchema>;
export type RolloutStrategy = z.output<typeof rolloutStrategySchema>;
export type RolloutStrategyInput = z.input<typeof rolloutStrategySchema>;

/** A wave's name: its own, or `wave-<n>` (1-based). */
export function waveName(wave: Pick<Wave, 'name'>, index: number): string {
  return wave.name ?? `wave-${index + 1}`;
}

/**
 * The strategy used when a request gives none: one canary node, bake; half of the rest,
 * bake; then everything left. Fewer targets, fewer waves (a single target is one wave), and
 * the last wave does not bake (no gates are defined, so a bake there would only wait).
 */
export function defaultStrategy(targetCount: number, bakeSeconds = DEFAULT_BAKE_SECONDS): RolloutStrategy {
  const waves: Wave[] =
    targetCount <= 1
      ? [{ name: 'all', bakeSeconds: 0, gates: [] }]
      : targetCount === 2
        ? [
            { name: 'canary', size: 1, bakeSeconds, gates: [] },
            { name: 'rest', bakeSeconds: 0, gates: [] },
          ]
        : [
            { name: 'canary', size: 1, bakeSeconds, gates: [] },
            { name: 'half', percent: 50, bakeSeconds, gates: [] },
            { name: 'rest', bakeSeconds: 0, gates: [] },
          ];
  return { waves, gates: {}, onGateFailure: 'rollback' };
}

/** One wave as the rollout runs it. */
export interface PlannedWave {
  /** 0-based position in the strategy. */
  index: number;
  name: string;
  /** In target order. */
  nodes: string[];
  /** Node workflows at once: min(parallelism, maxUnavailable), at least 1, at most the wave's size. */
  concurrency: number;
  bakeSeconds: number;
  /** Names of the gates measured during the bake. */
  gates: string[];
}

/** A problem with planning: the field and the rule. */
export interface PlanIssue {
  /** The field as operators write it: `strategy.waves[1].nodes[0]`. */
  field: string;
  /** The same as a path (for zod issues). */
  path: (string | number)[];
  message: string;
}

function issue(path: (string | number)[], message: string): PlanIssue {
  return { field: formatPath(path), path, message };
}

/**
 * Splits `targets` (in order, with their inventory labels) into the strategy's waves. Every
 * target lands in exactly one wave; a wave may come out empty (a selector matching none of the
 * remaining nodes), and the rollout skips it. Issues: a wave naming a node that is not a target
 * or is already in an earlier wave, and targets left in no wave.
 */
export function planWaves(strategy: Pick<RolloutStrategy, 'waves'>, targets: readonly InventoryNode[]): { ok: true; waves: PlannedWave[] } | { ok: false; issues: PlanIssue[] } {
  const issues: PlanIssue[] = [];
  const targetNames = new Set(targets.map((t) => t.name));
  const takenBy = new Map<string, string>();
  let remaining = [...targets];
  const waves: PlannedWave[] = [];
  strategy.waves.forEach((wave, index) => {
    const name = waveName(wave, index);
    let picked: InventoryNode[];
    if (wave.nodes) {
      const wanted = new Set<string>();
      wave.nodes.forEach((node, j) => {
        const path = ['strategy', 'waves', index, 'nodes', j];
        if (!targetNames.has(node)) issues.push(issue(path, `"${node}" is not one of the change's targets`));
        else if (takenBy.has(node)) issues.push(issue(path, `"${node}" is already in wave "${takenBy.get(node)}"`));
        else wanted.add(node);
      });
      picked = remaining.filter((n) => wanted.has(n.name));
    } else if (wave.selector) {
      const selector: LabelSelector = wave.selector;
      picked = remaining.filter((n) => matchesSelector(selector, n.labels));
    } else if (wave.percent !== undefined) {
      picked = remaining.slice(0, Math.ceil((remaining.length * wave.percent) / 100 - 1e-9));
    } else if (wave.size !== undefined) {
      picked = remaining.slice(0, wave.size);
    } else {
      picked = remaining;
    }
    const chosen = new Set(picked.map((n) => n.name));
    for (const n of chosen) takenBy.set(n, name);
    remaining = remaining.filter((n) => !chosen.has(n.name));
    const concurrency = Math.max(1, Math.min(wave.parallelism ?? picked.length, wave.maxUnavailable ?? Number.MAX_SAFE_INTEGER, Math.max(picked.length, 1)));
    waves.push({ index, name, nodes: picked.map((n) => n.name), concurrency, bakeSeconds: wave.bakeSeconds, gates: wave.gates });
  });
  if (remaining.length > 0) {
    const shown = remaining.slice(0, 5).map((n) => n.name);
    issues.push(
      issue(['strategy', 'waves'], `leave ${remaining.length} target(s) in no wave (${shown.join(', ')}${remaining.length > shown.length ? ', …' : ''}); end with a wave without nodes, selector, percent or size to take the rest`),
    );
  }
  return issues.length > 0 ? { ok: false, issues } : { ok: true, waves };
}

/** The specs of a wave's gates, by name (the strategy validated that each exists). */
export function waveGateSpecs(strategy: Pick<RolloutStrategy, 'gates'>, wave: Pick<PlannedWave, 'gates'>): Record<string, GateSpec> {
  const specs: Record<string, GateSpec> = {};
  for (const gate of wave.gates) {
    const spec = strategy.gates[gate];
    if (spec) specs[gate] = spec;
  }
  return specs;
}

/** Whether the strategy picks nodes by label (so the rollout needs the inventory's labels). */
export function usesSelectors(strategy: Pick<RolloutStrategy, 'waves'>): boolean {
  return strategy.waves.some((w) => w.selector !== undefined);
}
