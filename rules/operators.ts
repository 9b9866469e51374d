/**
 * Custom json-rules-engine operators: CIDR membership, allow-list membership and
 * Suricata severity thresholds. Operands are parsed once per rule value (rule values
 * are the same objects on every run), not once per event.
 */
import { Operator } from 'json-rules-engine';
import { cidrContains, parseCidr, parseIp, type Cidr } from '../model/ip';
import type { EnforcementGuard } from '../model/enforcement-guard';

/** Names of the custom operators, for rule-set validation. */
export const CUSTOM_OPERATORS = ['inCidr', 'notInCidr', 'inAllowList', 'notInAllowList', 'severityAtLeast'] as const;

/** json-rules-engine's built-in operators. */
export const BUILTIN_OPERATORS = [
  'equal',
  'notEqual',
  'in',
  'notIn',
  'contains',
  'doesNotContain',
  'lessThan',
  'lessThanInclusive',
  'greaterThan',
  'greaterThanInclusive',
  'startsWith',
  'endsWith',
] as const;

/** Every operator a rule set may use. */
export const KNOWN_OPERATORS: ReadonlySet<string> = new Set<string>([...CUSTOM_OPERATORS, ...BUILTIN_OPERATORS]);

/** Checks an operator's comparison value at load time; returns the problem or null. */
export function checkOperatorValue(operator: string, value: unknown, allowListNames: ReadonlySet<string> | undefined): string | null {
  switch (operator) {
    case 'inCidr':
    case 'notInCidr': {
      const list = Array.isArray(value) ? value : [value];
      if (list.length === 0) return 'needs at least one prefix';
      for (const item of list) {
        if (typeof item !== 'string') return `needs prefixes as strings, got ${JSON.stringify(item)}`;
        try {
          parseCidr(item);
        } catch (err) {
          return err instanceof Error ? err.message : String(err);
        }
      }
      return null;
    }
    case 'inAllowList':
    case 'notInAllowList': {
      const names = Array.isArray(value) ? value : [value];
      if (names.length === 0 || names.some((n) => typeof n !== 'string')) return 'needs an allow-list name or a list of names';
      if (allowListNames) {
        const unknown = (names as string[]).filter((n) => n !== '*' && !allowListNames.has(n));
        if (unknown.length > 0) return `names allow-list(s) ${unknown.map((n) => `"${n}"`).join(', ')} that the configuration does not define (defined: ${[...allowListNames].join(', ') || 'none'}; "*" means any)`;
      }
      return null;
    }
    case 'severityAtLeast':
      return Number.isInteger(value) && (value as number) >= 1 && (value as number) <= 255 ? null : 'needs a Suricata severity 1–255 (1 is the most severe)';
    default:
      return null;
  }
}

/** Builds the custom operators; allow-list operators consult `guard`'s named lists. */
export function createOperators(guard: EnforcementGuard): Operator[] {
  const parsedLists = new WeakMap<object, Cidr[]>();
  const prefixesOf = (value: unknown): Cidr[] => {
    if (typeof value === 'string') return [parseCidr(value)];
    const list = value as string[];
    let parsed = parsedLists.get(list);
    if (!parsed) {
      parsed = list.map((c) => parseCidr(c));
      parsedLists.set(list, parsed);
    }
    return parsed;
  };
  const inCidr = (fact: unknown, value: unknown): boolean => {
    if (typeof fact !== 'string') return false;
    const ip = parseIp(fact);
    if (!ip) return false;
    const host: Cidr = { family: ip.family, bytes: ip.bytes, prefixLength: ip.family === 4 ? 32 : 128 };
    return prefixesOf(value).some((p) => cidrContains(p, host));
  };
  const inAllowList = (fact: unknown, value: unknown): boolean => {
    if (typeof fact !== 'string') return false;
    const hit = guard.allowListed(fact);
    if (!hit) return false;
    const names = Array.isArray(value) ? (value as string[]) : [value as string];
    return names.includes('*') || names.includes(hit.list);
  };
  return [
    new Operator('inCidr', inCidr),
    // An absent address is not "outside" any range: the rule cannot judge it.
    new Operator('notInCidr', (fact, value) => typeof fact === 'string' && parseIp(fact) !== null && !inCidr(fact, value)),
    new Operator('inAllowList', inAllowList),
    new Operator('notInAllowList', (fact, value) => typeof fact === 'string' && parseIp(fact) !== null && !inAllowList(fact, value)),
    // Suricata counts severity down: 1 is the worst, so "at least 2" means 1 or 2.
    new Operator('severityAtLeast', (fact, value) => typeof fact === 'number' && fact >= 1 && fact <= (value as number)),
  ];
}
