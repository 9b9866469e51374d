/**
 * Throwaway network namespaces standing in for router nodes. Each has loopback up and a
 * veth pair (`lan0` ↔ `lan1`, both inside) with 10.77.0.2/24 and fd00:77::2/64 on `lan0`,
 * so routes via 10.77.0.1 / fd00:77::1 have an on-link gateway.
 */
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { createIpRunner, type IpRunner } from '../../activities/system/ip-runner';
import { createSandboxNamespace } from '../../scripts/sandbox-netns';

export const LAN_GATEWAY_V4 = '10.77.0.1';
export const LAN_GATEWAY_V6 = 'fd00:77::1';

/** A namespace created for one test file; `destroy()` removes it and everything in it. */
export class TestNamespace {
  readonly ip: IpRunner;
  private constructor(readonly name: string) {
    this.ip = createIpRunner({ netns: name });
  }

  static create(prefix = 'fos1t'): TestNamespace {
    const name = `${prefix}-${randomBytes(3).toString('hex')}`;
    createSandboxNamespace(name, ['10.77.0.2/24', 'fd00:77::2/64']);
    return new TestNamespace(name);
  }

  /** Raw `ip -json` output of all routes with the given protocol (both families). */
  routesJson(protocol: number): unknown {
    return [4, 6].map((f) => JSON.parse(execFileSync('ip', ['-n', this.name, `-${f}`, '-json', 'route', 'show', 'table', 'all', 'proto', String(protocol)]).toString() || '[]'));
  }

  destroy(): void {
    execFileSync('ip', ['netns', 'del', this.name]);
  }
}
