/**
 * The CLI's approval, revision and audit commands (issue 13; docs/cli.md, docs/approvals.md,
 * docs/revisions.md, docs/audit.md), each a commander `Command` that cli/main.ts registers
 * with one line:
 *
 *   fos1 approve ID [--reason R] [--plan DIGEST]     vote for the plan awaiting approval
 *   fos1 reject ID --reason R [--plan DIGEST]        vote against it
 *   fos1 revisions NODE [--limit N]                  a node's revisions, newest first
 *   fos1 revisions show NODE REV                     one revision, with its state
 *   fos1 diff NODE REV_A REV_B                       what going from A to B does (+ route …, - block …)
 *   fos1 rollback NODE REV [--bake S] [--watch]      a new change back to revision REV of NODE
 *   fos1 rollback --fleet CHANGE [--watch]           every node CHANGE committed on, back to its revisions, as one change
 *   fos1 audit query [--change C] [--node N] [--actor P] [--action A] [--since T] [--until T]
 *   fos1 audit verify                                hash chain and signed checkpoints; exit 6 naming the first bad record
 *
 * REV is a revision number of the node (`3`), its id (64 hex digits) or a unique prefix of
 * the id (at least 6 hex digits) among the node's newest 50.
 */
import { Command, Option } from 'commander';
import { stringify as toYaml } from 'yaml';
import type { Revision } from '../model/revision';
import type { ApiClient } from './api-client';
import { CliError, ExitCode } from './errors';
import { colourDiffLine, type Palette } from './render';

/** What the commands need from cli/main.ts. */
export interface CommandContext {
  /** The API client and whether `--output json` was given (read when the command runs). */
  connect(): { api: ApiClient; json: boolean };
  out(line?: string): void;
  printJson(value: unknown): void;
  palette: Palette;
  setExitCode(code: number): void;
  /** Follows a change until it ends (as `status --watch`); resolves with its exit code. */
  watch(api: ApiClient, id: string, json: boolean, intervalMs: number): Promise<number>;
  /** The `--interval` option of `--watch`. */
  intervalOption(): Option;
}

/**
 * `command` (and its subcommands) with `program`'s settings — exitOverride, the output
 * streams, help after an error — which `addCommand`, unlike `.command()`, does not copy.
 */
export function withSettingsOf(program: Command, command: Command): Command {
  command.copyInheritedSettings(program);
  for (const sub of command.commands) withSettingsOf(program, sub);
  return command;
}

const NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const REVISION_ID = /^[0-9a-f]{64}$/;
const PLAN_DIGEST = /^sha256:[0-9a-f]{64}$/;

/** A revision as the API answers it (model/revision.ts); listings leave the state out. */
type RevisionView = Omit<Revision, 'state'> & { state?: unknown };

interface ApprovalView {
  state: string;
  rule: string;
  required: number;
  received: { by: string; decision: string; counts: boolean }[];
  eligibleRoles: string[];
  expiresAt: string;
  planDigest: string;
}

interface AuditEntryView {
  seq: number;
  id: string;
  record: { changeId: string; actor: string; actorVerified?: boolean; node?: string; step: string; result: string; startedAt: string; detail?: string };
}

interface AuditProblemView {
  kind: string;
  seq?: number;
  id?: string;
  where: string;
  message: string;
}

interface VerifyView {
  ok: boolean;
  entries: number;
  validThrough: number;
  checkpoints: number;
  lastGoodCheckpoint?: { seq: number; time: string; keyId: string };
  uncheckpointed: number;
  firstProblem?: AuditProblemView;
  problems: AuditProblemView[];
}

function name(what: string, value: string): string {
  if (!NAME.test(value)) throw new CliError(ExitCode.usage, `"${value}" is not a ${what} (1–63 lowercase letters, digits or "-")`);
  return value;
}

function planDigestOption(): Option {
  return new Option('--plan <digest>', 'the plan you reviewed (status.approval.planDigest); default: the plan the change shows now').argParser((v) => {
    if (!PLAN_DIGEST.test(v)) throw new CliError(ExitCode.usage, '--plan must be "sha256:" and 64 hex digits (status.approval.planDigest)');
    return v;
  });
}

/** `fos1 approve ID`: a vote for the plan awaiting approval, as the token's principal. */
export function approveCommand(ctx: CommandContext): Command {
  return new Command('approve')
    .description('approve the plan of a change awaiting approval (never your own change)')
    .argument('<id>', 'change id')
    .option('--reason <text>', 'recorded in the audit trail')
    .addOption(planDigestOption())
    .action(async (id: string, o: { reason?: string; plan?: string }) => vote(ctx, 'approve', name('change id', id), o));
}

/** `fos1 reject ID --reason R`: a vote against it; one rejection ends the change, nothing applied. */
export function rejectCommand(ctx: CommandContext): Command {
  return new Command('reject')
    .description('reject a change awaiting approval: it ends with nothing applied')
    .argument('<id>', 'change id')
    .requiredOption('--reason <text>', 'why (recorded in the audit trail)')
    .addOption(planDigestOption())
    .action(async (id: string, o: { reason: string; plan?: string }) => vote(ctx, 'reject', name('change id', id), o));
}

async function vote(ctx: CommandContext, decision: 'approve' | 'reject', id: string, o: { reason?: string; plan?: string }): Promise<void> {
  const { api, json } = ctx.connect();
  const approval = (await api.post(`/v1/changes/${id}/${decision}`, { ...(o.reason ? { reason: o.reason } : {}), ...(o.plan ? { planDigest: o.plan } : {}) })) as unknown as ApprovalView;
  if (json) return ctx.printJson(approval);
  const approvals = approval.received.filter((v) => v.counts && v.decision === 'approve').length;
  ctx.out(`change ${id}: ${decision === 'approve' ? 'approval' : 'rejection'} recorded; approval ${approval.state} (${approvals} of ${approval.required} from role ${approval.eligibleRoles.join(', ')}, plan ${approval.planDigest})`);
}

/** `fos1 revisions NODE` and `fos1 revisions show NODE REV`. */
export function revisionsCommand(ctx: CommandContext): Command {
  const command = new Command('revisions')
    .description("a node's revisions (newest first), or one with `show`")
    .argument('<node>', 'node name')
    .addOption(
      new Option('--limit <n>', 'at most this many (the API keeps the newest 50)').default(50).argParser((v) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 1 || n > 50) throw new CliError(ExitCode.usage, '--limit must be a whole number from 1 to 50');
        return n;
      }),
    )
    .action(async (node: string, o: { limit: number }) => {
      const { api, json } = ctx.connect();
      const revisions = (await listRevisions(api, name('node name', node))).slice(0, o.limit);
      if (json) return ctx.printJson({ node, revisions });
      if (revisions.length === 0) return ctx.out(`node ${node} has no revisions (no change has committed on it since revisions began)`);
      const p = ctx.palette;
      ctx.out(p.bold(`${'#'.padStart(4)}  ${'revision'.padEnd(12)}  ${'time'.padEnd(24)}  ${'change'.padEnd(24)}  ${'author'.padEnd(12)}  ${'approvers'.padEnd(16)}  reason`));
      for (const r of revisions) {
        ctx.out(`${String(r.number).padStart(4)}  ${r.id.slice(0, 12)}  ${r.time.padEnd(24)}  ${r.changeId.padEnd(24)}  ${r.author.padEnd(12)}  ${(r.approvers.join(',') || '-').padEnd(16)}  ${r.reason}`);
      }
    });
  command
    .command('show')
    .description('one revision of a node, with its state')
    .argument('<node>', 'node name')
    .argument('<rev>', 'revision number, id, or id prefix (6+ hex digits)')
    .action(async (node: string, rev: string) => {
      const { api, json } = ctx.connect();
      const id = await resolveRevision(api, name('node name', node), rev);
      const revision = (await api.get(`/v1/revisions/${id}`)) as unknown as RevisionView;
      if (json) return ctx.printJson(revision);
      const p = ctx.palette;
      ctx.out(p.bold(`node ${revision.node} revision ${revision.number}`) + `  ${revision.id}`);
      ctx.out(`  change     ${revision.changeId}`);
      ctx.out(`  author     ${revision.author}`);
      ctx.out(`  approvers  ${revision.approvers.join(', ') || '-'}`);
      ctx.out(`  reason     ${revision.reason}`);
      ctx.out(`  time       ${revision.time}`);
      ctx.out(`  parent     ${revision.parent ?? '-'}`);
      ctx.out(`  state      ${revision.stateHash}`);
      for (const line of toYaml(revision.state ?? {}).trimEnd().split('\n')) ctx.out(`    ${line}`);
    });
  return command;
}

/** `fos1 diff NODE REV_A REV_B`: what a change from A to B does, in fos1's diff words. */
export function diffCommand(ctx: CommandContext): Command {
  return new Command('diff')
    .description("what going from one revision of a node to another does (+ route …, - block …, ~ rate-limit …)")
    .argument('<node>', 'node name')
    .argument('<from>', 'revision number, id, or id prefix')
    .argument('<to>', 'revision number, id, or id prefix')
    .action(async (node: string, fromRev: string, toRev: string) => {
      const { api, json } = ctx.connect();
      name('node name', node);
      const from = await resolveRevision(api, node, fromRev);
      const to = await resolveRevision(api, node, toRev);
      const answer = await api.get(`/v1/revisions/diff?${new URLSearchParams({ from, to })}`);
      if (json) return ctx.printJson(answer);
      const diff = (answer.diff as string[] | undefined) ?? [];
      ctx.out(ctx.palette.bold(`node ${node}: revision ${fromRev} → ${toRev}`) + (diff.length === 0 ? ' (same state)' : ''));
      for (const line of diff) ctx.out(`  ${colourDiffLine(line, ctx.palette)}`);
    });
}

/**
 * `fos1 rollback NODE REV` / `fos1 rollback --fleet CHANGE`: submits the rollback as a new
 * change through the API (the same rollout, gates and approval policy as any change).
 */
export function rollbackCommand(ctx: CommandContext): Command {
  return new Command('rollback')
    .description('roll a node back to a revision, or (--fleet) every node a change committed on back to its revisions: a new change')
    .argument('<node-or-change>', 'node name; with --fleet, the committed change whose revisions to return to')
    .argument('[rev]', 'revision number, id, or id prefix (not with --fleet)')
    .option('--fleet', 'every node the change committed on, as one change through one staged rollout')
    .option('--id <id>', 'the new change\'s id (default: rollback-…)')
    .option('--reason <text>', 'the new change\'s reason (default: what it rolls back to)')
    .addOption(
      new Option('--bake <seconds>', "each wave's bake in the default canary rollout (default: the API's)").argParser((v) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 0) throw new CliError(ExitCode.usage, '--bake must be a whole number of seconds, 0 or more');
        return n;
      }),
    )
    .option('-w, --watch', 'follow the rollback change until it ends; exit 1 if it fails')
    .addOption(ctx.intervalOption())
    .action(async (target: string, rev: string | undefined, o: { fleet?: boolean; id?: string; reason?: string; bake?: number; watch?: boolean; interval: number }) => {
      const { api, json } = ctx.connect();
      const body = { ...(o.id ? { id: name('change id', o.id) } : {}), ...(o.reason ? { reason: o.reason } : {}), ...(o.bake !== undefined ? { options: { defaultBakeSeconds: o.bake } } : {}) };
      let submitted: Record<string, unknown>;
      if (o.fleet) {
        if (rev !== undefined) throw new CliError(ExitCode.usage, 'rollback --fleet takes one argument: the committed change whose revisions to return to');
        submitted = await api.post('/v1/revisions/rollback', { change: name('change id', target), ...body });
      } else {
        if (rev === undefined) throw new CliError(ExitCode.usage, 'rollback needs a node and a revision (fos1 rollback NODE REV), or --fleet CHANGE');
        const id = await resolveRevision(api, name('node name', target), rev);
        submitted = await api.post(`/v1/revisions/${id}/rollback`, body);
      }
      if (json) ctx.printJson(submitted);
      else {
        const nodes = Array.isArray(submitted.nodes) ? (submitted.nodes as string[]).join(', ') : String(submitted.node);
        ctx.out(`rollback change ${String(submitted.changeId)} submitted for ${nodes}; follow it with: fos1 status ${String(submitted.changeId)} --watch`);
      }
      if (o.watch) ctx.setExitCode(await ctx.watch(api, String(submitted.changeId), json, o.interval));
    });
}

/** `fos1 audit query …` and `fos1 audit verify`. */
export function auditCommand(ctx: CommandContext): Command {
  const command = new Command('audit').description('the durable, tamper-evident audit store (docs/audit.md)');
  command
    .command('query')
    .description('audit records by change, node, actor, action and time, in chain order')
    .option('--change <id>', 'records of this change')
    .option('--node <node>', 'records of this node')
    .option('--actor <principal>', 'records whose actor is this principal')
    .option('--action <step>', 'records of this step (validate, approved, rejected, wave canary, revision, refused, …)')
    .option('--since <time>', 'records that started at or after: ISO 8601 with a zone, or a time ago (30m, 2h, 7d)')
    .option('--until <time>', 'records that started before: ISO 8601 with a zone, or a time ago')
    .addOption(
      new Option('--limit <n>', 'at most this many (1–10000)').default(1000).argParser((v) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 1 || n > 10000) throw new CliError(ExitCode.usage, '--limit must be a whole number from 1 to 10000');
        return n;
      }),
    )
    .action(async (o: { change?: string; node?: string; actor?: string; action?: string; since?: string; until?: string; limit: number }) => {
      const { api, json } = ctx.connect();
      const now = Date.now();
      const query = new URLSearchParams();
      if (o.change) query.set('change', o.change);
      if (o.node) query.set('node', o.node);
      if (o.actor) query.set('actor', o.actor);
      if (o.action) query.set('action', o.action);
      if (o.since) query.set('from', timeArgument('--since', o.since, now));
      if (o.until) query.set('to', timeArgument('--until', o.until, now));
      query.set('limit', String(o.limit));
      const answer = await api.get(`/v1/audit?${query}`);
      if (json) return ctx.printJson(answer);
      const entries = (answer.entries as AuditEntryView[] | undefined) ?? [];
      if (entries.length === 0) return ctx.out('no audit records match');
      const p = ctx.palette;
      for (const { seq, record: r } of entries) {
        const result = r.result === 'ok' ? p.green(r.result) : p.red(r.result);
        const actor = `${r.actor}${r.actorVerified === false ? ' (self-asserted)' : ''}`;
        ctx.out(`${String(seq).padStart(6)}  ${r.startedAt}  ${r.changeId}${r.node ? ` @${r.node}` : ''}  ${actor}  ${p.bold(r.step)} ${result}${r.detail ? `  ${p.dim(firstLine(r.detail))}` : ''}`);
      }
      if (typeof answer.next === 'string') ctx.out(p.dim(`(the first ${entries.length}; narrow the query or raise --limit for more)`));
    });
  command
    .command('verify')
    .description('check the hash chain and the signed checkpoints; exit 6 naming the first record that does not match')
    .action(async () => {
      const { api, json } = ctx.connect();
      const report = (await api.get('/v1/audit/verify')) as unknown as VerifyView;
      ctx.setExitCode(report.ok ? ExitCode.ok : ExitCode.auditInvalid);
      if (json) return ctx.printJson(report);
      const p = ctx.palette;
      const checkpoint = report.lastGoodCheckpoint
        ? `last good checkpoint at entry ${report.lastGoodCheckpoint.seq} (${report.lastGoodCheckpoint.time}, key ${report.lastGoodCheckpoint.keyId}), ${report.uncheckpointed} entr${report.uncheckpointed === 1 ? 'y' : 'ies'} after it`
        : `no good checkpoint, ${report.uncheckpointed} entr${report.uncheckpointed === 1 ? 'y' : 'ies'} unsigned`;
      if (report.ok) {
        ctx.out(`${p.green('audit intact')}: ${report.entries} entr${report.entries === 1 ? 'y' : 'ies'}, ${report.checkpoints} checkpoint(s); ${checkpoint}`);
        return;
      }
      const first = report.firstProblem;
      ctx.out(`${p.red('audit does not verify')}: ${first ? first.message : 'a problem was found'}`);
      if (first) ctx.out(`  first bad: ${first.kind}${first.seq !== undefined ? ` at entry ${first.seq}` : ''}${first.id ? ` (record ${first.id})` : ''} in ${first.where}`);
      ctx.out(`  entries 1..${report.validThrough} intact of ${report.entries}; ${checkpoint}`);
      for (const other of report.problems.slice(1)) ctx.out(`  also: ${other.message}`);
    });
  return command;
}

/** A node's newest revisions (the API keeps 50). */
async function listRevisions(api: ApiClient, node: string): Promise<RevisionView[]> {
  const answer = await api.get(`/v1/revisions?${new URLSearchParams({ node })}`);
  return (answer.revisions as RevisionView[] | undefined) ?? [];
}

/** REV (number, id or id prefix) → the revision id of that node. */
async function resolveRevision(api: ApiClient, node: string, rev: string): Promise<string> {
  if (REVISION_ID.test(rev)) return rev;
  const byNumber = /^[1-9]\d{0,8}$/.test(rev);
  if (!byNumber && !/^[0-9a-f]{6,63}$/.test(rev)) throw new CliError(ExitCode.usage, `"${rev}" is not a revision: give its number, its id (64 hex digits) or at least 6 hex digits of the id`);
  const revisions = await listRevisions(api, node);
  const found = revisions.filter((r) => (byNumber ? r.number === Number(rev) : r.id.startsWith(rev)));
  if (found.length > 1) throw new CliError(ExitCode.usage, `"${rev}" names ${found.length} revisions of node ${node}: give more of the id`);
  const [match] = found;
  if (!match) throw new CliError(ExitCode.notFound, `node ${node} has no revision ${rev} among its newest ${revisions.length}${byNumber ? '' : ' (by id prefix)'}`);
  return match.id;
}

/** `--since`/`--until`: ISO 8601 with a zone, or a time ago like `30m`. */
export function timeArgument(option: string, value: string, now: number): string {
  const ago = /^(\d{1,6})(s|m|h|d)$/.exec(value);
  if (ago) {
    const unit = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[ago[2] as 's' | 'm' | 'h' | 'd'];
    return new Date(now - Number(ago[1]) * unit).toISOString();
  }
  if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/.test(value) && !Number.isNaN(Date.parse(value))) return new Date(Date.parse(value)).toISOString();
  throw new CliError(ExitCode.usage, `${option} must be an ISO 8601 time with a zone (2026-12-01T10:00:00Z) or a time ago (30m, 2h, 7d)`);
}

function firstLine(s: string): string {
  const line = s.split('\n')[0] ?? '';
  return line.length > 160 ? `${line.slice(0, 157)}...` : line;
}
