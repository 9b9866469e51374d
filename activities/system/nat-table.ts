/**
 * fos1's nftables table (family `inet`, `inet fos1` by default) and the two subsystems kept
 * in it: zones and NAT. Nothing outside that table is read or changed.
 *
 * NAT: source NAT / masquerade and port forwards, IPv4 and IPv6 (NAT66).
 * Zones: each zone is three named sets, `zone<ID>_<NAME>_if` (interface names), `_v4` and
 * `_v6` (prefixes, interval sets), for firewall rules to refer to; the id is the zone's
 * number in the eBPF zone map.
 *
 * The table has two chains: `postrouting` (type nat, priority srcnat) holds source NAT in
 * order, `prerouting` (type nat, priority dstnat) holds port forwards. Every change is one
 * nft JSON transaction (`nft -j -f FILE`), so a step either applies entirely or not at all.
 * Rules are appended or deleted by handle, never rewritten, so rules a change keeps keep
 * their handles and a rollback leaves `nft -j list table` exactly as it was; zone sets
 * change element by element for the same reason. fos1 deletes the table when neither
 * zones nor NAT are desired, and creates it when one first is.
 */
import { canonicalCidr, canonicalIp, parseCidr, parseIp } from '../../model/ip';
import type { NatConfig, PortForward, SourceNat, Zone } from '../../model/node-state';
import type { NatChain, NatOperation, ZoneOperation } from '../../model/plan';
import { planNat, planZones, renderOperation } from '../../model/plan';
import { address, integer, interfaceName, oneOf, prefix, UnsafeArgumentError } from './command-args';
import { ForeignStateError, NetworkApplyError } from './network-errors';
import { NftCommandError, type NftRunner } from './nft-runner';

/** Default name of fos1's table (family inet). */
export const DEFAULT_NAT_TABLE = 'fos1';

const NFT_TABLE_NAME = /^[A-Za-z][A-Za-z0-9_-]{0,30}$/;

/** nft JSON expression statements (the subset fos1 writes). */
type Expr = Record<string, unknown>;

interface ChainSpec {
  hook: 'postrouting' | 'prerouting';
  prio: number;
}
const CHAINS: Record<NatChain, ChainSpec> = {
  // srcnat (100) and dstnat (-100): the standard NAT priorities.
  postrouting: { hook: 'postrouting', prio: 100 },
  prerouting: { hook: 'prerouting', prio: -100 },
};

/** fos1's table as read: NAT config with the kernel handle of each rule (by chain and position), and zones. */
export interface NatTableState {
  exists: boolean;
  config: NatConfig;
  handles: Record<NatChain, number[]>;
  zones: Zone[];
}

const ZONE_SET = /^zone(\d{1,3})_([a-z][a-z0-9_]{0,23})_(if|v4|v6)$/;
const ZONE_SET_TYPES = { if: 'ifname', v4: 'ipv4_addr', v6: 'ipv6_addr' } as const;
type ZoneSetKind = keyof typeof ZONE_SET_TYPES;

/** Reads and changes fos1's NAT table in one network namespace. */
export class NatTable {
  constructor(
    private readonly nft: NftRunner,
    readonly tableName: string = DEFAULT_NAT_TABLE,
  ) {
    if (!NFT_TABLE_NAME.test(tableName)) throw new Error(`nftables table name "${tableName}" is not valid (a letter, then letters, digits, "_" or "-")`);
  }

  /** Raw `nft -j list table inet NAME` (undefined when the table does not exist). */
  async listJson(): Promise<unknown> {
    try {
      return JSON.parse(await this.nft.run(['-j', 'list', 'table', 'inet', this.tableName]));
    } catch (err) {
      if (err instanceof NftCommandError && /No such file or directory/.test(err.stderr)) return undefined;
      throw err;
    }
  }

  /** fos1's NAT config with rule handles; refuses a table holding rules fos1 does not write. */
  async readState(): Promise<NatTableState> {
    const state: NatTableState = { exists: false, config: { sourceNat: [], portForwards: [] }, handles: { postrouting: [], prerouting: [] }, zones: [] };
    const zoneSets = new Map<string, { id: number; kinds: Set<ZoneSetKind>; interfaces: string[]; prefixes: string[] }>();
    const listing = (await this.listJson()) as { nftables?: Record<string, Record<string, unknown>>[] } | undefined;
    if (listing === undefined) return state;
    state.exists = true;
    for (const item of listing.nftables ?? []) {
      const rule = item.rule as { chain?: string; handle?: number; expr?: Expr[] } | undefined;
      const chain = item.chain as { name?: string } | undefined;
      if (chain && !(chain.name === 'postrouting' || chain.name === 'prerouting')) {
        throw new ForeignStateError(`table inet ${this.tableName} has a chain "${chain.name}" fos1 did not create`);
      }
      const set = item.set as { name?: string; type?: string; elem?: unknown[] } | undefined;
      if (set) {
        const match = ZONE_SET.exec(set.name ?? '');
        const kind = match?.[3] as ZoneSetKind | undefined;
        if (!match || !kind || set.type !== ZONE_SET_TYPES[kind]) {
          throw new ForeignStateError(`table inet ${this.tableName} has a set "${set.name}" fos1 did not create`);
        }
        const name = match[2] as string;
        const zone = zoneSets.get(name) ?? { id: Number(match[1]), kinds: new Set<ZoneSetKind>(), interfaces: [], prefixes: [] };
        zoneSets.set(name, zone);
        zone.kinds.add(kind);
        for (const elem of set.elem ?? []) {
          if (kind === 'if') zone.interfaces.push(String(elem));
          else zone.prefixes.push(elementToCidr(elem, `set ${set.name} of table inet ${this.tableName}`));
        }
        continue;
      }
      if (item.map || item.flowtable || item.element) {
        throw new ForeignStateError(`table inet ${this.tableName} holds objects fos1 did not create (${Object.keys(item).join(', ')})`);
      }
      if (!rule) continue;
      const where = `rule handle ${rule.handle} in chain ${rule.chain} of table inet ${this.tableName}`;
      if (rule.chain === 'postrouting') {
        state.config.sourceNat.push(parseSourceNat(rule.expr ?? [], where));
        state.handles.postrouting.push(rule.handle ?? -1);
      } else if (rule.chain === 'prerouting') {
        state.config.portForwards.push(parsePortForward(rule.expr ?? [], where));
        state.handles.prerouting.push(rule.handle ?? -1);
      }
    }
    for (const [name, zone] of zoneSets) {
      if (zone.kinds.size !== 3) throw new ForeignStateError(`zone ${name} in table inet ${this.tableName} lacks some of its sets (${[...zone.kinds].join(', ')})`);
      state.zones.push({ name, id: zone.id, interfaces: zone.interfaces.sort(), prefixes: zone.prefixes.sort() });
    }
    state.zones.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    return state;
  }

  /** fos1's NAT config. */
  async read(): Promise<NatConfig> {
    return (await this.readState()).config;
  }

  /** fos1's zones. */
  async readZones(): Promise<Zone[]> {
    return (await this.readState()).zones;
  }

  /** Converges the zones to `desired` in one nft transaction; returns the operations needed. */
  async syncZones(desired: Zone[]): Promise<ZoneOperation[]> {
    const live = await this.readState();
    const ops = planZones(live.zones, desired);
    if (ops.length === 0) return ops;
    const commands: Record<string, unknown>[] = [];
    for (const op of ops) {
      if (op.action === 'replace') {
        // The id is part of the set names: a new id means new sets.
        if (op.previous.id !== op.zone.id) commands.push(...this.deleteZone(op.previous), ...this.createZone(op.zone));
        else commands.push(...this.changeZoneElements(op.previous, op.zone));
      } else if (op.action === 'add') {
        commands.push(...this.createZone(op.zone));
      } else {
        commands.push(...this.deleteZone(op.zone));
      }
    }
    await this.transaction(live, commands, desired.length > 0 || hasNat(live.config), ops);
    return ops;
  }

  /** Converges the NAT rules to `desired` in one nft transaction; returns the operations needed. */
  async sync(desired: NatConfig): Promise<NatOperation[]> {
    const live = await this.readState();
    const ops = planNat(live.config, desired);
    if (ops.length === 0) return ops;
    const family = 'inet';
    const table = this.tableName;
    const commands: Record<string, unknown>[] = [];
    for (const op of ops) {
      if (op.action === 'add') {
        const expr = op.chain === 'postrouting' ? sourceNatExpr(op.rule) : portForwardExpr(op.rule);
        commands.push({ add: { rule: { family, table, chain: op.chain, expr } } });
      } else {
        const handle = live.handles[op.chain][op.index];
        if (handle === undefined) throw new Error(`no rule at position ${op.index} of chain ${op.chain}`);
        commands.push({ delete: { rule: { family, table, chain: op.chain, handle } } });
      }
    }
    await this.transaction(live, commands, hasNat(desired) || live.zones.length > 0, ops);
    return ops;
  }

  /**
   * Runs `commands` as one transaction, creating the table (and its chains) first when it
   * is missing, or — when nothing is left to keep in it — deleting the table instead.
   */
  private async transaction(live: NatTableState, commands: Record<string, unknown>[], keepTable: boolean, ops: (NatOperation | ZoneOperation)[]): Promise<void> {
    const family = 'inet';
    const table = this.tableName;
    let all: Record<string, unknown>[];
    if (!keepTable) {
      all = live.exists ? [{ delete: { table: { family, name: table } } }] : [];
    } else if (!live.exists) {
      all = [{ add: { table: { family, name: table } } }];
      for (const [name, spec] of Object.entries(CHAINS)) {
        all.push({ add: { chain: { family, table, name, type: 'nat', hook: spec.hook, prio: spec.prio, policy: 'accept' } } });
      }
      all.push(...commands);
    } else {
      all = commands;
    }
    if (all.length === 0) return;
    try {
      await this.nft.runJson({ nftables: all });
    } catch (err) {
      if (!(err instanceof NftCommandError)) throw err;
      const message = err.stderr.split('\n').filter((l) => l.trim() !== '').join('; ') || `exit ${err.exitCode}`;
      throw new NetworkApplyError(ops[0]?.subsystem === 'zones' ? 'Zone' : 'Nat', ops.map(renderOperation).join(', '), message);
    }
  }

  private zoneSetName(zone: Zone, kind: ZoneSetKind): string {
    // The name is part of nft object names: checked again here (command-args.ts), like every element below.
    const name = `zone${integer(zone.id, 'zone id', 1, 254)}_${zone.name}_${kind}`;
    if (!ZONE_SET.test(name)) throw new UnsafeArgumentError('zone name', 'is not a zone name (a lowercase letter, then up to 23 lowercase letters, digits or "_")', zone.name);
    return name;
  }

  private zoneElements(zone: Zone, kind: ZoneSetKind): unknown[] {
    if (kind === 'if') return zone.interfaces.map((i) => interfaceName(i, `zone ${zone.name} interface`));
    return zone.prefixes.map((p) => prefix(p, `zone ${zone.name} prefix`)).filter((p) => parseCidr(p).family === (kind === 'v4' ? 4 : 6)).map(prefixJson);
  }

  private createZone(zone: Zone): Record<string, unknown>[] {
    const family = 'inet';
    const table = this.tableName;
    return (Object.keys(ZONE_SET_TYPES) as ZoneSetKind[]).flatMap((kind) => {
      const name = this.zoneSetName(zone, kind);
      const set: Record<string, unknown> = { family, table, name, type: ZONE_SET_TYPES[kind] };
      if (kind !== 'if') set.flags = ['interval'];
      const elem = this.zoneElements(zone, kind);
      return [{ add: { set } }, ...(elem.length > 0 ? [{ add: { element: { family, table, name, elem } } }] : [])];
    });
  }

  private deleteZone(zone: Zone): Record<string, unknown>[] {
    return (Object.keys(ZONE_SET_TYPES) as ZoneSetKind[]).map((kind) => ({ delete: { set: { family: 'inet', table: this.tableName, name: this.zoneSetName(zone, kind) } } }));
  }

  /** Adds the missing elements before deleting the extra ones, set by set; the sets (and their handles) stay. */
  private changeZoneElements(previous: Zone, zone: Zone): Record<string, unknown>[] {
    const family = 'inet';
    const table = this.tableName;
    return (Object.keys(ZONE_SET_TYPES) as ZoneSetKind[]).flatMap((kind) => {
      const name = this.zoneSetName(zone, kind);
      const key = (e: unknown) => JSON.stringify(e);
      const have = this.zoneElements(previous, kind);
      const want = this.zoneElements(zone, kind);
      const adds = want.filter((e) => !have.some((h) => key(h) === key(e)));
      const deletes = have.filter((e) => !want.some((w) => key(w) === key(e)));
      return [
        ...(adds.length > 0 ? [{ add: { element: { family, table, name, elem: adds } } }] : []),
        ...(deletes.length > 0 ? [{ delete: { element: { family, table, name, elem: deletes } } }] : []),
      ];
    });
  }
}

function hasNat(config: NatConfig): boolean {
  return config.sourceNat.length > 0 || config.portForwards.length > 0;
}

/** A prefix element of an interval set as nft lists it: `{prefix}` or a plain address (a host). */
function elementToCidr(elem: unknown, where: string): string {
  const prefix = (elem as { prefix?: { addr: string; len: number } } | null)?.prefix;
  try {
    return canonicalCidr(prefix ? `${prefix.addr}/${prefix.len}` : String(elem));
  } catch {
    throw new ForeignStateError(`${where} holds an element fos1 does not write: ${JSON.stringify(elem)}`);
  }
}

const nfproto = (family: 4 | 6): Expr => ({ match: { op: '==', left: { meta: { key: 'nfproto' } }, right: family === 4 ? 'ipv4' : 'ipv6' } });
const metaMatch = (key: string, value: string): Expr => ({ match: { op: '==', left: { meta: { key } }, right: value } });
const payloadMatch = (protocol: string, field: string, right: unknown): Expr => ({ match: { op: '==', left: { payload: { protocol, field } }, right } });
const ipProto = (family: 4 | 6) => (family === 4 ? 'ip' : 'ip6');

/** nft's JSON for a prefix: a plain address for a host, `{prefix}` otherwise (as nft lists it). */
function prefixJson(cidr: string): unknown {
  const { family, prefixLength } = parseCidr(cidr);
  const [addr] = cidr.split('/');
  return prefixLength === (family === 4 ? 32 : 128) ? addr : { prefix: { addr, len: prefixLength } };
}

/** The expressions of a source NAT rule, exactly as `nft -j list` prints them back. */
export function sourceNatExpr(rule: SourceNat): Expr[] {
  // Values re-checked where they enter the nft document (command-args.ts): nft reads a
  // string as "@set" or "$variable" by its first character, so a name is never taken as given.
  const { family, prefixLength } = parseCidr(prefix(rule.source, 'source NAT source'));
  const expr: Expr[] = [prefixLength === 0 ? nfproto(family) : payloadMatch(ipProto(family), 'saddr', prefixJson(rule.source)), metaMatch('oifname', interfaceName(rule.outInterface, 'source NAT outInterface'))];
  expr.push(rule.to === undefined ? { masquerade: null } : { snat: { family: ipProto(family), addr: address(rule.to, 'source NAT to') } });
  return expr;
}

/** The expressions of a port forward, exactly as `nft -j list` prints them back. */
export function portForwardExpr(rule: PortForward): Expr[] {
  const family = parseIp(address(rule.to, 'port forward to'))?.family ?? 4;
  const protocol = oneOf(rule.protocol, 'port forward protocol', ['tcp', 'udp'] as const);
  const port = Number(integer(rule.port, 'port forward port', 1, 65535));
  const toPort = Number(integer(rule.toPort ?? rule.port, 'port forward toPort', 1, 65535));
  const expr: Expr[] = [];
  if (rule.inInterface !== undefined) expr.push(metaMatch('iifname', interfaceName(rule.inInterface, 'port forward inInterface')));
  expr.push(rule.destination !== undefined ? payloadMatch(ipProto(family), 'daddr', address(rule.destination, 'port forward destination')) : nfproto(family));
  expr.push(payloadMatch(protocol, 'dport', port));
  expr.push({ dnat: { family: ipProto(family), addr: rule.to, port: toPort } });
  return expr;
}

/** Reads a source NAT rule back; anything but the exact shape fos1 writes is foreign. */
function parseSourceNat(expr: Expr[], where: string): SourceNat {
  const get = (e: Expr | undefined, path: string[]): unknown => path.reduce<unknown>((v, k) => (v && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined), e);
  try {
    const [first, second, action] = expr;
    let source: string;
    if (get(first, ['match', 'left', 'meta', 'key']) === 'nfproto') {
      source = get(first, ['match', 'right']) === 'ipv6' ? '::/0' : '0.0.0.0/0';
    } else {
      const right = get(first, ['match', 'right']);
      const prefix = get(right as Expr, ['prefix']) as { addr: string; len: number } | undefined;
      source = canonicalCidr(prefix ? `${prefix.addr}/${prefix.len}` : String(right));
    }
    const rule: SourceNat = { source, outInterface: String(get(second, ['match', 'right'])) };
    const to = get(action, ['snat', 'addr']);
    if (to !== undefined) rule.to = canonicalIp(String(to));
    if (JSON.stringify(sourceNatExpr(rule)) !== JSON.stringify(expr)) throw new Error('shape');
    return rule;
  } catch {
    throw new ForeignStateError(`${where} is not a rule fos1 writes: ${JSON.stringify(expr)}`);
  }
}

/** Reads a port forward back; anything but the exact shape fos1 writes is foreign. */
function parsePortForward(expr: Expr[], where: string): PortForward {
  const get = (e: Expr | undefined, path: string[]): unknown => path.reduce<unknown>((v, k) => (v && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined), e);
  try {
    const rest = [...expr];
    let inInterface: string | undefined;
    if (get(rest[0], ['match', 'left', 'meta', 'key']) === 'iifname') inInterface = String(get(rest.shift(), ['match', 'right']));
    const addressMatch = rest.shift();
    const destination = get(addressMatch, ['match', 'left', 'payload', 'field']) === 'daddr' ? canonicalIp(String(get(addressMatch, ['match', 'right']))) : undefined;
    const portMatch = rest.shift();
    const dnat = get(rest.shift(), ['dnat']) as { addr: string; port: number } | undefined;
    if (!dnat) throw new Error('no dnat');
    const rule: PortForward = {
      protocol: get(portMatch, ['match', 'left', 'payload', 'protocol']) === 'udp' ? 'udp' : 'tcp',
      port: Number(get(portMatch, ['match', 'right'])),
      to: canonicalIp(dnat.addr),
      toPort: dnat.port,
    };
    if (inInterface !== undefined) rule.inInterface = inInterface;
    if (destination !== undefined) rule.destination = destination;
    if (JSON.stringify(portForwardExpr(rule)) !== JSON.stringify(expr)) throw new Error('shape');
    return rule;
  } catch {
    throw new ForeignStateError(`${where} is not a rule fos1 writes: ${JSON.stringify(expr)}`);
  }
}
