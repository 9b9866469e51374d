/**
 * A staged rollout as the CLI shows it (`fos1 status ID [--watch]`): each wave with its state
 * and bake, each node of the wave with its phase and outcome, each gate with its verdict and
 * tally, and the gates measured again after a rollback. The frame a TTY redraws in place
 * ({@link renderRollout}) and the plain lines for logs and pipes ({@link rolloutEvents}).
 * Pure functions of the API's status answer (workflows/change.ts `ChangeStatus`).
 */
import { colourDiffLine, type Palette } from './render';

/** A gate's verdict, as far as the CLI reads it. */
export interface GateVerdictView {
  gate?: string;
  kind?: string;
  phase: string;
  tally?: { successes: number; failures: number; inconclusives: number };
}

/** A wave, as far as the CLI reads it. */
export interface WaveView {
  index: number;
  name: string;
  nodes: string[];
  state: string;
  message?: string;
  bakeSeconds?: number;
  bakeEndsAt?: string;
  gateVerdicts?: Record<string, GateVerdictView>;
}

/** A node's restore that is retrying (workflows/node-recovery.ts), as the status carries it. */
export interface RestoreRetryView {
  attempt: number;
  lastError: string;
  since: string;
  nextTryAt?: string;
}

/** A node's report, as far as the rollout view reads it. */
export interface RolloutNodeView {
  outcome: string;
  wave?: string;
  phase?: string;
  diff?: string[];
  error?: { type: string; message: string };
  restore?: RestoreRetryView;
}

/** The line of a retrying restore: how many rounds, when the next one starts, why the last did not verify. */
export function restoreLine(r: RestoreRetryView): string {
  const rounds = r.attempt === 0 ? 'the rollback did not verify' : `${r.attempt} ${r.attempt === 1 ? 'retry' : 'retries'} failed`;
  const next = r.nextTryAt ? `next try ${r.nextTryAt}` : 'trying now';
  return `restore retrying since ${r.since}: ${rounds}, ${next}; last error: ${r.lastError}`;
}

/** The parts of the status the rollout view reads. */
export interface RolloutStatusView {
  waves?: WaveView[];
  nodes?: Record<string, RolloutNodeView>;
  currentWave?: string;
  postRollbackGates?: Record<string, GateVerdictView>;
}

/** True when the status has waves in the shape of a staged rollout. */
export function hasWaves(status: { waves?: unknown }): status is { waves: WaveView[] } {
  const isWave = (w: unknown) => w !== null && typeof w === 'object' && typeof (w as WaveView).index === 'number' && typeof (w as WaveView).name === 'string' && typeof (w as WaveView).state === 'string' && Array.isArray((w as WaveView).nodes);
  return Array.isArray(status.waves) && status.waves.length > 0 && status.waves.every(isWave);
}

const GOOD = new Set(['committed', 'planned', 'success', 'applied', 'unchanged', 'done']);
const BAD = new Set(['failed', 'gate-failed', 'restore-failed', 'failure', 'rolled-back', 'rollback-failed', 'not-applied', 'restored', 'aborted']);

function coloured(state: string, p: Palette): string {
  if (GOOD.has(state)) return p.green(state);
  if (BAD.has(state)) return p.red(state);
  return p.yellow(state);
}

function tally(v: GateVerdictView): string {
  if (!v.tally) return '';
  const { successes, failures, inconclusives } = v.tally;
  return ` (${successes} ok, ${failures} failed, ${inconclusives} inconclusive)`;
}

function gateLine(name: string, v: GateVerdictView, p: Palette): string {
  return `gate ${name}${v.kind ? ` [${v.kind}]` : ''} ${coloured(v.phase, p)}${tally(v)}`;
}

function waveHead(w: WaveView, total: number, current: string | undefined, p: Palette): string {
  const marker = w.name === current && !GOOD.has(w.state) && !BAD.has(w.state) ? '▶' : ' ';
  const bake = w.bakeEndsAt ? `  bake ends ${w.bakeEndsAt}` : w.bakeSeconds ? p.dim(`  bake ${w.bakeSeconds}s`) : '';
  return `${marker} wave ${w.index + 1}/${total} ${p.bold(w.name)}  ${coloured(w.state, p)}${bake}`;
}

/** The rollout's lines of the status frame: waves, their nodes and gates; post-rollback gates. */
export function renderRollout(status: RolloutStatusView & { waves: WaveView[] }, p: Palette): string[] {
  const lines: string[] = [p.bold('waves:')];
  const total = status.waves.length;
  for (const w of status.waves) {
    lines.push(waveHead(w, total, status.currentWave, p));
    if (w.message && w.message !== w.state) lines.push(`      ${p.dim(w.message)}`);
    for (const node of w.nodes) {
      const r = status.nodes?.[node];
      const phase = r?.phase ?? 'pending';
      const outcome = r && r.outcome !== 'pending' ? `  ${coloured(r.outcome, p)}` : '';
      lines.push(`      ${node}  ${coloured(phase, p)}${outcome}${r?.error ? `  ${p.red(`${r.error.type}: ${r.error.message}`)}` : ''}`);
      if (r?.restore) lines.push(`        ${p.yellow(restoreLine(r.restore))}`);
      for (const line of r?.diff ?? []) lines.push(`        ${colourDiffLine(line, p)}`);
    }
    for (const [name, v] of Object.entries(w.gateVerdicts ?? {})) lines.push(`      ${gateLine(name, v, p)}`);
  }
  const post = Object.entries(status.postRollbackGates ?? {});
  if (post.length > 0) {
    lines.push(p.bold('after the rollback:'));
    for (const [name, v] of post) lines.push(`  ${gateLine(name, v, p)}`);
  }
  return lines;
}

/**
 * What changed in the rollout between two statuses, as plain lines: a wave's state, a node's
 * phase or outcome, a gate's verdict, a post-rollback verdict. `previous` undefined: all of it.
 */
export function rolloutEvents(previous: RolloutStatusView | undefined, next: RolloutStatusView & { waves: WaveView[] }): string[] {
  const events: string[] = [];
  const total = next.waves.length;
  const before = new Map((previous?.waves ?? []).map((w) => [w.index, w]));
  for (const w of next.waves) {
    const old = before.get(w.index);
    const label = `wave ${w.index + 1}/${total} ${w.name}`;
    if (old?.state !== w.state || (old?.bakeEndsAt !== w.bakeEndsAt && w.bakeEndsAt)) {
      events.push(`${label}: ${w.state}${w.bakeEndsAt ? ` (bake ends ${w.bakeEndsAt})` : ''}${w.message && w.message !== w.state ? ` — ${w.message}` : ''}`);
    }
    for (const node of w.nodes) {
      const r = next.nodes?.[node];
      const o = previous?.nodes?.[node];
      const was = o ? `${o.phase ?? 'pending'}/${o.outcome}` : 'pending/pending';
      const now = r ? `${r.phase ?? 'pending'}/${r.outcome}` : 'pending/pending';
      // A retrying restore is an event each time its round count or next try moves.
      if (r?.restore && (r.restore.attempt !== o?.restore?.attempt || r.restore.nextTryAt !== o?.restore?.nextTryAt)) events.push(`${label} node ${node}: ${restoreLine(r.restore)}`);
      if (previous && was === now) continue;
      if (!previous && now === 'pending/pending') continue;
      events.push(`${label} node ${node}: ${r?.phase ?? 'pending'}, ${r?.outcome ?? 'pending'}${r?.error ? ` (${r.error.type}: ${r.error.message})` : ''}`);
    }
    for (const [name, v] of Object.entries(w.gateVerdicts ?? {})) {
      const ov = old?.gateVerdicts?.[name];
      if (ov?.phase === v.phase && JSON.stringify(ov?.tally) === JSON.stringify(v.tally)) continue;
      events.push(`${label} ${gateLine(name, v, plain)}`);
    }
  }
  for (const [name, v] of Object.entries(next.postRollbackGates ?? {})) {
    const ov = previous?.postRollbackGates?.[name];
    if (ov?.phase === v.phase && JSON.stringify(ov?.tally) === JSON.stringify(v.tally)) continue;
    events.push(`after the rollback ${gateLine(name, v, plain)}`);
  }
  return events;
}

const id = (s: string) => s;
const plain: Palette = { green: id, red: id, yellow: id, bold: id, dim: id };
