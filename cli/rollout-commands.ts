/**
 * The rollout controls of the `fos1` CLI (docs/cli.md), registered on the program by
 * cli/main.ts with one line:
 *
 *   fos1 pause ID [--reason R]                    stop the bake clock and the gates
 *   fos1 resume ID [--reason R]                   go on (a paused gate is measured again)
 *   fos1 promote ID [--skip-bakes] [--reason R]   next wave now; --skip-bakes: every remaining bake and gate too
 *   fos1 extend-bake ID DURATION [--reason R]     add DURATION (90s, 10m, 1h30m) to the current wave's bake
 *
 * Each is the API's route of the same name (api/routes.ts: the workflow's update, whose
 * validator refuses the wrong phase with a 409 that says why: exit 2).
 */
import type { Command } from 'commander';
import type { ApiClient } from './api-client';
import { CliError, ExitCode } from './errors';
import type { StatusView } from './render';

/** What a command file needs from cli/main.ts. */
export interface CommandKit {
  /** The API client and whether `--output json` was asked (read when the command runs). */
  context(): { api: ApiClient; json: boolean };
  /** Checks a change id argument (usage error otherwise). */
  idArgument(id: string): string;
  /** Prints a line on stdout. */
  out(line?: string): void;
  /** Prints JSON on stdout. */
  printJson(value: unknown): void;
}

/** Longest bake extension the API accepts in one call (api/schemas.ts extendBakeBodySchema). */
export const MAX_EXTEND_SECONDS = 86_400;

const UNIT_SECONDS: Record<string, number> = { s: 1, m: 60, h: 3600 };

/**
 * Parses a duration such as `90s`, `10m`, `1h30m` or a plain number of seconds into whole
 * seconds; throws a usage error naming the argument and the rule.
 */
export function parseDurationSeconds(text: string): number {
  const trimmed = text.trim();
  let seconds: number;
  if (/^\d+$/.test(trimmed)) seconds = Number(trimmed);
  else {
    const parts = [...trimmed.matchAll(/(\d+)([smh])/g)];
    if (parts.length === 0 || parts.map((m) => m[0]).join('') !== trimmed) {
      throw new CliError(ExitCode.usage, `DURATION "${text}" is not a duration: use seconds, or numbers with s, m, h (90s, 10m, 1h30m)`);
    }
    seconds = parts.reduce((sum, m) => sum + Number(m[1]) * (UNIT_SECONDS[m[2] ?? 's'] ?? 1), 0);
  }
  if (seconds < 1 || seconds > MAX_EXTEND_SECONDS) throw new CliError(ExitCode.usage, `DURATION "${text}" must be from 1s to 24h (${MAX_EXTEND_SECONDS} seconds)`);
  return seconds;
}

/** Registers pause, resume, promote and extend-bake on `program`. */
export function registerRolloutCommands(program: Command, kit: CommandKit): void {
  const send = async (id: string, path: string, body: Record<string, unknown>, done: (status: StatusView) => string) => {
    kit.idArgument(id);
    const { api, json } = kit.context();
    const status = (await api.post(`/v1/changes/${id}/${path}`, body)) as unknown as StatusView;
    if (json) kit.printJson(status);
    else kit.out(`${done(status)} — ${status.phase}: ${status.message}`);
  };
  const reason = (o: { reason?: string }) => (o.reason ? { reason: o.reason } : {});

  program
    .command('pause')
    .description('pause a staged rollout: the bake clock and the gates stop until resume')
    .argument('<id>', 'change id')
    .option('--reason <text>', 'recorded in the audit trail')
    .action((id: string, o: { reason?: string }) => send(id, 'pause', reason(o), () => `change ${id} paused`));

  program
    .command('resume')
    .description('resume a paused rollout (a gate that paused it is measured again)')
    .argument('<id>', 'change id')
    .option('--reason <text>', 'recorded in the audit trail')
    .action((id: string, o: { reason?: string }) => send(id, 'resume', reason(o), () => `change ${id} resumed`));

  program
    .command('promote')
    .description('start the next wave now, ending the current bake')
    .argument('<id>', 'change id')
    .option('--skip-bakes', 'skip every remaining bake and gate too (full promote)')
    .option('--reason <text>', 'recorded in the audit trail')
    .action((id: string, o: { skipBakes?: boolean; reason?: string }) =>
      send(id, 'promote', { ...reason(o), ...(o.skipBakes ? { full: true } : {}) }, () => `change ${id} promoted${o.skipBakes ? ' (every remaining bake and gate skipped)' : ''}`),
    );

  program
    .command('extend-bake')
    .description("add time to the current wave's bake")
    .argument('<id>', 'change id')
    .argument('<duration>', 'how much longer: 90s, 10m, 1h30m (at most 24h)')
    .option('--reason <text>', 'recorded in the audit trail')
    .action((id: string, duration: string, o: { reason?: string }) => {
      const seconds = parseDurationSeconds(duration);
      return send(id, 'extend-bake', { ...reason(o), seconds }, (s) => `change ${id}: bake extended by ${seconds}s${currentBakeEnd(s)}`);
    });
}

/** ` (ends <time>)` for the wave that bakes now, when the status says. */
function currentBakeEnd(status: StatusView): string {
  const waves = Array.isArray(status.waves) ? (status.waves as { name?: string; bakeEndsAt?: string }[]) : [];
  const end = waves.find((w) => w.name === status.currentWave)?.bakeEndsAt;
  return end ? ` (ends ${end})` : '';
}
