/**
 * Byte layout of blocklist map keys and values. These bytes are read by the kernel's
 * LPM trie and by BPF programs built against bpf/include/fos1-blocklist.h, so the
 * expectations below are exact bytes, not just round trips.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  BLOCK_VALUE_SIZE,
  BlocklistCodecError,
  HOST_LITTLE_ENDIAN,
  LPM_V4_KEY_SIZE,
  LPM_V6_KEY_SIZE,
  decodeBlockValue,
  decodeLpmKey,
  encodeBlockValue,
  encodeLpmKey,
  lpmKeySize,
} from '../../bpf/blocklist-codec';
import { formatCidr, parseCidr } from '../../model/ip';

/** Hex of a buffer, for readable byte-exact expectations. */
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

// Expected bytes below are written for little-endian hosts (every platform fos1 runs on).
const describeLE = HOST_LITTLE_ENDIAN ? describe : describe.skip;

describe('size constants', () => {
  it('match the C structs', () => {
    expect(LPM_V4_KEY_SIZE).toBe(8);
    expect(LPM_V6_KEY_SIZE).toBe(20);
    expect(BLOCK_VALUE_SIZE).toBe(16);
    expect(lpmKeySize(4)).toBe(8);
    expect(lpmKeySize(6)).toBe(20);
  });

  it('agree with the field list in bpf/include/fos1-blocklist.h', () => {
    const header = readFileSync(join(__dirname, '../../bpf/include/fos1-blocklist.h'), 'utf8');
    const sizeOf = (struct: string): number => {
      const body = new RegExp(`struct ${struct} \\{([^}]*)\\}`).exec(header)?.[1];
      if (!body) throw new Error(`struct ${struct} not found in header`);
      let size = 0;
      for (const m of body.matchAll(/__(u8|u32|u64)\s+\w+(?:\[(\d+)\])?;/g)) {
        const width = { u8: 1, u32: 4, u64: 8 }[m[1] as 'u8' | 'u32' | 'u64'];
        size = Math.ceil(size / width) * width + width * Number(m[2] ?? 1);
      }
      return size;
    };
    expect(sizeOf('fos1_lpm_v4_key')).toBe(LPM_V4_KEY_SIZE);
    expect(sizeOf('fos1_lpm_v6_key')).toBe(LPM_V6_KEY_SIZE);
    expect(sizeOf('fos1_block_value')).toBe(BLOCK_VALUE_SIZE);
  });
});

describeLE('LPM keys', () => {
  it('encodes 10.1.2.0/24 as host-order prefixlen then network-order address', () => {
    expect(hex(encodeLpmKey('10.1.2.0/24'))).toBe('18000000' + '0a010200');
  });

  it('encodes a bare IPv4 address as /32', () => {
    expect(hex(encodeLpmKey('192.0.2.7'))).toBe('20000000' + 'c0000207');
  });

  it('encodes 0.0.0.0/0', () => {
    expect(hex(encodeLpmKey('0.0.0.0/0'))).toBe('00000000' + '00000000');
  });

  it('encodes IPv6 prefixes in 20 bytes', () => {
    expect(hex(encodeLpmKey('2001:db8::/32'))).toBe('20000000' + '20010db8' + '00'.repeat(12));
    expect(hex(encodeLpmKey('2001:db8::1'))).toBe('80000000' + '20010db8' + '00'.repeat(10) + '0001');
  });

  it('accepts a parsed Cidr as well as text', () => {
    expect(encodeLpmKey(parseCidr('10.1.2.0/24'))).toEqual(encodeLpmKey('10.1.2.0/24'));
  });

  it('decodes exact bytes back to the prefix', () => {
    const v4 = decodeLpmKey(Buffer.from('180000000a010200', 'hex'));
    expect(v4).toEqual({ family: 4, bytes: new Uint8Array([10, 1, 2, 0]), prefixLength: 24 });
    const v6 = decodeLpmKey(Buffer.from('40000000' + '20010db800000001' + '00'.repeat(8), 'hex'));
    expect(formatCidr(v6)).toBe('2001:db8:0:1::/64');
  });

  it('round-trips to canonical text', () => {
    for (const [input, canonical] of [
      ['10.1.2.0/24', '10.1.2.0/24'],
      ['10.1.2.3', '10.1.2.3/32'],
      ['0.0.0.0/0', '0.0.0.0/0'],
      ['2001:DB8:0::/32', '2001:db8::/32'],
      ['::/0', '::/0'],
      ['fe80::1', 'fe80::1/128'],
      ['::ffff:192.0.2.1', '::ffff:c000:201/128'],
    ] as const) {
      expect(formatCidr(decodeLpmKey(encodeLpmKey(input)))).toBe(canonical);
    }
  });

  it('clears host bits another tool may have stored', () => {
    expect(formatCidr(decodeLpmKey(Buffer.from('180000000a010203', 'hex')))).toBe('10.1.2.0/24');
  });

  it('decodes from a view into a larger buffer', () => {
    const big = Buffer.concat([Buffer.from('ffff', 'hex'), encodeLpmKey('10.1.2.0/24')]);
    expect(formatCidr(decodeLpmKey(big.subarray(2)))).toBe('10.1.2.0/24');
  });

  it('refuses wrong sizes and impossible prefix lengths', () => {
    expect(() => decodeLpmKey(Buffer.alloc(7))).toThrow(BlocklistCodecError);
    expect(() => decodeLpmKey(Buffer.from('210000000a010200', 'hex'))).toThrow(/prefixlen 33/);
    expect(() => decodeLpmKey(Buffer.from('81000000' + '00'.repeat(16), 'hex'))).toThrow(/prefixlen 129/);
  });

  it('refuses text that is not a prefix', () => {
    expect(() => encodeLpmKey('10.1.2.3/24')).toThrow(/host bits/);
    expect(() => encodeLpmKey('not-an-ip')).toThrow();
  });
});

describeLE('block values', () => {
  it('lays out expires_at, rule_id, flags in host order', () => {
    const v = encodeBlockValue({ expiresAt: 0x0102030405, ruleId: 0x0a0b0c0d, flags: 1 });
    expect(hex(v)).toBe('0504030201000000' + '0d0c0b0a' + '01000000');
  });

  it('defaults every field to zero', () => {
    expect(hex(encodeBlockValue({}))).toBe('00'.repeat(16));
  });

  it('round-trips', () => {
    const value = { expiresAt: 1_893_456_000, ruleId: 4_294_967_295, flags: 0 };
    expect(decodeBlockValue(encodeBlockValue(value))).toEqual(value);
    expect(decodeBlockValue(encodeBlockValue({ expiresAt: Number.MAX_SAFE_INTEGER }))).toEqual({
      expiresAt: Number.MAX_SAFE_INTEGER,
      ruleId: 0,
      flags: 0,
    });
  });

  it('refuses values that do not fit the C types', () => {
    expect(() => encodeBlockValue({ expiresAt: -1 })).toThrow(BlocklistCodecError);
    expect(() => encodeBlockValue({ expiresAt: 1.5 })).toThrow(/expiresAt/);
    expect(() => encodeBlockValue({ ruleId: 2 ** 32 })).toThrow(/ruleId/);
    expect(() => encodeBlockValue({ flags: -1 })).toThrow(/flags/);
    expect(() => decodeBlockValue(Buffer.alloc(8))).toThrow(/8 bytes/);
  });
});
