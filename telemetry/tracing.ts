/**
 * OpenTelemetry traces, off by default: with `OTEL_EXPORTER_OTLP_ENDPOINT` (or
 * `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, a process registers a tracer provider that exports
 * its spans over OTLP/HTTP (JSON) in batches, and the Temporal interceptors of
 * `@temporalio/interceptors-opentelemetry` carry the trace through Temporal headers: an API
 * request's span → the client's `StartWorkflow` → `RunWorkflow:changeWorkflow` → the child
 * node workflow → `RunActivity:applySubsystem` on the node. The exporter's own variables
 * (`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME`, …) apply as the OpenTelemetry SDK defines
 * them. See docs/observability.md.
 */
import * as otel from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { Resource } from '@opentelemetry/resources';
import { BatchSpanProcessor, type SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { OpenTelemetryWorkflowClientInterceptor } from '@temporalio/interceptors-opentelemetry/lib/client';
import { OpenTelemetryActivityInboundInterceptor, OpenTelemetryActivityOutboundInterceptor, makeWorkflowExporter } from '@temporalio/interceptors-opentelemetry/lib/worker';
import type { WorkflowClientInterceptor } from '@temporalio/client';
import type { OpenTelemetryWorkflowExporter } from '@temporalio/interceptors-opentelemetry/lib/workflow/definitions';
import type { ActivityInterceptorsFactory, InjectedSinks } from '@temporalio/worker';

/** The workflow interceptor module a traced worker's bundle includes. */
export const TRACING_WORKFLOW_INTERCEPTOR_MODULES = [require.resolve('@temporalio/interceptors-opentelemetry/lib/workflow-interceptors')];

/** What a traced process holds: the processor its workflow spans go to, and a flush for shutdown. */
export interface Tracing {
  resource: Resource;
  spanProcessor: SpanProcessor;
  /** Exports what is pending, stops, and unregisters the global provider (call once, at shutdown). */
  shutdown(): Promise<void>;
}

/** True when the environment names an OTLP endpoint for traces. */
export function tracingConfigured(env: NodeJS.ProcessEnv): boolean {
  return Boolean(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_EXPORTER_OTLP_ENDPOINT);
}

/**
 * Registers the process's tracer provider (once per process) when tracing is configured;
 * undefined when it is not. `spanProcessor` replaces the OTLP batch exporter (tests).
 */
export function setupTracing(service: string, env: NodeJS.ProcessEnv, spanProcessor?: SpanProcessor): Tracing | undefined {
  if (!spanProcessor && !tracingConfigured(env)) return undefined;
  const resource = new Resource({ 'service.name': env.OTEL_SERVICE_NAME ?? service });
  const processor = spanProcessor ?? new BatchSpanProcessor(new OTLPTraceExporter());
  const provider = new NodeTracerProvider({ resource, spanProcessors: [processor] });
  // Global: the async-local context manager (so an API request's span is the parent of the
  // client calls it makes) and W3C trace-context propagation.
  provider.register();
  return {
    resource,
    spanProcessor: processor,
    async shutdown() {
      await provider.shutdown();
      otel.trace.disable();
      otel.context.disable();
      otel.propagation.disable();
    },
  };
}

/** Client interceptors that start a span per workflow call and pass it on in the headers. */
export function tracingClientInterceptors(): { workflow: WorkflowClientInterceptor[] } {
  return { workflow: [new OpenTelemetryWorkflowClientInterceptor()] };
}

/** Activity interceptors that continue the workflow's trace in each activity. */
export function tracingActivityInterceptors(): ActivityInterceptorsFactory[] {
  return [(ctx) => ({ inbound: new OpenTelemetryActivityInboundInterceptor(ctx), outbound: new OpenTelemetryActivityOutboundInterceptor(ctx) })];
}

/** The sink the workflow interceptors export workflow spans through (outside the sandbox). */
export function tracingSinks(tracing: Tracing): InjectedSinks<{ exporter: OpenTelemetryWorkflowExporter }> {
  return { exporter: makeWorkflowExporter(tracing.spanProcessor, tracing.resource) };
}

/** fos1's tracer (a no-op until a provider is registered). */
export function tracer(): otel.Tracer {
  return otel.trace.getTracer('fos1');
}
