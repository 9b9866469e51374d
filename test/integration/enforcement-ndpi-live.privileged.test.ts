/**
 * ndpiReader on a live interface: nDPI 4.2 capturing on a veth inside a network
 * namespace while real traffic (ping, and an HTTP request over TCP) crosses it; its flow
 * verdicts go through the default rule set like the captures' do.
 */
import { execFile, spawnSync } from 'node:child_process';
import pino from 'pino';
import { ADDR, type EchoServer, NetnsPair } from '../../bench/datapath/netns-pair';
import { DEFAULT_RULES_FILE } from '../../ingest/config';
import { runNdpiReader } from '../../ingest/ndpi-reader';
import { IngestPipeline } from '../../ingest/pipeline';
import type { Decision } from '../../model/enforcement-decision';
import { RuleEvaluator } from '../../rules/evaluator';
import type { VerdictFacts } from '../../rules/facts';
import { EnforcementGuard, guardConfigSchema } from '../../model/enforcement-guard';
import { parseNdpiFlowLine } from '../../rules/ndpi';
import { loadRuleSetFile } from '../../rules/rule-set';
import { describePrivileged } from '../helpers/capabilities';
import { sharedData } from '../helpers/shared-data';

// ndpiReader comes from libndpi-bin (scripts/bootstrap.d/60-ids.sh). Without it the suite
// says so and skips, except under CI=true where the test fails on the missing binary.
const readerMissing = (spawnSync('ndpiReader', ['-h'], { stdio: 'ignore' }).error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
if (readerMissing && process.env.CI !== 'true') console.warn('SKIPPED "ndpiReader on a live interface" — ndpiReader is not installed (libndpi-bin)');
const describeLive = readerMissing && process.env.CI !== 'true' ? (name: string, _needs: unknown, body: () => void) => describe.skip(name, body) : describePrivileged;

describeLive('ndpiReader on a live interface in a namespace (privileged)', ['root', 'netns', 'iproute2', 'shared-data'], () => {
  let pair: NetnsPair;
  let server: EchoServer;

  beforeAll(async () => {
    pair = NetnsPair.create();
    server = await pair.startEchoServer(1);
  });
  afterAll(() => pair?.destroy());

  const inA = (argv: string[]) => new Promise<void>((resolve) => execFile('ip', ['netns', 'exec', pair.a, ...argv], { timeout: 5000 }, () => resolve()));

  test('flows seen on the wire are classified and decided: HTTP allowed, ICMP undecided', async () => {
    const evaluator = new RuleEvaluator(loadRuleSetFile(DEFAULT_RULES_FILE), new EnforcementGuard(guardConfigSchema.parse({})));
    const pipeline = new IngestPipeline({ evaluator, logger: pino({ level: 'silent' }) });
    const flows: VerdictFacts[] = [];
    const decisions: Decision[] = [];
    const reader = runNdpiReader({
      input: { interface: pair.ifB, seconds: 4 },
      configDir: sharedData('ndpi', 'reader-config-4.2'),
      netns: pair.b,
      onLine: async (line) => {
        const parsed = parseNdpiFlowLine(line, Date.now());
        if ('ok' in parsed && parsed.ok) flows.push(parsed.facts);
        const result = await pipeline.ndpiLine(line, Date.now());
        if ('ok' in result && result.ok && result.decision) decisions.push(result.decision);
      },
    });
    // Let the capture start, then send traffic through b's interface.
    await new Promise((r) => setTimeout(r, 1000));
    await inA(['ping', '-n', '-q', '-c', '3', '-i', '0.2', ADDR.b4]);
    const request = `GET /index.html HTTP/1.1\\r\\nHost: ${ADDR.b4}\\r\\nUser-Agent: fos1-test\\r\\nAccept: */*\\r\\n\\r\\n`;
    await inA(['timeout', '2', 'bash', '-c', `exec 3<>/dev/tcp/${ADDR.b4}/${server.tcp[0]!}; printf '${request}' >&3; head -c 20 <&3`]);
    await reader;

    const byProtocol = flows.map((f) => `${f.proto} ${f.src_ip}→${f.dest_ip} ${f.ndpi_protocol}`);
    expect(byProtocol).toEqual(expect.arrayContaining([`ICMP ${ADDR.a4}→${ADDR.b4} ICMP`, `TCP ${ADDR.a4}→${ADDR.b4} HTTP`]));
    const http = decisions.filter((d) => d.evidence.appProto === 'HTTP');
    expect(http.map((d) => `${d.action} ${d.rule}`)).toEqual(['allow dpi-allow-http']);
    expect(decisions.some((d) => d.evidence.appProto === 'ICMP')).toBe(false);
  });
});
