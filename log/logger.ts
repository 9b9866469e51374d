/**
 * The one logger factory of every fos1 process (workers/main.ts, api/main.ts,
 * ingest/main.ts, controllers/main.ts, scripts/start-dev.ts): pino, at `LOG_LEVEL`.
 *
 * For people, on a terminal in development: pretty, coloured lines (pino-pretty, written
 * synchronously so nothing is lost when the process exits). For machines — stdout is not a
 * TTY (a pod, a pipe, a file) or `NODE_ENV=production` — one JSON object a line, as before,
 * so log collectors and `jq` get the same fields.
 */
import pino, { type Logger } from 'pino';
import pretty from 'pino-pretty';

/** Options of {@link createLogger}. */
export interface LoggerOptions {
  /** pino level: fatal, error, warn, info, debug, trace (or silent). */
  level: string;
  /** Fields on every line (the component, the node name). */
  base?: Record<string, unknown>;
  /** `auto` (default): pretty on a TTY outside production, JSON otherwise. */
  format?: 'auto' | 'pretty' | 'json';
}

/** Whether {@link createLogger} writes pretty lines for `format` in this process. */
export function prettyLogs(format: LoggerOptions['format'] = 'auto', stdout: { isTTY?: boolean } = process.stdout, env: NodeJS.ProcessEnv = process.env): boolean {
  if (format !== 'auto') return format === 'pretty';
  return stdout.isTTY === true && env.NODE_ENV !== 'production';
}

/** A pino logger; see the module comment. */
export function createLogger(options: LoggerOptions): Logger {
  const settings = { level: options.level, ...(options.base ? { base: options.base } : {}) };
  if (!prettyLogs(options.format)) return pino(settings);
  return pino(
    settings,
    pretty({
      colorize: !process.env.NO_COLOR,
      sync: true,
      translateTime: 'SYS:HH:MM:ss.l',
      ignore: 'pid,hostname',
      singleLine: true,
    }),
  );
}
