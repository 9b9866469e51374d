/**
 * One trace from an API request to the node's activity: with OTEL_EXPORTER_OTLP_ENDPOINT set,
 * the API's request span, the client's StartWorkflow, the change workflow, its child node
 * workflow and the node activities share one trace id, each span's parent leading back to the
 * request. The spans travel over real OTLP/HTTP (the OpenTelemetry SDK's exporter, batching) to
 * a tiny collector in the test that decodes the JSON export.
 *
 * Real parts: the Temporal dev server, the workers and the API, a network namespace as the node.
 *
 * Privileged: needs root, netns, bpffs and the built Temporal CLI.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Client } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import pino from 'pino';
import { DEFAULT_ROUTE_PROTOCOL } from '../../activities/system/route-table';
import { startApiServer } from '../../api/server';
import { removePinnedBlocklist } from '../../bpf/blocklist-maps';
import { changeWorkflowId } from '../../model/naming';
import { setupTracing, tracingClientInterceptors, type Tracing } from '../../telemetry/tracing';
import { testTokens } from '../helpers/api-tokens';
import { describePrivileged } from '../helpers/capabilities';
import { eventually } from '../helpers/eventually';
import { LAN_GATEWAY_V4, TestNamespace } from '../helpers/netns';
import { startTemporal, startWorkers, type RunningWorkers } from '../helpers/temporal';

const NODE = 'node-trace';

/** A span as the OTLP/HTTP JSON export carries it (the fields this test reads). */
interface ExportedSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  service: string;
}

/** An OTLP/HTTP receiver: `POST /v1/traces` with the JSON encoding, spans collected in memory. */
async function startCollector(): Promise<{ url: string; spans: ExportedSpan[]; stop(): Promise<void> }> {
  const spans: ExportedSpan[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== '/v1/traces' || !String(req.headers['content-type']).startsWith('application/json')) return void res.writeHead(415).end();
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
        resourceSpans: { resource: { attributes: { key: string; value: { stringValue?: string } }[] }; scopeSpans: { spans: Omit<ExportedSpan, 'service'>[] }[] }[];
      };
      for (const rs of body.resourceSpans) {
        const service = rs.resource.attributes.find((a) => a.key === 'service.name')?.value.stringValue ?? '';
        for (const ss of rs.scopeSpans) for (const s of ss.spans) spans.push({ traceId: s.traceId, spanId: s.spanId, ...(s.parentSpanId ? { parentSpanId: s.parentSpanId } : {}), name: s.name, service });
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, spans, stop: () => new Promise((resolve) => server.close(() => resolve())) };
}

describePrivileged('traces from the API to the node activity (privileged)', ['root', 'netns', 'bpffs', 'temporal-cli'], () => {
  let env: TestWorkflowEnvironment;
  let ns: TestNamespace;
  let workers: RunningWorkers;
  let api: Server;
  let collector: Awaited<ReturnType<typeof startCollector>>;
  let tracing: Tracing;
  const pinDir = `/sys/fs/bpf/fos1-test-trace-${randomBytes(4).toString('hex')}`;
  const { authenticator, tokens } = testTokens({ carol: ['admin'] });
  const savedEndpoint = process.env.OTEL_EXPORTER_OTLP_ENDPOINT;

  beforeAll(async () => {
    collector = await startCollector();
    // Configured as an operator would: the OTLP endpoint in the environment, nothing else.
    process.env.OTEL_EXPORTER_OTLP_ENDPOINT = collector.url;
    tracing = setupTracing('fos1-test', process.env)!;
    expect(tracing).toBeDefined();
    env = await startTemporal();
    ns = TestNamespace.create('fos1tr');
    workers = await startWorkers(env, NODE, { netns: ns.name, routeProtocol: DEFAULT_ROUTE_PROTOCOL, bpfPinDir: pinDir, blocklistMaxEntries: { v4: 64, v6: 64 } }, { tracing });
    const client = new Client({ connection: env.connection, namespace: env.namespace ?? 'default', interceptors: tracingClientInterceptors() });
    api = await startApiServer({ client, port: 0, host: '127.0.0.1', logger: pino({ level: 'silent' }), security: { authenticator } });
  });

  afterAll(async () => {
    api?.close();
    await workers?.stop();
    await tracing?.shutdown();
    if (savedEndpoint === undefined) delete process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
    else process.env.OTEL_EXPORTER_OTLP_ENDPOINT = savedEndpoint;
    await collector?.stop();
    removePinnedBlocklist(pinDir);
    ns?.destroy();
    await env?.teardown();
  });

  test('a change posted to the API is one trace: request → StartWorkflow → changeWorkflow → rolloutWaveWorkflow → nodeChangeWorkflow → the node activities', async () => {
    const id = `trace-${randomBytes(2).toString('hex')}`;
    const res = await fetch(`http://127.0.0.1:${(api.address() as AddressInfo).port}/v1/changes`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tokens.carol}`, 'content-type': 'application/json' },
      body: JSON.stringify({ id, reason: 'trace test', targets: [NODE], patch: { routes: { upsert: [{ destination: '10.70.0.0/24', gateway: LAN_GATEWAY_V4 }] } } }),
    });
    expect(res.status).toBe(202);
    expect((await env.client.workflow.getHandle(changeWorkflowId(id)).result()).phase).toBe('applied');

    const request = await eventually(
      async () => {
        await tracing.spanProcessor.forceFlush();
        return collector.spans.find((s) => s.name === 'API POST /v1/changes');
      },
      (s) => s !== undefined,
      'the API request span at the collector',
    );
    const inTrace = () => collector.spans.filter((s) => s.traceId === request!.traceId);
    const wanted = ['StartWorkflow:changeWorkflow', 'RunWorkflow:changeWorkflow', 'StartChildWorkflow:rolloutWaveWorkflow', 'RunWorkflow:rolloutWaveWorkflow', 'StartChildWorkflow:nodeChangeWorkflow', 'RunWorkflow:nodeChangeWorkflow', 'RunActivity:applySubsystem', 'RunActivity:checkSubsystems'];
    const spans = await eventually(
      async () => {
        await tracing.spanProcessor.forceFlush();
        return inTrace();
      },
      (all) => wanted.every((name) => all.some((s) => s.name === name)),
      `spans ${wanted.join(', ')} in the request's trace`,
    );
    // Every span of the trace leads back, parent by parent, to the API request.
    const byId = new Map(spans.map((s) => [s.spanId, s]));
    const ancestry = (span: ExportedSpan): string[] => {
      const names: string[] = [];
      for (let s: ExportedSpan | undefined = span; s; s = s.parentSpanId ? byId.get(s.parentSpanId) : undefined) names.push(s.name);
      return names;
    };
    const activity = spans.find((s) => s.name === 'RunActivity:applySubsystem')!;
    expect(ancestry(activity).at(-1)).toBe('API POST /v1/changes');
    expect(ancestry(activity)).toEqual(expect.arrayContaining(['RunWorkflow:nodeChangeWorkflow', 'RunWorkflow:rolloutWaveWorkflow', 'RunWorkflow:changeWorkflow', 'StartWorkflow:changeWorkflow', 'API POST /v1/changes']));
    for (const s of spans) expect({ span: s.name, root: ancestry(s).at(-1) }).toEqual({ span: s.name, root: 'API POST /v1/changes' });
    expect(new Set(spans.map((s) => s.service))).toEqual(new Set(['fos1-test']));
  });
});
