/**
 * A network namespace standing in for a router node: loopback up and a veth pair
 * (`lan0` ↔ `lan1`, both inside) with the given addresses on `lan0`, so routes via the
 * `.1` / `::1` of those networks have an on-link gateway. Used by the dev stack and tests.
 */
import { execFileSync } from 'node:child_process';

/** Creates namespace `name` (it must not exist) with `lan0` carrying `addresses` (CIDR, v4 or v6). */
export function createSandboxNamespace(name: string, addresses: readonly string[]): void {
  execFileSync('ip', ['netns', 'add', name]);
  const run = (...args: string[]) => execFileSync('ip', ['-n', name, ...args]);
  run('link', 'set', 'lo', 'up');
  run('link', 'add', 'lan0', 'type', 'veth', 'peer', 'name', 'lan1');
  run('link', 'set', 'lan0', 'up');
  run('link', 'set', 'lan1', 'up');
  // IPv6 without duplicate address detection: the address is usable at once.
  for (const address of addresses) run('addr', 'add', address, 'dev', 'lan0', ...(address.includes(':') ? ['nodad'] : []));
}
