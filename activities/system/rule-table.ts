/**
 * The policy routing rule subsystem (`ip rule`): read, plan, apply, restore the rules
 * fos1 owns. Like routes, fos1's rules carry its protocol number (`protocol 241`), so
 * the kernel's default rules and anyone else's are never read as fos1's nor touched.
 */
import { canonicalCidr } from '../../model/ip';
import type { PolicyRule } from '../../model/node-state';
import { MAIN_TABLE } from '../../model/node-state';
import type { RuleOperation } from '../../model/plan';
import { planRules, renderOperation } from '../../model/plan';
import type { IpRunner } from './ip-runner';
import { integer, interfaceName, prefix } from './command-args';
import { applyBatch } from './network-errors';

interface IpJsonRule {
  priority: number;
  src?: string;
  srclen?: number;
  dst?: string;
  dstlen?: number;
  iif?: string;
  oif?: string;
  fwmark?: string;
  fwmask?: string;
  table?: string;
  protocol?: string;
}

const TABLE_NAMES: Record<string, number> = { main: MAIN_TABLE, default: 253, local: 255 };

/** Reads and changes fos1's policy routing rules in one network namespace. */
export class RuleTable {
  constructor(
    private readonly ip: IpRunner,
    private readonly protocol: number,
  ) {}

  /** fos1's rules of both families. */
  async read(): Promise<PolicyRule[]> {
    const rules: PolicyRule[] = [];
    for (const family of [4, 6] as const) {
      const parsed = JSON.parse((await this.ip.run([`-${family}`, '-json', 'rule', 'show'])) || '[]') as IpJsonRule[];
      // iproute2 6.1 ignores a `protocol` filter on `rule show`, so fos1 filters here.
      for (const r of parsed) if (r.protocol === String(this.protocol)) rules.push(fromIpJson(r, family));
    }
    return rules;
  }

  /** Converges fos1's rules to `desired`: adds first, deletes last. */
  async sync(desired: readonly PolicyRule[]): Promise<RuleOperation[]> {
    const ops = planRules(await this.read(), [...desired]);
    // Every line is built (and checked) before the first batch runs: a bad value in an IPv6
    // rule must not leave the IPv4 batch applied.
    const lines = new Map(ops.map((op) => [op, this.line(op)]));
    // One batch per family: `-6` must be global for rules that name no IPv6 prefix (fwmark only).
    for (const family of [4, 6] as const) {
      await applyBatch(this.ip, [`-${family}`], ops.filter((op) => op.rule.family === family), (op) => lines.get(op) ?? this.line(op), 'Rule', renderOperation);
    }
    return ops;
  }

  private line(op: RuleOperation): string[] {
    // Each value checked where it enters the line (activities/system/command-args.ts).
    const r = op.rule;
    const args = ['rule', op.action === 'add' ? 'add' : 'del', 'priority', integer(r.priority, 'rule priority', 1, 32765)];
    if (r.from) args.push('from', prefix(r.from, 'rule from'));
    if (r.to) args.push('to', prefix(r.to, 'rule to'));
    if (r.iif) args.push('iif', interfaceName(r.iif, 'rule iif'));
    if (r.oif) args.push('oif', interfaceName(r.oif, 'rule oif'));
    if (r.fwmark !== undefined) {
      integer(r.fwmark, 'rule fwmark', 0, 0xffffffff);
      integer(r.fwmask ?? 0xffffffff, 'rule fwmask', 0, 0xffffffff);
      args.push('fwmark', `0x${r.fwmark.toString(16)}/0x${(r.fwmask ?? 0xffffffff).toString(16)}`);
    }
    args.push('table', integer(r.table, 'rule table', 1, 4294967295), 'protocol', integer(this.protocol, 'rule protocol', 1, 255));
    return args;
  }
}

function fromIpJson(r: IpJsonRule, family: 4 | 6): PolicyRule {
  const rule: PolicyRule = { family, priority: r.priority, table: r.table === undefined ? MAIN_TABLE : (TABLE_NAMES[r.table] ?? Number(r.table)) };
  const prefix = (addr: string | undefined, len: number | undefined) =>
    addr === undefined || addr === 'all' ? undefined : canonicalCidr(len === undefined ? addr : `${addr}/${len}`);
  const from = prefix(r.src, r.srclen);
  const to = prefix(r.dst, r.dstlen);
  if (from) rule.from = from;
  if (to) rule.to = to;
  if (r.iif) rule.iif = r.iif;
  if (r.oif) rule.oif = r.oif;
  if (r.fwmark !== undefined) {
    rule.fwmark = Number(r.fwmark);
    rule.fwmask = r.fwmask === undefined ? 0xffffffff : Number(r.fwmask);
  }
  return rule;
}
