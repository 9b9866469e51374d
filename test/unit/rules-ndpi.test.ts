/**
 * nDPI verdicts: Debian's ndpiReader (nDPI 4.2) over the shared captures, its flow lines
 * parsed and fed to the default rule set's DPIProfile-style rules (block BitTorrent,
 * allow HTTP, report Tor/DoH). Needs the `ndpiReader` binary (libndpi-bin, installed by
 * scripts/bootstrap.sh); without it the suite says so and skips — except under CI=true.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { DEFAULT_RULES_FILE } from '../../ingest/config';
import { ndpiReaderArgs, NdpiReaderError, runNdpiReader } from '../../ingest/ndpi-reader';
import { IngestPipeline } from '../../ingest/pipeline';
import type { Decision } from '../../model/enforcement-decision';
import { RuleEvaluator } from '../../rules/evaluator';
import { EnforcementGuard, guardConfigSchema } from '../../model/enforcement-guard';
import { parseNdpiFlowLine } from '../../rules/ndpi';
import { loadRuleSetFile } from '../../rules/rule-set';
import { compileLocalNetworks, type CompiledLocalNetworks } from '../../model/local-networks';
import { describePrivileged } from '../helpers/capabilities';
import { sharedData } from '../helpers/shared-data';

const NDPI = sharedData('ndpi');
const CONFIG = join(NDPI, 'reader-config-4.2');
const NOW = Date.parse('2026-01-01T00:00:00Z');

function haveReader(): boolean {
  try {
    execFileSync('ndpiReader', ['-h'], { stdio: 'ignore' });
    return true;
  } catch (err) {
    // `ndpiReader -h` exits non-zero after printing its help; only ENOENT means absent.
    return (err as NodeJS.ErrnoException).code !== 'ENOENT';
  }
}

/** The network of the captures' client (192.168.1.3 in bittorrent.pcap): the node's inside. */
const CAPTURE_LAN = compileLocalNetworks({ prefixes: ['192.168.1.0/24'] });

/** Runs the reader over a capture and the default rules over its flows. */
async function decide(pcap: string, local: CompiledLocalNetworks = CAPTURE_LAN): Promise<{ flows: number; decisions: Decision[]; withheld: Record<string, number> }> {
  const evaluator = new RuleEvaluator(loadRuleSetFile(DEFAULT_RULES_FILE), new EnforcementGuard(guardConfigSchema.parse({})), undefined, { localNetworks: () => local });
  const decisions: Decision[] = [];
  const pipeline = new IngestPipeline({ evaluator, logger: pino({ level: 'silent' }) });
  await runNdpiReader({
    input: { pcap: join(NDPI, 'pcap', pcap) },
    configDir: CONFIG,
    onLine: async (line) => {
      const result = await pipeline.ndpiLine(line, NOW);
      if ('ok' in result && result.ok && result.decision) decisions.push(result.decision);
    },
  });
  expect(pipeline.stats.rejected).toBe(0);
  return { flows: pipeline.stats.accepted, decisions, withheld: pipeline.stats.withheld };
}

describePrivileged('nDPI flow lines', ['shared-data'], () => {
  test('parse the 4.2 reference output: protocol, category, risks, endpoints', () => {
    const lines = readFileSync(join(NDPI, 'result-4.2', 'bittorrent.pcap.out'), 'utf8').split('\n');
    const flows = lines.map((l) => parseNdpiFlowLine(l, NOW)).filter((r) => 'ok' in r);
    expect(flows).toHaveLength(18);
    expect(flows[0]).toEqual({
      ok: true,
      facts: expect.objectContaining({
        source: 'ndpi',
        event_type: 'ndpi',
        proto: 'TCP',
        src_ip: '192.168.1.3',
        src_port: 52915,
        dest_ip: '198.100.146.9',
        dest_port: 60163,
        ndpi_protocol: 'BitTorrent',
        ndpi_master_protocol: 'BitTorrent',
        ndpi_category: 'Download',
        ndpi_risks: ['Known Protocol on Non Standard Port'],
        ndpi_risk_score: 50,
        ndpi_confidence: 'DPI (cache)',
        ndpi_confidence_level: 2,
      }),
    });
    const google = readFileSync(join(NDPI, 'result-4.2', 'google_ssl.pcap.out'), 'utf8').split('\n').map((l) => parseNdpiFlowLine(l, NOW)).find((r) => 'ok' in r);
    expect(google).toEqual({ ok: true, facts: expect.objectContaining({ ndpi_protocol: 'TLS.Google', ndpi_master_protocol: 'TLS', ndpi_app_protocol: 'Google', ndpi_risks: [], ndpi_risk_score: 0 }) });
  });

  test('summary lines are skipped and a broken flow line is refused with the reason', () => {
    expect(parseNdpiFlowLine('BitTorrent\t299\t305728\t24', NOW)).toEqual({ skip: true });
    expect(parseNdpiFlowLine('\t1\tTCP 999.1.1.1:5 <-> 1.2.3.4:80 [proto: 7/HTTP]', NOW)).toEqual({ ok: false, reason: 'source endpoint "999.1.1.1:5" is not address:port' });
  });

  test('reader argv is built from validated parts only', () => {
    expect(() => ndpiReaderArgs({ interface: 'eth0; rm -rf /', seconds: 5 })).toThrow(NdpiReaderError);
    expect(() => ndpiReaderArgs({ pcap: '/nonexistent.pcap' })).toThrow('capture /nonexistent.pcap does not exist');
    expect(ndpiReaderArgs({ interface: 'eth0', seconds: 5 })).toEqual(['-q', '-t', '-v', '2', '-i', 'eth0', '-s', '5']);
  });
});

const readerPresent = haveReader();
if (!readerPresent && process.env.CI === 'true') {
  test('ndpiReader is installed', () => {
    throw new Error('CI=true and ndpiReader is missing (scripts/bootstrap.d/60-ids.sh installs libndpi-bin)');
  });
}
if (!readerPresent) console.warn('SKIPPED "ndpiReader over the shared captures" — ndpiReader is not installed (libndpi-bin)');

(readerPresent ? describe : describe.skip)('ndpiReader over the shared captures feeds the DPIProfile rules', () => {
  test('BitTorrent: every flow decided, each remote peer blocked', async () => {
    const { flows, decisions } = await decide('bittorrent.pcap');
    expect(flows).toBe(18);
    expect(decisions).toHaveLength(18);
    expect(new Set(decisions.map((d) => `${d.action} ${d.rule}`))).toEqual(new Set(['block dpi-block-bittorrent']));
    const peers = new Set(decisions.map((d) => d.target));
    expect(peers.size).toBe(12);
    expect(peers.has('198.100.146.9/32')).toBe(true);
    // The peer is blocked, never the local client.
    expect(peers.has('192.168.1.3/32')).toBe(false);
  });

  test('BitTorrent seen from the other side: the capture\'s client is the remote one, and only it is blocked', async () => {
    // A node whose inside holds every peer (0–191.x and 198.x) but not the client 192.168.1.3.
    const peersInside = compileLocalNetworks({ prefixes: ['0.0.0.0/1', '128.0.0.0/2', '198.0.0.0/8'] });
    const { decisions } = await decide('bittorrent.pcap', peersInside);
    expect(new Set(decisions.map((d) => d.target))).toEqual(new Set(['192.168.1.3/32']));
  });

  test('BitTorrent between two local hosts, or where neither side is local, blocks no address', async () => {
    const everything = await decide('bittorrent.pcap', compileLocalNetworks({ prefixes: ['0.0.0.0/0'] }));
    expect(everything.decisions).toEqual([]);
    expect(everything.withheld).toEqual({ 'local-to-local': 18 });
    const nothing = await decide('bittorrent.pcap', compileLocalNetworks({ prefixes: ['10.0.0.0/8'] }));
    expect(nothing.decisions).toEqual([]);
    expect(nothing.withheld).toEqual({ 'no-local-side': 18 });
  });

  test('HTTP (risk score 260) is allowed: the allow rule outranks the risky-flow rule', async () => {
    const { flows, decisions } = await decide('windowsupdate_over_http.pcap');
    expect(flows).toBeGreaterThan(0);
    const http = decisions.filter((d) => d.evidence.appProto?.startsWith('HTTP'));
    expect(http.length).toBeGreaterThan(0);
    expect(http.every((d) => d.action === 'allow' && d.rule === 'dpi-allow-http')).toBe(true);
  });

  test('Tor is reported, plain TLS to Google is not decided', async () => {
    const tor = await decide('tor.pcap');
    expect(tor.flows).toBe(7);
    const byRule = tor.decisions.map((d) => `${d.action} ${d.evidence.appProto} ${d.rule}`).sort();
    expect(byRule).toEqual([
      ...Array(4).fill('notify TLS dpi-notify-risky-flows'),
      ...Array(3).fill('notify TLS.Tor dpi-notify-anonymisers'),
    ]);
    const google = await decide('google_ssl.pcap');
    expect(google).toEqual({ flows: 1, decisions: [], withheld: {} });
  });
});
