/**
 * Blocklist images (pure): the text parser's fast and slow paths agree with the model's
 * parser, duplicates collapse to the last value, errors name the line and the rule,
 * diffs find exactly the adds/changes/deletes, and the digest ignores order only.
 */
import {
  BlocklistFileError,
  ImageBuilder,
  U32Index,
  deserializeImage,
  diffImages,
  diffSize,
  emptyImage,
  hostsIntoTries,
  imageDigest,
  imageEntries,
  imageFromEntries,
  parseBlocklistText,
  serializeImage,
} from '../../bpf/blocklist-image';
import { decodeDropEvent, encodeZonePolicyKey, encodeZoneVerdict, decodeZoneVerdict, DATAPATH_LAYOUTS, DatapathCodecError } from '../../bpf/datapath-codec';
import { parseCidr } from '../../model/ip';
import { blocklistRefSchema } from '../../model/blocklist-ref';

const parse = (text: string) => imageEntries(parseBlocklistText(Buffer.from(text)));

describe('parseBlocklistText', () => {
  it('reads hosts and prefixes of both families, options, comments, CRLF and blank lines', () => {
    expect(parse('10.0.0.1\r\n\n# comment\n10.0.0.0/8 rule=9\n192.0.2.7/32\n2001:DB8::1\n2001:db8::/32 expires=1700000000 # feed\n 10.1.2.3 \n')).toEqual([
      { cidr: '10.0.0.1/32' },
      { cidr: '192.0.2.7/32' },
      { cidr: '10.1.2.3/32' },
      { cidr: '2001:db8::1/128' },
      { cidr: '10.0.0.0/8', ruleId: 9 },
      { cidr: '2001:db8::/32', expiresAt: 1700000000 },
    ]);
  });

  it('keeps one entry per prefix, the last line winning', () => {
    expect(parse('10.0.0.1 rule=1\n10.0.0.1\n10.9.0.0/16\n10.9.0.0/16 expires=5\n')).toEqual([{ cidr: '10.0.0.1/32' }, { cidr: '10.9.0.0/16', expiresAt: 5 }]);
  });

  it.each([
    ['1.2.3.4/24', 1, 'host bits'],
    ['1.2.3', 1, 'IPv4'],
    ['01.2.3.4', 1, ''], // leading zero: some tools read octal
    ['256.1.1.1', 1, ''],
    ['1.2.3.4/33', 1, ''],
    ['ok\n1.2.3.4 ttl=3', 1, ''],
    ['10.0.0.1\n10.0.0.2\n2001:db8::/129', 3, ''],
  ])('refuses %j naming line %i', (text, line, detail) => {
    let error: unknown;
    try {
      parseBlocklistText(Buffer.from(text));
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(BlocklistFileError);
    expect((error as BlocklistFileError).line).toBe(line);
    expect((error as Error).message).toMatch(new RegExp(`^blocklist line ${line}: .*${detail}`));
  });

  it('collapses duplicate hosts inside a run of plain lines and keeps the last value across slow lines', () => {
    const text = '10.0.0.3\n10.0.0.1\n10.0.0.3\n10.0.0.2\n10.0.0.1\n10.0.0.2 rule=4\n10.0.0.9\n10.0.0.3 expires=7\n10.0.0.2\n';
    expect(parse(text)).toEqual([{ cidr: '10.0.0.1/32' }, { cidr: '10.0.0.2/32' }, { cidr: '10.0.0.3/32', expiresAt: 7 }, { cidr: '10.0.0.9/32' }]);
    expect(imageDigest(parseBlocklistText(Buffer.from(text)))).toBe(
      imageDigest(imageFromEntries([{ cidr: '10.0.0.9' }, { cidr: '10.0.0.3', expiresAt: 7 }, { cidr: '10.0.0.2' }, { cidr: '10.0.0.1' }])),
    );
  });

  it('agrees with the model parser on many random IPv4 prefixes (fast path = slow path)', () => {
    let x = 7;
    const lines: string[] = [];
    for (let i = 0; i < 2000; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      const len = x % 33;
      const addr = len === 0 ? 0 : (x & ((0xffffffff << (32 - len)) >>> 0)) >>> 0;
      lines.push(`${addr >>> 24}.${(addr >>> 16) & 255}.${(addr >>> 8) & 255}.${addr & 255}/${len}`);
    }
    const fast = parse(lines.join('\n'));
    const viaModel = imageEntries(imageFromEntries(lines.map((cidr) => ({ cidr }))));
    // A run of plain host lines comes out sorted by address (radix-sort dedup); order carries no meaning.
    const byCidr = (a: { cidr: string }, b: { cidr: string }) => a.cidr.localeCompare(b.cidr);
    expect([...fast].sort(byCidr)).toEqual([...viaModel].sort(byCidr));
    expect(new Set(fast.map((e) => e.cidr))).toEqual(new Set(lines.map((l) => parseCidr(l)).map((c) => `${[...c.bytes].join('.')}/${c.prefixLength}`)));
  });
});

describe('diffImages / imageDigest / snapshots', () => {
  const a = imageFromEntries([{ cidr: '10.0.0.1' }, { cidr: '10.0.0.2' }, { cidr: '10.0.0.0/8' }, { cidr: '2001:db8::/32' }, { cidr: '2001:db8::1' }]);
  const b = imageFromEntries([{ cidr: '10.0.0.2', expiresAt: 9 }, { cidr: '10.0.0.3' }, { cidr: '10.0.0.0/8' }, { cidr: '2001:db8::1' }, { cidr: '2001:db9::/32' }]);

  it('finds adds, value changes and deletes per map', () => {
    const diff = diffImages(a, b);
    expect(diffSize(diff)).toEqual({ upserts: 3, added: 2, changed: 1, deletes: 2 });
    expect(imageEntries({ ...emptyImage(), hostV4: diff.hostV4.upsert })).toEqual([{ cidr: '10.0.0.2/32', expiresAt: 9 }, { cidr: '10.0.0.3/32' }]);
    expect(diff.hostV4.deleteCount).toBe(1);
    expect(diffSize(diffImages(b, b))).toEqual({ upserts: 0, added: 0, changed: 0, deletes: 0 });
    expect(diffSize(diffImages(emptyImage(), b)).added).toBe(5);
  });

  it('gives equal digests for the same entries in any order, different ones for any change', () => {
    const reversed = new ImageBuilder();
    for (const e of imageEntries(a).reverse()) reversed.add(parseCidr(e.cidr), e.expiresAt ?? 0, e.ruleId ?? 0);
    expect(imageDigest(reversed.build())).toBe(imageDigest(a));
    expect(imageDigest(b)).not.toBe(imageDigest(a));
    const oneValue = imageFromEntries([...imageEntries(a).slice(1), { cidr: '10.0.0.1', ruleId: 1 }]);
    expect(imageDigest(oneValue)).not.toBe(imageDigest(a));
  });

  it('round-trips through the snapshot format and refuses a damaged one', () => {
    const bytes = serializeImage(b);
    expect(imageEntries(deserializeImage(bytes))).toEqual(imageEntries(b));
    expect(() => deserializeImage(bytes.subarray(0, bytes.length - 3))).toThrow(/truncated/);
    expect(() => deserializeImage(Buffer.from('10.0.0.1\n'))).toThrow(/bad magic/);
  });

  it('places hosts into the tries for maps without host maps', () => {
    const placed = hostsIntoTries(a);
    expect([placed.hostV4.count, placed.hostV6.count, placed.lpmV4.count, placed.lpmV6.count]).toEqual([0, 0, 3, 2]);
    expect(imageEntries(placed).map((e) => e.cidr).sort()).toEqual(imageEntries(a).map((e) => e.cidr).sort());
  });

  it('indexes u32 keys across growth', () => {
    const index = new U32Index(4);
    for (let i = 0; i < 5000; i++) expect(index.setIfAbsent((i * 2654435761) >>> 0, i)).toBe(i);
    expect(index.setIfAbsent(2654435761 >>> 0, 99)).toBe(1);
    expect(index.get((4999 * 2654435761) >>> 0)).toBe(4999);
    expect(index.get(12345)).toBeUndefined();
  });

  it('U32Index keeps keys whose low bits are all zero (prefix addresses) apart', () => {
    // The slot comes from the hash's high bits; low bits of key*odd would put all of these in one run.
    const index = new U32Index(4);
    for (let i = 0; i < 20000; i++) expect(index.setIfAbsent(((i + 1) << 16) >>> 0, i)).toBe(i);
    for (let i = 0; i < 20000; i++) expect(index.get(((i + 1) << 16) >>> 0)).toBe(i);
    expect(index.get(0)).toBeUndefined();
  });
});

describe('datapath codecs', () => {
  it('encodes zone keys and verdicts at the layout offsets and checks ranges', () => {
    const key = encodeZonePolicyKey({ srcZone: 3, dstZone: 255, protocol: 6, dport: 443 });
    expect(key.length).toBe(DATAPATH_LAYOUTS.fos1_zone_policy_key.size);
    expect([key[0], key[1], key[2], key.readUInt16LE(4)]).toEqual([3, 255, 6, 443]);
    expect(() => encodeZonePolicyKey({ srcZone: 3, dstZone: 1, protocol: 6, dport: 70000 })).toThrow(new DatapathCodecError('dport must be an integer 0–65535, got 70000'));
    expect(decodeZoneVerdict(encodeZoneVerdict({ action: 'log', ruleId: 77 }))).toEqual({ action: 'log', ruleId: 77 });
  });

  it('decodes a drop event', () => {
    const o = DATAPATH_LAYOUTS.fos1_drop_event.offsets;
    const buf = Buffer.alloc(DATAPATH_LAYOUTS.fos1_drop_event.size);
    buf.writeBigUInt64LE(123n, o.timestamp_ns);
    buf.writeUInt32LE(4, o.ifindex);
    buf.writeUInt32LE(9, o.rule_id);
    buf[o.family] = 4;
    buf[o.protocol] = 17;
    buf[o.hook] = 2;
    buf[o.reason] = 1;
    buf[o.action] = 1;
    buf.writeUInt16LE(5353, o.sport);
    buf.writeUInt16LE(53, o.dport);
    buf.set([192, 0, 2, 1], o.saddr);
    buf.set([198, 51, 100, 2], o.daddr);
    buf.set([192, 0, 2, 1], o.match_addr);
    buf[o.match_prefixlen] = 32;
    buf.writeUInt32LE(60, o.pkt_len);
    expect(decodeDropEvent(buf)).toEqual({
      timestampNs: 123n,
      ifindex: 4,
      ruleId: 9,
      family: 4,
      protocol: 17,
      hook: 'xdp',
      reason: 'blocklist-host',
      srcZone: 0,
      dstZone: 0,
      action: 'deny',
      source: '192.0.2.1',
      destination: '198.51.100.2',
      sport: 5353,
      dport: 53,
      matched: '192.0.2.1/32',
      packetLength: 60,
    });
    buf[o.reason] = 42;
    expect(() => decodeDropEvent(buf)).toThrow(/unknown reason 42/);
  });
});

describe('blocklistRefSchema', () => {
  it('accepts a content hash or an absolute file, and names the field and rule otherwise', () => {
    expect(blocklistRefSchema.parse({ sha256: 'a'.repeat(64) })).toEqual({ sha256: 'a'.repeat(64) });
    expect(blocklistRefSchema.parse({ file: '/var/lib/fos1/feed.txt' })).toEqual({ file: '/var/lib/fos1/feed.txt' });
    const bad = blocklistRefSchema.safeParse({ file: '/var/../etc/shadow' });
    expect(bad.success).toBe(false);
    expect(JSON.stringify(bad.error?.issues)).toContain('must not contain \\"..\\" segments');
    expect(blocklistRefSchema.safeParse({ sha256: 'ABC' }).success).toBe(false);
    expect(blocklistRefSchema.safeParse({ sha256: 'a'.repeat(64), extra: 1 }).success).toBe(false);
  });
});
