/**
 * Metrics settings shared by every fos1 process, from the environment:
 *
 * - `FOS1_METRICS_PORT`: serve fos1's metrics at `http://<host>:<port>/metrics`; unset = off
 *   (`npm start` sets 9464).
 * - `FOS1_METRICS_HOST`: the address it binds; `127.0.0.1` by default.
 * - `FOS1_TEMPORAL_METRICS_PORT`: the Temporal SDK's own metrics (worker polls, task latencies,
 *   …) from its Rust core's Prometheus exporter, on its own port and the same host; unset = off
 *   (`npm start` sets 9465). Only processes that install the SDK's Runtime (workers, `npm start`).
 */
import { z } from 'zod';

const port = z.coerce.number().int().min(1).max(65535);
const schema = z.object({
  FOS1_METRICS_PORT: port.optional(),
  FOS1_METRICS_HOST: z.string().min(1).default('127.0.0.1'),
  FOS1_TEMPORAL_METRICS_PORT: port.optional(),
});

/** Parsed metrics settings. */
export interface MetricsConfig {
  /** fos1's `/metrics` listener, when on. */
  listener?: { port: number; host: string };
  /** `host:port` for the SDK's Prometheus exporter, when on. */
  temporalBindAddress?: string;
}

/** Parses the metrics variables; a bad value throws naming the variable and the rule. */
export function parseMetricsConfig(env: NodeJS.ProcessEnv): MetricsConfig {
  const parsed = schema.safeParse(env);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`${String(issue?.path[0])}: ${issue?.message ?? 'invalid'} (a TCP port 1–65535, or a bind address)`);
  }
  const c = parsed.data;
  const host = c.FOS1_METRICS_HOST;
  return {
    ...(c.FOS1_METRICS_PORT !== undefined ? { listener: { port: c.FOS1_METRICS_PORT, host } } : {}),
    ...(c.FOS1_TEMPORAL_METRICS_PORT !== undefined ? { temporalBindAddress: `${host.includes(':') ? `[${host}]` : host}:${c.FOS1_TEMPORAL_METRICS_PORT}` } : {}),
  };
}

/** The SDK Runtime's telemetry options for {@link MetricsConfig.temporalBindAddress} (or none). */
export function temporalTelemetryOptions(config: MetricsConfig): { telemetryOptions?: { metrics: { prometheus: { bindAddress: string } } } } {
  return config.temporalBindAddress ? { telemetryOptions: { metrics: { prometheus: { bindAddress: config.temporalBindAddress } } } } : {};
}
