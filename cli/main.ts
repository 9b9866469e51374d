/**
 * `fos1`: the command line for the fos1 API (docs/cli.md). Run as `npx fos1 …` (the `bin`
 * of package.json, bin/fos1.js) or `npx tsx cli/main.ts …`.
 *
 *   fos1 apply -f change.yaml [--watch]    submit a change (YAML or JSON; `-f -` reads stdin)
 *   fos1 plan -f change.yaml               dry run: each node's diff (+ green, - red, ~ yellow)
 *   fos1 status ID [--watch]               phase, progress, nodes (and waves/gates); --watch follows it
 *   fos1 list [--author A] [--status P] [--node N]
 *   fos1 confirm ID [--reason R]
 *   fos1 abort ID [--reason R]
 *   fos1 approve|reject ID, revisions NODE [show NODE REV], diff NODE A B, rollback NODE REV | --fleet CHANGE,
 *   fos1 audit query|verify                (cli/audit-commands.ts)
 *   fos1 pause|resume ID, promote ID [--skip-bakes], extend-bake ID DURATION (cli/rollout-commands.ts)
 *
 * Every command takes `--output json` (the API's answers as JSON; `--watch` writes one a
 * line) and `--server URL` / `--config FILE` (cli/config.ts). Exit codes: cli/errors.ts.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { parse as parseYaml } from 'yaml';
import { ApiClient } from './api-client';
import { approveCommand, auditCommand, diffCommand, rejectCommand, revisionsCommand, rollbackCommand, withSettingsOf, type CommandContext } from './audit-commands';
import { resolveConnection } from './config';
import { CliError, ExitCode } from './errors';
import { registerRolloutCommands } from './rollout-commands';
import { FINAL_PHASES, paletteFor, renderList, renderPlan, renderStatus, statusEvents, type ListedChange, type Palette, type StatusView } from './render';

/** Where the CLI reads and writes: the process's streams, or a test's. */
export interface CliIo {
  stdout: { write(s: string): unknown; isTTY?: boolean; columns?: number };
  stderr: { write(s: string): unknown; isTTY?: boolean };
  readStdin: () => Promise<string>;
  env: NodeJS.ProcessEnv;
  /** Waits between polls of `--watch` (tests may shorten it). */
  sleep?: (ms: number) => Promise<void>;
}

interface GlobalOptions {
  output: 'text' | 'json';
  server?: string;
  config?: string;
}

const CHANGE_ID = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/** Runs the CLI with `argv` (without node and the script); resolves with the exit code. */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  const out = (line = '') => io.stdout.write(line + '\n');
  const p = paletteFor(io.stdout, io.env);
  const sleep = io.sleep ?? ((ms: number) => new Promise((r) => setTimeout(r, ms)));
  let exitCode: number = ExitCode.ok;

  const program = new Command('fos1')
    .description('Network changes on fos1 routers and firewalls, through the fos1 API.')
    .addOption(new Option('-o, --output <format>', 'text for people, json for scripts').choices(['text', 'json']).default('text'))
    .option('--server <url>', 'API URL (default: FOS1_API_URL, the config file, http://127.0.0.1:8080)')
    .option('--config <file>', 'config file (default: ~/.config/fos1/config.yaml)')
    .showHelpAfterError()
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) });

  const context = () => {
    const g = program.opts<GlobalOptions>();
    return { json: g.output === 'json', api: new ApiClient(resolveConnection({ ...(g.server ? { server: g.server } : {}), ...(g.config ? { config: g.config } : {}) }, io.env)) };
  };
  const printJson = (value: unknown, pretty = true) => out(pretty ? JSON.stringify(value, null, 2) : JSON.stringify(value));

  async function readChange(file: string): Promise<unknown> {
    let text: string;
    try {
      text = file === '-' ? await io.readStdin() : readFileSync(file, 'utf8');
    } catch (err) {
      throw new CliError(ExitCode.usage, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
    try {
      // YAML is a superset of JSON: one parser for both.
      const value: unknown = parseYaml(text);
      if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('the change must be one object (id, reason, targets, patch or desired)');
      return value;
    } catch (err) {
      throw new CliError(ExitCode.usage, `${file === '-' ? 'stdin' : file} is not a change request: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`);
    }
  }

  const idArgument = (id: string) => {
    if (!CHANGE_ID.test(id)) throw new CliError(ExitCode.usage, `"${id}" is not a change id (1–63 lowercase letters, digits or "-")`);
    return id;
  };

  /** Exit code for a status: 1 once the change failed, else 0. */
  const codeOf = (status: StatusView) => (FINAL_PHASES[status.phase] === 'failed' ? ExitCode.changeFailed : ExitCode.ok);

  /** Polls the status until the change is final: redrawn in place on a TTY, event lines otherwise. */
  async function watch(api: ApiClient, id: string, json: boolean, intervalMs: number): Promise<number> {
    let previous: StatusView | undefined;
    let drawn = 0;
    let failures = 0;
    const tty = io.stdout.isTTY === true && !json;
    for (;;) {
      let status: StatusView;
      try {
        status = (await api.get(`/v1/changes/${id}`)) as unknown as StatusView;
        failures = 0;
      } catch (err) {
        // Right after a submit the status query can fail until the workflow's first task ran.
        if (err instanceof CliError && (err.code === ExitCode.unreachable || (err.code === ExitCode.notFound && previous === undefined)) && ++failures < 10) {
          await sleep(intervalMs);
          continue;
        }
        throw err;
      }
      if (json) {
        if (JSON.stringify(status) !== JSON.stringify(previous)) printJson(status, false);
      } else if (tty) {
        const frame = renderStatus(status, p);
        // Back to the first line of the last frame, clear to the end, draw the new one.
        if (drawn > 0) io.stdout.write(`\x1b[${drawn}F\x1b[0J`);
        io.stdout.write(frame.join('\n') + '\n');
        drawn = frame.reduce((rows, line) => rows + Math.max(1, Math.ceil(visibleLength(line) / (io.stdout.columns ?? 80))), 0);
      } else {
        for (const line of statusEvents(previous, status)) out(line);
      }
      previous = status;
      if (FINAL_PHASES[status.phase]) return codeOf(status);
      await sleep(intervalMs);
    }
  }

  const intervalOption = () => new Option('--interval <ms>', 'poll interval of --watch').default(1000).argParser((v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 100) throw new CliError(ExitCode.usage, '--interval must be a whole number of milliseconds, at least 100');
    return n;
  });

  program
    .command('apply')
    .description('submit a change request (YAML or JSON)')
    .requiredOption('-f, --file <file>', 'the change request; - reads stdin')
    .option('-w, --watch', 'follow the change until it ends; exit 1 if it fails')
    .addOption(intervalOption())
    .action(async (o: { file: string; watch?: boolean; interval: number }) => {
      const change = await readChange(o.file);
      const { api, json } = context();
      const submitted = await api.post('/v1/changes', change);
      if (json) printJson(submitted, !o.watch);
      else out(`change ${String(submitted.changeId)} submitted (workflow ${String(submitted.workflowId)}); follow it with: fos1 status ${String(submitted.changeId)} --watch`);
      if (o.watch) exitCode = await watch(api, String(submitted.changeId), json, o.interval);
    });

  program
    .command('plan')
    .description('dry run: plan a change on every node and show the diff, changing nothing')
    .requiredOption('-f, --file <file>', 'the change request; - reads stdin')
    .action(async (o: { file: string }) => {
      const change = await readChange(o.file);
      const { api, json } = context();
      const status = (await api.post('/v1/changes/dry-run', change)) as unknown as StatusView;
      if (json) printJson(status);
      else renderPlan(status, p).forEach((l) => out(l));
      exitCode = codeOf(status);
    });

  program
    .command('status')
    .description('phase, progress and nodes of a change')
    .argument('<id>', 'change id')
    .option('-w, --watch', 'follow the change until it ends (redrawn in place on a terminal); exit 1 if it fails')
    .addOption(intervalOption())
    .action(async (id: string, o: { watch?: boolean; interval: number }) => {
      idArgument(id);
      const { api, json } = context();
      if (o.watch) {
        exitCode = await watch(api, id, json, o.interval);
        return;
      }
      const status = (await api.get(`/v1/changes/${id}`)) as unknown as StatusView;
      if (json) printJson(status);
      else renderStatus(status, p).forEach((l) => out(l));
      exitCode = codeOf(status);
    });

  program
    .command('list')
    .description('list changes (at most 100)')
    .option('--author <principal>', 'only changes submitted by this principal')
    .option('--status <phase>', 'only changes in this phase (applied, rolled-back, awaiting-confirmation, …)')
    .option('--node <node>', 'only changes targeting this node')
    .action(async (o: { author?: string; status?: string; node?: string }) => {
      const { api, json } = context();
      const query = new URLSearchParams(Object.entries(o).filter((e): e is [string, string] => typeof e[1] === 'string'));
      const answer = await api.get(`/v1/changes${query.size ? `?${query}` : ''}`);
      if (json) printJson(answer);
      else renderList(answer.changes as ListedChange[], p).forEach((l) => out(l));
    });

  program
    .command('confirm')
    .description('confirm a commit-confirmed change that is awaiting confirmation')
    .argument('<id>', 'change id')
    .option('--reason <text>', 'recorded in the audit trail')
    .action(async (id: string, o: { reason?: string }) => {
      idArgument(id);
      const { api, json } = context();
      const status = (await api.post(`/v1/changes/${id}/confirm`, o.reason ? { reason: o.reason } : {})) as unknown as StatusView;
      if (json) printJson(status);
      else out(`change ${id} confirmed: ${status.phase} — ${status.message}`);
    });

  program
    .command('abort')
    .description('abort a change: nodes that applied it are restored')
    .argument('<id>', 'change id')
    .option('--reason <text>', 'recorded in the audit trail')
    .action(async (id: string, o: { reason?: string }) => {
      idArgument(id);
      const { api, json } = context();
      const answer = await api.post(`/v1/changes/${id}/abort`, o.reason ? { reason: o.reason } : {});
      if (json) printJson(answer);
      else out(`abort sent to change ${id}; follow it with: fos1 status ${id} --watch`);
    });

  // Commands in their own files, one line each.
  const commands: CommandContext = { connect: context, out, printJson: (v) => printJson(v), palette: p, setExitCode: (c) => void (exitCode = c), watch, intervalOption };
  program.addCommand(withSettingsOf(program, approveCommand(commands)));
  program.addCommand(withSettingsOf(program, rejectCommand(commands)));
  program.addCommand(withSettingsOf(program, revisionsCommand(commands)));
  program.addCommand(withSettingsOf(program, diffCommand(commands)));
  program.addCommand(withSettingsOf(program, rollbackCommand(commands)));
  program.addCommand(withSettingsOf(program, auditCommand(commands)));
  registerRolloutCommands(program, { context, idArgument, out, printJson: (v) => printJson(v) });

  try {
    await program.parseAsync(argv, { from: 'user' });
    return exitCode;
  } catch (err) {
    return report(err, program.opts<GlobalOptions>().output === 'json', io, p);
  }
}

function report(err: unknown, json: boolean, io: CliIo, p: Palette): number {
  if (err instanceof CommanderError) return err.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
  if (err instanceof CliError) {
    if (json) io.stdout.write(JSON.stringify({ error: err.message, exitCode: err.code, ...(err.body && typeof err.body === 'object' ? { answer: err.body } : {}) }, null, 2) + '\n');
    io.stderr.write(`${p.red('error')}: ${err.message}\n${err.details.map((d) => d + '\n').join('')}`);
    return err.code;
  }
  io.stderr.write(`${p.red('error')}: ${err instanceof Error ? err.message : String(err)}\n`);
  return ExitCode.changeFailed;
}

function visibleLength(line: string): number {
  // eslint-disable-next-line no-control-regex
  return line.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '').length;
}

/** The process's own streams and environment. */
export function processIo(): CliIo {
  return {
    stdout: process.stdout,
    stderr: process.stderr,
    env: process.env,
    readStdin: async () => {
      const chunks: Buffer[] = [];
      for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
      return Buffer.concat(chunks).toString('utf8');
    },
  };
}

if (require.main === module) {
  void runCli(process.argv.slice(2), processIo()).then((code) => {
    process.exitCode = code;
  });
}
