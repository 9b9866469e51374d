/**
 * The node's local networks as the ingest sees them, read from the kernel at start and every
 * `refreshMs` after (activities/system/local-networks.ts), for the `remote` decision target
 * (model/local-networks.ts). Until the first read succeeds, and whenever reading fails from
 * the start, they are unknown and remote-endpoint decisions are withheld; after a failed
 * refresh the last good read stays in force (logged).
 */
import type { Logger } from 'pino';
import { createIpRunner } from '../activities/system/ip-runner';
import { readNodeNetworkView } from '../activities/system/local-networks';
import { NatTable } from '../activities/system/nat-table';
import { createNftRunner } from '../activities/system/nft-runner';
import { compileLocalNetworks, localNetworksOf, type CompiledLocalNetworks, type LocalNetworks } from '../model/local-networks';

/** How the ingest learns its node's local networks. */
export interface LocalNetworksConfig {
  /** Network namespace of the node (default: the ingest's own; the live ndpiReader's when it has one). */
  netns?: string;
  /** Prefixes always local (FOS1_LOCAL_NETWORKS). */
  extra: string[];
  /** Zones facing the outside (FOS1_EXTERNAL_ZONES, default `wan`). */
  externalZones: string[];
  /** Re-read period, ms. */
  refreshMs: number;
}

/** Keeps the local networks fresh. */
export class LocalNetworksSource {
  private compiled: CompiledLocalNetworks | undefined;
  private plain: LocalNetworks | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly ip;
  private readonly nat;

  constructor(
    private readonly config: LocalNetworksConfig,
    private readonly logger: Logger,
  ) {
    this.ip = createIpRunner(config.netns ? { netns: config.netns } : {});
    this.nat = new NatTable(createNftRunner(config.netns ? { netns: config.netns } : {}));
  }

  /** The local networks in force; undefined until a read succeeded. */
  current(): CompiledLocalNetworks | undefined {
    return this.compiled;
  }

  /** The prefixes in force (for logs and tests). */
  get prefixes(): string[] | undefined {
    return this.plain?.prefixes;
  }

  /** Reads once, then every `refreshMs`. Never throws. */
  async start(): Promise<void> {
    await this.refresh();
    const tick = () => {
      this.timer = setTimeout(() => void this.refresh().finally(tick), this.config.refreshMs);
      this.timer.unref();
    };
    tick();
  }

  stop(): void {
    clearTimeout(this.timer);
  }

  /** Reads now. */
  async refresh(): Promise<void> {
    try {
      const view = await readNodeNetworkView({ ip: this.ip, nat: { readZones: () => this.readZones() } });
      const local = localNetworksOf(view, { externalZones: new Set(this.config.externalZones), extra: this.config.extra });
      if (JSON.stringify(local) !== JSON.stringify(this.plain)) this.logger.info({ localNetworks: local.prefixes }, 'local networks (DPI verdicts aim at the side outside them)');
      this.plain = local;
      this.compiled = compileLocalNetworks(local);
    } catch (err) {
      this.logger.error({ err: err instanceof Error ? err.message : String(err) }, this.compiled ? 'reading the local networks failed; the last read stays in force' : 'reading the local networks failed; remote-endpoint decisions are withheld until it succeeds');
    }
  }

  /** fos1's zones; a node without nftables (or without fos1's table) has none. */
  private async readZones() {
    try {
      return await this.nat.readZones();
    } catch (err) {
      this.logger.debug({ err: err instanceof Error ? err.message : String(err) }, 'no zones read (nftables); local networks from interfaces and default routes');
      return [];
    }
  }
}
