/**
 * The NAT subsystem: source NAT / masquerade and port forwards, IPv4 and IPv6 (NAT66), in
 * one nftables table of family `inet` that fos1 owns (`inet fos1` by default). Nothing
 * outside that table is read or changed.
 *
 * The table has two chains: `postrouting` (type nat, priority srcnat) holds source NAT in
 * order, `prerouting` (type nat, priority dstnat) holds port forwards. Every change is one
 * nft JSON transaction (`nft -j -f FILE`), so a step either applies entirely or not at all.
 * Rules are appended or deleted by handle, never rewritten, so rules a change keeps keep
 * their handles and a rollback leaves `nft -j list table` exactly as it was. fos1 deletes
 * the table when no NAT is desired, and creates it when NAT first is.
 */
import { canonicalCidr, canonicalIp, parseCidr, parseIp } from '../../model/ip';
import type { NatConfig, PortForward, SourceNat } from '../../model/node-state';
import type { NatChain, NatOperation } from '../../model/plan';
import { planNat, renderOperation } from '../../model/plan';
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

/** fos1's NAT table as read: the config and the kernel handle of each rule, by chain and position. */
export interface NatTableState {
  exists: boolean;
  config: NatConfig;
  handles: Record<NatChain, number[]>;
}

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
    const state: NatTableState = { exists: false, config: { sourceNat: [], portForwards: [] }, handles: { postrouting: [], prerouting: [] } };
    const listing = (await this.listJson()) as { nftables?: Record<string, Record<string, unknown>>[] } | undefined;
    if (listing === undefined) return state;
    state.exists = true;
    for (const item of listing.nftables ?? []) {
      const rule = item.rule as { chain?: string; handle?: number; expr?: Expr[] } | undefined;
      const chain = item.chain as { name?: string } | undefined;
      if (chain && !(chain.name === 'postrouting' || chain.name === 'prerouting')) {
        throw new ForeignStateError(`table inet ${this.tableName} has a chain "${chain.name}" fos1 did not create`);
      }
      if (item.set || item.map || item.flowtable || item.element) {
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
    return state;
  }

  /** fos1's NAT config. */
  async read(): Promise<NatConfig> {
    return (await this.readState()).config;
  }

  /** Converges the table to `desired` in one nft transaction; returns the operations needed. */
  async sync(desired: NatConfig): Promise<NatOperation[]> {
    const live = await this.readState();
    const ops = planNat(live.config, desired);
    if (ops.length === 0) return ops;
    const family = 'inet';
    const table = this.tableName;
    const commands: Record<string, unknown>[] = [];
    const empty = desired.sourceNat.length === 0 && desired.portForwards.length === 0;
    if (empty) {
      commands.push({ delete: { table: { family, name: table } } });
    } else {
      if (!live.exists) {
        commands.push({ add: { table: { family, name: table } } });
        for (const [name, spec] of Object.entries(CHAINS)) {
          commands.push({ add: { chain: { family, table, name, type: 'nat', hook: spec.hook, prio: spec.prio, policy: 'accept' } } });
        }
      }
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
    }
    try {
      await this.nft.runJson({ nftables: commands });
    } catch (err) {
      if (!(err instanceof NftCommandError)) throw err;
      const message = err.stderr.split('\n').filter((l) => l.trim() !== '').join('; ') || `exit ${err.exitCode}`;
      throw new NetworkApplyError('Nat', ops.map(renderOperation).join(', '), message);
    }
    return ops;
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
  const { family, prefixLength } = parseCidr(rule.source);
  const expr: Expr[] = [prefixLength === 0 ? nfproto(family) : payloadMatch(ipProto(family), 'saddr', prefixJson(rule.source)), metaMatch('oifname', rule.outInterface)];
  expr.push(rule.to === undefined ? { masquerade: null } : { snat: { family: ipProto(family), addr: rule.to } });
  return expr;
}

/** The expressions of a port forward, exactly as `nft -j list` prints them back. */
export function portForwardExpr(rule: PortForward): Expr[] {
  const family = parseIp(rule.to)?.family ?? 4;
  const expr: Expr[] = [];
  if (rule.inInterface !== undefined) expr.push(metaMatch('iifname', rule.inInterface));
  expr.push(rule.destination !== undefined ? payloadMatch(ipProto(family), 'daddr', rule.destination) : nfproto(family));
  expr.push(payloadMatch(rule.protocol, 'dport', rule.port));
  expr.push({ dnat: { family: ipProto(family), addr: rule.to, port: rule.toPort ?? rule.port } });
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
