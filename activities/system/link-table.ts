/**
 * The interface subsystems of a node: links (MTU, admin state), fos1's 802.1Q VLAN
 * sub-interfaces, and interface addresses. Read, plan, apply, restore like the route
 * subsystem: `sync*(desired)` re-reads the kernel, plans against it and applies, and the
 * restore is the same call given the snapshot.
 *
 * Ownership: fos1 changes only interfaces a change names; the VLANs it creates carry the
 * ifalias {@link FOS1_LINK_ALIAS}, and only those are ever deleted. Addresses fos1 manages
 * are the global-scope ones (link-local IPv6 and loopback's host-scope addresses are the
 * kernel's).
 */
import { canonicalIp } from '../../model/ip';
import type { InterfaceConfig, ObservedInterface } from '../../model/node-state';
import { FOS1_LINK_ALIAS } from '../../model/node-state';
import type { AddressOperation, LinkOperation, VlanOperation } from '../../model/plan';
import { planAddresses, planLinks, planVlans, renderOperation, restorableInterfaces } from '../../model/plan';
import { IpCommandError, type IpRunner } from './ip-runner';
import { integer, interfaceAddress, interfaceName } from './command-args';
import { applyBatch, KernelFeatureMissingError, kernelMessage, NetworkApplyError } from './network-errors';

interface IpJsonLink {
  ifname: string;
  link?: string;
  flags?: string[];
  mtu: number;
  ifalias?: string;
  linkinfo?: { info_kind?: string; info_data?: { id?: number } };
}

interface IpJsonAddrInfo {
  family: string;
  local?: string;
  prefixlen?: number;
  scope?: string;
}

/** Name of the throwaway link the VLAN capability probe asks for (never created: see {@link LinkTable.checkVlanSupport}). */
const VLAN_PROBE_NAME = 'fos1-vlanprobe';

/** Reads and changes interfaces, VLANs and addresses in one network namespace. */
export class LinkTable {
  constructor(private readonly ip: IpRunner) {}

  /** Every interface with its MTU, admin state, fos1 VLAN identity and global addresses, by name. */
  async read(): Promise<ObservedInterface[]> {
    const links = JSON.parse((await this.ip.run(['-d', '-json', 'link', 'show'])) || '[]') as IpJsonLink[];
    const addrs = JSON.parse((await this.ip.run(['-json', 'address', 'show'])) || '[]') as { ifname: string; addr_info?: IpJsonAddrInfo[] }[];
    const addressesOf = new Map(addrs.map((a) => [a.ifname, a.addr_info ?? []]));
    return links
      .map((link) => {
        const iface: ObservedInterface = {
          name: link.ifname,
          mtu: link.mtu,
          up: (link.flags ?? []).includes('UP'),
          addresses: (addressesOf.get(link.ifname) ?? [])
            .filter((a) => (a.family === 'inet' || a.family === 'inet6') && a.local !== undefined && a.scope !== 'link' && a.scope !== 'host')
            .map((a) => `${canonicalIp(a.local as string)}/${a.prefixlen}`)
            .sort(),
        };
        const id = link.linkinfo?.info_data?.id;
        if (link.linkinfo?.info_kind === 'vlan' && link.ifalias === FOS1_LINK_ALIAS && link.link !== undefined && id !== undefined) {
          iface.vlan = { parent: link.link, id };
        }
        return iface;
      })
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /**
   * Fails with {@link KernelFeatureMissingError} when the kernel cannot make 802.1Q VLANs.
   * The probe asks for a VLAN on loopback: without VLAN support the kernel answers
   * "Unknown device type"; with it, loopback refuses VLANs ("VLANs not supported on
   * device"), so the probe never leaves a link behind (and removes one if it did).
   */
  async checkVlanSupport(): Promise<void> {
    try {
      await this.ip.run(['link', 'add', 'link', 'lo', 'name', VLAN_PROBE_NAME, 'type', 'vlan', 'id', '4094']);
    } catch (err) {
      if (err instanceof IpCommandError && /Unknown device type/i.test(err.stderr)) {
        throw new KernelFeatureMissingError(
          '802.1Q VLAN (CONFIG_VLAN_8021Q, module 8021q)',
          `this kernel cannot create VLAN sub-interfaces (\`ip link add … type vlan\` answers "${kernelMessage(err)}"); load the 8021q module or use a kernel with it`,
        );
      }
      return;
    }
    await this.ip.run(['link', 'del', 'dev', VLAN_PROBE_NAME]).catch(() => undefined);
  }

  /**
   * Converges MTU and admin state of the named interfaces; returns the operations needed.
   * `restore` skips interfaces fos1 does not own that no longer exist (see restorableInterfaces).
   */
  async syncLinks(desired: readonly InterfaceConfig[], options: { restore?: boolean } = {}): Promise<LinkOperation[]> {
    const observed = await this.read();
    const ops = planLinks(observed, options.restore ? restorableInterfaces([...desired], observed) : [...desired]);
    const line = (op: LinkOperation) => {
      const args = ['link', 'set', 'dev', interfaceName(op.name, 'interface name')];
      if (op.settings.mtu !== undefined) args.push('mtu', integer(op.settings.mtu, 'interface mtu', 68, 65535));
      if (op.settings.up !== undefined) args.push(op.settings.up ? 'up' : 'down');
      return args;
    };
    await applyBatch(this.ip, [], ops, line, 'Link', renderOperation);
    return ops;
  }

  /**
   * Converges fos1's VLANs: deletes the ones not desired, creates the missing ones (after
   * checking, before touching anything, that the kernel can make VLANs at all).
   */
  async syncVlans(desired: readonly InterfaceConfig[]): Promise<VlanOperation[]> {
    const ops = planVlans(await this.read(), [...desired]);
    // Every operation's values are checked before the first runs (command-args.ts).
    const commands = ops.map((op) => {
      const v = op.vlan;
      const name = interfaceName(v.name, 'VLAN name');
      if (op.action === 'delete') return { op, args: ['link', 'del', 'dev', name] };
      const add = ['link', 'add', 'link', interfaceName(v.parent, 'VLAN parent'), 'name', name];
      if (v.mtu !== undefined) add.push('mtu', integer(v.mtu, 'VLAN mtu', 68, 65535));
      add.push('type', 'vlan', 'id', integer(v.id, 'VLAN id', 1, 4094));
      return { op, args: add };
    });
    if (ops.some((op) => op.action === 'add')) await this.checkVlanSupport();
    for (const { op, args } of commands) {
      const v = op.vlan;
      await this.run('Vlan', op, args);
      if (op.action === 'delete') continue;
      // The alias is fos1's ownership mark: without it the VLAN would be foreign to fos1, and
      // no rollback would remove it. The kernel ignores an alias given to `link add`, so it
      // takes a second call; if that fails, the unmarked VLAN is removed again at once.
      try {
        await this.run('Vlan', op, ['link', 'set', 'dev', v.name, 'alias', FOS1_LINK_ALIAS, ...(v.up === true ? ['up'] : [])]);
      } catch (err) {
        await this.ip.run(['link', 'del', 'dev', v.name]).catch(() => undefined);
        throw err;
      }
    }
    return ops;
  }

  /** Converges the addresses of interfaces whose address list `desired` gives (`restore`: as syncLinks). */
  async syncAddresses(desired: readonly InterfaceConfig[], options: { restore?: boolean } = {}): Promise<AddressOperation[]> {
    const observed = await this.read();
    const ops = planAddresses(observed, options.restore ? restorableInterfaces([...desired], observed) : [...desired]);
    const line = (op: AddressOperation) => {
      const args = ['address', op.action === 'add' ? 'add' : 'del', interfaceAddress(op.address, 'interface address'), 'dev', interfaceName(op.device, 'address device')];
      // Router addresses are planned, not autoconfigured: skipping duplicate address
      // detection makes an IPv6 address usable at once instead of "tentative" for ~1s.
      if (op.action === 'add' && op.address.includes(':')) args.push('nodad');
      return args;
    };
    await applyBatch(this.ip, [], ops, line, 'Address', renderOperation);
    return ops;
  }

  private async run(subsystem: 'Vlan', op: VlanOperation, args: string[]): Promise<void> {
    try {
      // Names, addresses and numbers were validated by the model; argv, never a shell.
      await this.ip.run(args);
    } catch (err) {
      if (!(err instanceof IpCommandError)) throw err;
      throw new NetworkApplyError(subsystem, renderOperation(op), kernelMessage(err));
    }
  }
}
