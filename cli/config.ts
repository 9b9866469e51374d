/**
 * Where the CLI finds the API and its token, first match wins:
 *
 * | what | from |
 * | --- | --- |
 * | API URL | `--server`, `FOS1_API_URL`, `server:` in the config file, `http://127.0.0.1:8080` (the dev stack) |
 * | token | `FOS1_API_TOKEN`, the file named by `FOS1_API_TOKEN_FILE`, `tokenFile:` in the config file, the admin token `npm start` writes (`~/.local/state/fos1/admin-token`) |
 *
 * The config file is `--config`, else `$XDG_CONFIG_HOME/fos1/config.yaml` (`~/.config/...`):
 *
 *     server: https://fos1.example:8443
 *     tokenFile: ~/.config/fos1/token
 *
 * The token itself never goes in the config file, only a path to it. (The variables carry
 * `API` because `FOS1_TOKEN_FILE` is the server's token database, docs/security.md.)
 */
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { devStateDir } from '../scripts/paths';
import { CliError, ExitCode } from './errors';

/** Default API URL: the embedded dev stack's (`npm start`). */
export const DEFAULT_API_URL = 'http://127.0.0.1:8080';

const configFileSchema = z
  .object({
    server: z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' }).optional(),
    tokenFile: z.string().min(1, 'must be a path').optional(),
  })
  .strict();

/** The API to talk to and how to authenticate. */
export interface CliConnection {
  server: string;
  token: string | undefined;
  /** Where the token came from (or would have): named in errors, never the token. */
  tokenSource: string;
  /** Whether the token source is the dev stack's default file. */
  defaultToken: boolean;
}

/** The default config file path. */
export function defaultConfigFile(env: NodeJS.ProcessEnv): string {
  return join(env.XDG_CONFIG_HOME ?? join(homedir(), '.config'), 'fos1', 'config.yaml');
}

/** The admin token file `npm start` writes. */
export function defaultTokenFile(): string {
  return join(devStateDir(), 'admin-token');
}

function expandHome(path: string): string {
  return path === '~' || path.startsWith('~/') ? join(homedir(), path.slice(1)) : path;
}

/** Resolves the connection; see the module comment. Throws {@link CliError} (exit 2) for a bad config file. */
export function resolveConnection(options: { server?: string; config?: string }, processEnv: NodeJS.ProcessEnv): CliConnection {
  // An empty variable is an unset one (`FOS1_API_URL= fos1 list`).
  const env = Object.fromEntries(Object.entries(processEnv).filter(([, v]) => v !== '')) as NodeJS.ProcessEnv;
  const configPath = options.config ?? defaultConfigFile(env);
  let file: z.infer<typeof configFileSchema> = {};
  if (options.config !== undefined || existsSync(configPath)) {
    let raw: unknown;
    try {
      raw = parseYaml(readFileSync(configPath, 'utf8')) ?? {};
    } catch (err) {
      throw new CliError(ExitCode.usage, `cannot read the config file ${configPath}: ${(err as NodeJS.ErrnoException).code ?? (err instanceof Error ? err.message.split('\n')[0] : String(err))}`);
    }
    const parsed = configFileSchema.safeParse(raw);
    if (!parsed.success) throw new CliError(ExitCode.usage, `config file ${configPath}: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(file)'}: ${i.message}`).join('; ')}`);
    file = parsed.data;
  }
  const server = (options.server ?? env.FOS1_API_URL ?? file.server ?? DEFAULT_API_URL).replace(/\/+$/, '');
  if (!/^https?:\/\/[^/]+/.test(server)) throw new CliError(ExitCode.usage, `server "${server}" is not an http:// or https:// URL (--server, FOS1_API_URL or server: in ${configPath})`);

  if (env.FOS1_API_TOKEN) return { server, token: env.FOS1_API_TOKEN.trim(), tokenSource: 'FOS1_API_TOKEN', defaultToken: false };
  const [tokenFile, source, isDefault] = env.FOS1_API_TOKEN_FILE
    ? [env.FOS1_API_TOKEN_FILE, `FOS1_API_TOKEN_FILE (${env.FOS1_API_TOKEN_FILE})`, false]
    : file.tokenFile
      ? [expandHome(file.tokenFile), `tokenFile in ${configPath}`, false]
      : [defaultTokenFile(), defaultTokenFile(), true];
  let token: string | undefined;
  try {
    token = readFileSync(tokenFile, 'utf8').trim() || undefined;
  } catch (err) {
    // A missing default file is normal before the first `npm start`: the 401 explains.
    if (!isDefault) throw new CliError(ExitCode.auth, `cannot read the token file named by ${source}: ${(err as NodeJS.ErrnoException).code ?? 'unreadable'}`);
  }
  return { server, token, tokenSource: source, defaultToken: isDefault };
}
