/**
 * What the CLI prints: the plan's diff per node, the status of a change (a frame that a
 * TTY redraws in place, or plain event lines for logs and pipes), the list of changes.
 * Pure functions of the API's answers, so they are tested without a terminal.
 */

import { hasWaves, renderRollout, restoreLine, rolloutEvents, type RestoreRetryView, type RolloutStatusView } from './rollout-view';

/** ANSI colours, or none (not a TTY, or `NO_COLOR` set: https://no-color.org). */
export interface Palette {
  green(s: string): string;
  red(s: string): string;
  yellow(s: string): string;
  bold(s: string): string;
  dim(s: string): string;
}

const ansi = (open: number, close: number) => (s: string) => `\x1b[${open}m${s}\x1b[${close}m`;

/** A palette for `stream`: colours only on a TTY without NO_COLOR. */
export function paletteFor(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv): Palette {
  const on = stream.isTTY === true && !env.NO_COLOR;
  const plain = (s: string) => s;
  return on
    ? { green: ansi(32, 39), red: ansi(31, 39), yellow: ansi(33, 39), bold: ansi(1, 22), dim: ansi(2, 22) }
    : { green: plain, red: plain, yellow: plain, bold: plain, dim: plain };
}

/** Phases after which a change does nothing more, and whether each is a success. */
export const FINAL_PHASES: Record<string, 'ok' | 'failed'> = {
  applied: 'ok',
  unchanged: 'ok',
  planned: 'ok',
  rejected: 'failed',
  reverted: 'failed',
  'rolled-back': 'failed',
  'rollback-failed': 'failed',
  // An approval that lapsed, and a change aborted before anything was applied (docs/approvals.md).
  expired: 'failed',
  aborted: 'failed',
};

/** The status answer, as far as the CLI reads it (the rest is shown generically). */
export interface StatusView {
  changeId?: string;
  phase: string;
  message: string;
  progress?: { nodesDone: number; nodesTotal: number };
  confirmDeadline?: string;
  nodes?: Record<string, { outcome: string; wave?: string; phase?: string; diff?: string[]; error?: { type: string; message: string }; restore?: RestoreRetryView }>;
  issues?: { field: string; message: string }[];
  waves?: unknown;
  gates?: unknown;
  currentWave?: string;
  postRollbackGates?: RolloutStatusView['postRollbackGates'];
}

/** A diff line coloured by its marker: `+` green, `-` red, `~` yellow. */
export function colourDiffLine(line: string, p: Palette): string {
  if (line.startsWith('+')) return p.green(line);
  if (line.startsWith('-')) return p.red(line);
  if (line.startsWith('~')) return p.yellow(line);
  return line;
}

function phaseColour(phase: string, p: Palette): string {
  const final = FINAL_PHASES[phase];
  return final === 'ok' ? p.green(phase) : final === 'failed' ? p.red(phase) : p.yellow(phase);
}

/** The plan of a dry run: each node with its diff. */
export function renderPlan(status: StatusView, p: Palette): string[] {
  const lines: string[] = [];
  for (const [node, report] of Object.entries(status.nodes ?? {})) {
    const diff = report.diff ?? [];
    lines.push(p.bold(`node ${node}`) + (diff.length === 0 ? p.dim(' (no changes)') : ''));
    for (const line of diff) lines.push(`  ${colourDiffLine(line, p)}`);
    if (report.error) lines.push(`  ${p.red(`${report.error.type}: ${report.error.message}`)}`);
  }
  if (status.phase !== 'planned') lines.push(`${phaseColour(status.phase, p)}: ${status.message}`);
  for (const issue of status.issues ?? []) lines.push(`  ${issue.field || '(request)'}: ${issue.message}`);
  return lines;
}

/** Scalars of an object as `key=value` (nested objects and arrays summarised). */
function describeFields(value: Record<string, unknown>, skip: string[] = []): string {
  return Object.entries(value)
    .filter(([k]) => !skip.includes(k))
    .map(([k, v]) => {
      if (Array.isArray(v)) return `${k}=${v.every((x) => typeof x !== 'object') ? v.join(',') : `[${v.length}]`}`;
      if (v !== null && typeof v === 'object') return `${k}={${describeFields(v as Record<string, unknown>)}}`;
      return `${k}=${String(v)}`;
    })
    .join(' ');
}

/**
 * Waves and gates of a staged rollout, when the status has them. Their shape belongs to
 * the rollout work, so they are shown generically: one line per wave (its name/index and
 * fields), one per gate.
 */
function renderStages(status: StatusView, p: Palette): string[] {
  const lines: string[] = [];
  const list = (label: string, value: unknown) => {
    if (value === undefined || value === null) return;
    const entries: [string, unknown][] = Array.isArray(value) ? value.map((v, i) => [String(i + 1), v]) : typeof value === 'object' ? Object.entries(value as object) : [['', value]];
    lines.push(p.bold(`${label}:`));
    for (const [key, entry] of entries) {
      if (entry !== null && typeof entry === 'object' && !Array.isArray(entry)) {
        const e = entry as Record<string, unknown>;
        const name = String(e.name ?? e.index ?? key);
        const state = typeof (e.phase ?? e.status ?? e.state ?? e.result) === 'string' ? String(e.phase ?? e.status ?? e.state ?? e.result) : '';
        lines.push(`  ${name}${state ? ` ${phaseColour(state, p)}` : ''} ${describeFields(e, ['name', 'index', 'phase', 'status', 'state', 'result'])}`.trimEnd());
      } else lines.push(`  ${key ? `${key}: ` : ''}${Array.isArray(entry) ? entry.join(', ') : String(entry)}`);
    }
  };
  list('waves', status.waves);
  list('gates', status.gates);
  return lines;
}

/** The full view of a change: what `status` prints and a TTY redraws. */
export function renderStatus(status: StatusView, p: Palette): string[] {
  const progress = status.progress ? ` (${status.progress.nodesDone}/${status.progress.nodesTotal} nodes)` : '';
  const lines = [`${p.bold(`change ${status.changeId ?? '?'}`)}: ${phaseColour(status.phase, p)}${progress}`, `  ${status.message}`];
  if (status.confirmDeadline) lines.push(`  confirm before ${status.confirmDeadline} (fos1 confirm ${status.changeId ?? 'ID'}), or it reverts`);
  // A staged rollout: waves with their nodes (phase, outcome, diff) and gates (cli/rollout-view.ts).
  if (hasWaves(status)) {
    lines.push(...renderRollout(status as RolloutStatusView & typeof status, p));
    for (const issue of status.issues ?? []) lines.push(`  ${issue.field || '(request)'}: ${issue.message}`);
    return lines;
  }
  lines.push(...renderStages(status, p));
  const nodes = Object.entries(status.nodes ?? {});
  if (nodes.length > 0) lines.push(p.bold('nodes:'));
  for (const [node, report] of nodes) {
    const final = FINAL_PHASES[report.outcome];
    const outcome = final === 'ok' ? p.green(report.outcome) : ['pending'].includes(report.outcome) ? p.yellow(report.outcome) : ['rolled-back', 'rollback-failed', 'not-applied', 'restored', 'restore-failed'].includes(report.outcome) ? p.red(report.outcome) : report.outcome;
    lines.push(`  ${node}  ${outcome}${report.error ? `  ${p.red(`${report.error.type}: ${report.error.message}`)}` : ''}`);
    if (report.restore) lines.push(`    ${p.yellow(restoreLine(report.restore))}`);
    for (const line of report.diff ?? []) lines.push(`    ${colourDiffLine(line, p)}`);
  }
  for (const issue of status.issues ?? []) lines.push(`  ${issue.field || '(request)'}: ${issue.message}`);
  return lines;
}

/**
 * What changed between two statuses, as plain lines (no colour, no cursor moves): the
 * `status --watch` output when stdout is not a TTY. `previous` undefined: the first line.
 */
export function statusEvents(previous: StatusView | undefined, next: StatusView): string[] {
  const events: string[] = [];
  const id = next.changeId ?? '?';
  const progress = next.progress ? ` ${next.progress.nodesDone}/${next.progress.nodesTotal} nodes` : '';
  const prevProgress = previous?.progress ? ` ${previous.progress.nodesDone}/${previous.progress.nodesTotal} nodes` : '';
  if (!previous || previous.phase !== next.phase || prevProgress !== progress || previous.message !== next.message) {
    events.push(`change ${id}: ${next.phase}${progress} — ${next.message}`);
  }
  if (hasWaves(next)) return [...events, ...rolloutEvents(previous as RolloutStatusView | undefined, next as RolloutStatusView & typeof next)];
  for (const [node, report] of Object.entries(next.nodes ?? {})) {
    const before = previous?.nodes?.[node];
    if (before?.outcome !== report.outcome) events.push(`node ${node}: ${report.outcome}${report.error ? ` (${report.error.type}: ${report.error.message})` : ''}`);
    if (report.restore && (report.restore.attempt !== before?.restore?.attempt || report.restore.nextTryAt !== before?.restore?.nextTryAt)) events.push(`node ${node}: ${restoreLine(report.restore)}`);
  }
  const stages = (s: StatusView | undefined) => (s ? renderStages(s, paletteFor({}, {})) : []);
  const before = new Set(stages(previous));
  for (const line of stages(next)) if (!before.has(line) && !line.endsWith(':')) events.push(`${line.trim()}`);
  return events;
}

/** One change of `GET /v1/changes`. */
export interface ListedChange {
  workflowId: string;
  status: string;
  startTime: string;
  closeTime?: string;
  searchAttributes?: Record<string, unknown>;
}

/** The list of changes as a table. */
export function renderList(changes: ListedChange[], p: Palette): string[] {
  if (changes.length === 0) return ['no changes match'];
  const attr = (c: ListedChange, name: string) => {
    const v = c.searchAttributes?.[name];
    return Array.isArray(v) ? v.join(',') : v === undefined ? '' : String(v);
  };
  const rows = changes.map((c) => [c.workflowId.replace(/^change-/, ''), attr(c, 'Fos1Status') || c.status.toLowerCase(), attr(c, 'Fos1Author'), attr(c, 'Fos1TargetNodes'), c.startTime]);
  const header = ['ID', 'PHASE', 'AUTHOR', 'NODES', 'STARTED'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd();
  return [p.bold(line(header)), ...rows.map(line)];
}
