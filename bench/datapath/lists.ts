/**
 * The benchmark's blocklists: H random IPv4 hosts and P random prefixes, disjoint,
 * from a fixed seed so every run (and every contender) loads the same sets.
 * Used by run.ts; also a CLI to write the fos1 text list alone, for fos1-load.ts runs:
 *
 *   npx tsx bench/datapath/lists.ts OUT_FILE [HOSTS] [PREFIXES]
 */
import { writeFileSync } from 'node:fs';

/** Deterministic PRNG (xorshift32) so every run benchmarks the same sets. */
function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

export const ip4 = (a: number) => `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;

/**
 * Prefixes: each in its own random /20 block of 1.0.0.0–99.255.255.255 (minus 10/8),
 * length 20–28. Hosts: distinct random addresses in 100.0.0.0–223.255.255.255 (minus
 * 127/8). Disjoint by construction, and the test addresses 10.99.0.x match nothing.
 */
export function generate(hosts: number, prefixes: number): { hostList: string[]; prefixList: string[] } {
  const next = prng(0xf051);
  const blocks = new Set<number>();
  const prefixList: string[] = [];
  while (prefixList.length < prefixes) {
    const block = next() % (99 * 4096); // /20 blocks of 1.0.0.0/8 … 99.0.0.0/8
    const base = (((1 << 24) + block * 4096) >>> 0);
    if (base >>> 24 === 10 || blocks.has(block)) continue;
    blocks.add(block);
    const len = 20 + (next() % 9);
    const offset = (next() % (1 << (len - 20))) << (32 - len);
    prefixList.push(`${ip4((base + offset) >>> 0)}/${len}`);
  }
  const seen = new Set<number>();
  const hostList: string[] = [];
  while (hostList.length < hosts) {
    const a = (((100 + (next() % 124)) << 24) | (next() & 0xffffff)) >>> 0;
    if (a >>> 24 === 127 || seen.has(a)) continue;
    seen.add(a);
    hostList.push(ip4(a));
  }
  return { hostList, prefixList };
}

if (require.main === module) {
  const [out, hosts = '1000000', prefixes = '100000'] = process.argv.slice(2);
  if (!out) throw new Error('usage: lists.ts OUT_FILE [HOSTS] [PREFIXES]');
  const { hostList, prefixList } = generate(Number(hosts), Number(prefixes));
  writeFileSync(out, `${[...hostList, ...prefixList].join('\n')}\n`);
}
