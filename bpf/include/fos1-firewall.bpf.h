/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The firewall shared by fos1's TC and XDP programs: maps, packet parsing and
 * the verdict. Included by exactly one .bpf.c per attach point; the maps are
 * pinned by the loader (bpf/loader.ts), so every attach point of a node works
 * on the same maps, and the control plane writes them through the pins.
 *
 * Order of checks: blocklist (host hash first, then LPM trie; source address,
 * then destination), then the source's rate limit (TC ingress), and only then the
 * zone policy, so a blocked address is dropped regardless of zone rules.
 *
 * Stateful between zones: a connection the zone policy allowed is tracked in the
 * conntrack LRU, and its later packets (replies included) pass without a zone
 * lookup. The blocklist and rate limits still apply to every packet.
 *
 * NAT: netfilter translates between fos1's hooks (TC ingress runs before prerouting's
 * DNAT, TC egress after postrouting's SNAT), so each hook sees the tuple as it is on
 * its own link. A forwarded connection is therefore tracked under the tuple of each
 * link it crosses: the ingress link's (made at TC ingress) and, when netfilter changed
 * it, the egress link's (made at TC egress, judged there on the real zone pair and the
 * post-DNAT port). A reply arrives on the egress link in that translated form and
 * finds the entry. Rules per kind of NAT: bpf/README.md, "Through NAT".
 */
#ifndef FOS1_FIREWALL_BPF_H
#define FOS1_FIREWALL_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "fos1-blocklist.h"
#include "fos1-datapath.h"
#include "fos1-ratelimit.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_ICMPV6_ 58

/* max_entries below are defaults; the loader sets the real sizes before load. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct fos1_lpm_v4_key);
	__type(value, struct fos1_block_value);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} blocklist_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct fos1_lpm_v6_key);
	__type(value, struct fos1_block_value);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} blocklist_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct fos1_host_v4_key);
	__type(value, struct fos1_block_value);
	__uint(max_entries, 65536);
} blockhost_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct fos1_host_v6_key);
	__type(value, struct fos1_block_value);
	__uint(max_entries, 65536);
} blockhost_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct fos1_host_v4_key);
	__type(value, struct fos1_ratelimit_value);
	__uint(max_entries, 16384);
} ratelimit_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct fos1_host_v6_key);
	__type(value, struct fos1_ratelimit_value);
	__uint(max_entries, 16384);
} ratelimit_v6 SEC(".maps");

/* GCRA state per rate-limited source: its theoretical arrival time (ns, CLOCK_MONOTONIC).
 * LRU, so sources whose limit was lifted age out without the control plane's help. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct fos1_entry_key);
	__type(value, __u64);
	__uint(max_entries, 32768);
} ratelimit_tat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32); /* ifindex */
	__type(value, __u32); /* zone id 1..254 */
	__uint(max_entries, 1024);
} zone_ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct fos1_zone_policy_key);
	__type(value, struct fos1_zone_verdict);
	__uint(max_entries, 16384);
} zone_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32); /* source zone */
	__type(value, struct fos1_zone_verdict);
	__uint(max_entries, FOS1_MAX_ZONES);
} zone_default SEC(".maps");

/* Connections the zone policy allowed (see fos1-datapath.h). LRU: when full, the least
 * recently used connection is forgotten; its next packet goes through the policy again. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct fos1_ct_key);
	__type(value, struct fos1_ct_value);
	__uint(max_entries, FOS1_CONNTRACK_MAX);
} conntrack SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct fos1_settings);
	__uint(max_entries, 1);
} settings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32); /* rule id */
	__type(value, struct fos1_counter);
	__uint(max_entries, FOS1_MAX_RULES);
} rule_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__type(key, struct fos1_entry_key);
	__type(value, struct fos1_counter);
	__uint(max_entries, FOS1_ENTRY_STATS_MAX);
} entry_stats SEC(".maps");

/*
 * Dropped packets per reason (FOS1_REASON_*), all rules together: what a rollout's
 * datapath gate compares against the baseline taken before a wave. rule_stats cannot
 * answer it (rule id 0 is not counted, and one rule id serves several reasons).
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32); /* FOS1_REASON_* */
	__type(value, struct fos1_counter);
	__uint(max_entries, FOS1_DROP_STATS_SLOTS);
} drop_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, FOS1_EVENTS_BYTES);
} drop_events SEC(".maps");


/*
 * The last event per CPU. Events are built here and copied to the ring buffer,
 * so the most recent drop stays readable even when the ring buffer overflowed
 * or nobody was consuming it (and the event layout is in the object's BTF).
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct fos1_drop_event);
	__uint(max_entries, 1);
} last_drop SEC(".maps");

/* What the parser extracted from one packet. */
struct fos1_pkt {
	__u8 family;
	__u8 protocol;
	__u16 sport;
	__u16 dport;
	__u16 icmp_type; /* ICMP/ICMPv6 type (neighbour discovery is spared from zone policy) */
	__u16 icmp_id;   /* ICMP/ICMPv6 echo identifier */
	__u8 tcp_flags;  /* TCP header byte 13 (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10) */
	__u8 has_l4;     /* the TCP/UDP/ICMP header was in the packet (not a later fragment) */
	__u8 saddr[16];
	__u8 daddr[16];
};

/* Parses Ethernet + IPv4/IPv6 + TCP/UDP ports. Returns 0 for anything else (passed). */
static __always_inline int fos1_parse(void *data, void *data_end, struct fos1_pkt *p)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return 0;
	__u16 proto = bpf_ntohs(eth->h_proto);
	void *l4;
	if (proto == ETH_P_IP) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > data_end)
			return 0;
		p->family = 4;
		p->protocol = ip->protocol;
		__builtin_memcpy(p->saddr, &ip->saddr, 4);
		__builtin_memcpy(p->daddr, &ip->daddr, 4);
		/* Ports only in the first fragment. */
		if (ip->frag_off & bpf_htons(0x1fff))
			return 1;
		l4 = (void *)ip + ip->ihl * 4;
	} else if (proto == ETH_P_IPV6) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end)
			return 0;
		p->family = 6;
		p->protocol = ip6->nexthdr; /* extension headers are not walked */
		__builtin_memcpy(p->saddr, &ip6->saddr, 16);
		__builtin_memcpy(p->daddr, &ip6->daddr, 16);
		l4 = ip6 + 1;
	} else {
		return 0;
	}
	if (p->protocol == IPPROTO_TCP || p->protocol == IPPROTO_UDP) {
		struct udphdr *ports = l4; /* sport/dport sit at the same offsets in TCP */
		if ((void *)(ports + 1) <= data_end) {
			p->sport = bpf_ntohs(ports->source);
			p->dport = bpf_ntohs(ports->dest);
			p->has_l4 = p->protocol == IPPROTO_UDP;
		}
		if (p->protocol == IPPROTO_TCP) {
			__u8 *tcp = l4;
			if ((void *)(tcp + 20) <= data_end) {
				p->tcp_flags = tcp[13];
				p->has_l4 = 1;
			}
		}
	} else if (p->protocol == IPPROTO_ICMPV6_ || p->protocol == IPPROTO_ICMP) {
		__u8 *icmp = l4; /* type, code, checksum, then (echo) identifier and sequence */
		if ((void *)(icmp + 1) <= data_end)
			p->icmp_type = icmp[0];
		if ((void *)(icmp + 8) <= data_end) {
			p->icmp_id = ((__u16)icmp[4] << 8) | icmp[5];
			p->has_l4 = 1;
		}
	}
	return 1;
}

static __always_inline void fos1_count(struct fos1_counter *c, __u32 len)
{
	if (c) {
		/* Per-CPU value: no other CPU writes this copy, plain adds are safe. */
		c->packets += 1;
		c->bytes += len;
	}
}

static __always_inline void fos1_count_rule(__u32 rule_id, __u32 len)
{
	if (rule_id == 0)
		return;
	fos1_count(bpf_map_lookup_elem(&rule_stats, &rule_id), len);
}

static __always_inline void fos1_count_drop(__u32 reason, __u32 len)
{
	fos1_count(bpf_map_lookup_elem(&drop_stats, &reason), len);
}

static __always_inline void fos1_count_entry(__u8 family, __u8 prefixlen, const __u8 *addr, __u32 len)
{
	struct fos1_entry_key k = {};
	k.family = family;
	k.prefixlen = prefixlen;
	__builtin_memcpy(k.addr, addr, 16);
	struct fos1_counter *c = bpf_map_lookup_elem(&entry_stats, &k);
	if (c) {
		fos1_count(c, len);
	} else {
		struct fos1_counter first = { .packets = 1, .bytes = len };
		bpf_map_update_elem(&entry_stats, &k, &first, BPF_NOEXIST);
	}
}

/* Wall-clock seconds for comparing with expires_at. TAI is ahead of UTC by the
 * leap seconds (37 s since 2017); a block lifting 37 s late is acceptable. */
static __always_inline __u64 fos1_now_unix(void)
{
	return bpf_ktime_get_tai_ns() / 1000000000ULL - 37;
}

/* A blocklist hit: which entry, and its value. */
struct fos1_match {
	__u8 prefixlen;
	__u8 reason;
	__u32 rule_id;
	__u8 addr[16];
};

/*
 * Which prefix an LPM hit came from: the kernel returns the value, not the key.
 * A lookup capped at prefixlen L returns the longest match no longer than L, so
 * the matched entry's length is the smallest L whose lookup still returns the
 * same value; a binary search finds it in log2(max) extra lookups, on the drop
 * path only. Fills m->prefixlen and m->addr (the prefix, host bits cleared).
 *
 * A global function on purpose: the verifier checks it once, on its own, and the
 * caller sees an opaque return. Inlined, every branch of the search (and of the
 * masking) multiplied the paths through the rest of the program past the
 * verifier's one-million-instruction budget.
 */
/* Clears the host bits of m->addr beyond m->prefixlen. Global for the same reason
 * as fos1_trie_match: verified once for any length, not once per search outcome. */
__noinline int fos1_mask_prefix(struct fos1_match *m)
{
	if (!m)
		return 0;
	int len = m->prefixlen;
	for (int i = 0; i < 16; i++) {
		int bits = len - i * 8;
		if (bits <= 0)
			m->addr[i] = 0;
		else if (bits < 8)
			m->addr[i] &= (__u8)(0xff << (8 - bits));
	}
	return 1;
}

__noinline int fos1_trie_match(struct fos1_match *m, __u8 family)
{
	if (!m)
		return 0;
	__u32 max = family == 4 ? 32 : 128;
	struct fos1_lpm_v6_key k = {}; /* also holds a v4 key: prefixlen, then 4 bytes */
	__builtin_memcpy(k.addr, m->addr, 16);
	k.prefixlen = max;
	void *trie = family == 4 ? (void *)&blocklist_v4 : (void *)&blocklist_v6;
	void *v = bpf_map_lookup_elem(trie, &k);
	if (!v)
		return 0;
	__u32 lo = 0, hi = max;
	for (int i = 0; i < 8 && lo < hi; i++) {
		__u32 mid = (lo + hi) / 2;
		k.prefixlen = mid;
		if (bpf_map_lookup_elem(trie, &k) == v)
			hi = mid;
		else
			lo = mid + 1;
	}
	m->prefixlen = hi;
	return fos1_mask_prefix(m);
}

/*
 * Looks `addr` up in the host map, then the trie. Returns 1 on an unexpired hit.
 * A real BPF-to-BPF call rather than inlined: called twice (source, destination),
 * and inlining both copies of its keys overflows the 512-byte stack.
 */
static __always_inline int fos1_blocked(__u8 family, const __u8 *addr, struct fos1_match *m)
{
	struct fos1_block_value *v;
	__builtin_memset(m->addr, 0, 16);
	if (family == 4) {
		struct fos1_host_v4_key hk;
		__builtin_memcpy(hk.addr, addr, 4);
		v = bpf_map_lookup_elem(&blockhost_v4, &hk);
		if (v) {
			m->reason = FOS1_REASON_BLOCK_HOST;
			m->prefixlen = 32;
			__builtin_memcpy(m->addr, addr, 4);
		} else {
			struct fos1_lpm_v4_key lk = { .prefixlen = 32 };
			__builtin_memcpy(lk.addr, addr, 4);
			v = bpf_map_lookup_elem(&blocklist_v4, &lk);
			if (!v)
				return 0;
			m->reason = FOS1_REASON_BLOCK_PREFIX;
			__builtin_memcpy(m->addr, addr, 4);
			fos1_trie_match(m, 4);
		}
	} else {
		struct fos1_host_v6_key hk;
		__builtin_memcpy(hk.addr, addr, 16);
		v = bpf_map_lookup_elem(&blockhost_v6, &hk);
		if (v) {
			m->reason = FOS1_REASON_BLOCK_HOST;
			m->prefixlen = 128;
			__builtin_memcpy(m->addr, addr, 16);
		} else {
			struct fos1_lpm_v6_key lk = { .prefixlen = 128 };
			__builtin_memcpy(lk.addr, addr, 16);
			v = bpf_map_lookup_elem(&blocklist_v6, &lk);
			if (!v)
				return 0;
			m->reason = FOS1_REASON_BLOCK_PREFIX;
			__builtin_memcpy(m->addr, addr, 16);
			fos1_trie_match(m, 6);
		}
	}
	if (v->expires_at != 0 && v->expires_at <= fos1_now_unix())
		return 0;
	m->rule_id = v->rule_id;
	return 1;
}

/*
 * Whether the source `addr` is over its rate limit (GCRA, see fos1-ratelimit.h).
 * Returns 1 when the packet must be dropped, filling `m` with the limited host.
 *
 * Concurrency: on the busy path TAT advances with an atomic add, so no conforming
 * packet is lost; after an idle period it is reset with a plain store, and two CPUs
 * racing there can each let one packet through: an overshoot of at most one packet
 * per CPU per idle period, which a rate limit for abusive sources can afford.
 */
static __always_inline int fos1_rate_limited(__u8 family, const __u8 *addr, struct fos1_match *m)
{
	struct fos1_ratelimit_value *cfg;
	struct fos1_entry_key k = {};
	k.family = family;
	if (family == 4) {
		struct fos1_host_v4_key hk;
		__builtin_memcpy(hk.addr, addr, 4);
		cfg = bpf_map_lookup_elem(&ratelimit_v4, &hk);
		k.prefixlen = 32;
		__builtin_memcpy(k.addr, addr, 4);
	} else {
		struct fos1_host_v6_key hk;
		__builtin_memcpy(hk.addr, addr, 16);
		cfg = bpf_map_lookup_elem(&ratelimit_v6, &hk);
		k.prefixlen = 128;
		__builtin_memcpy(k.addr, addr, 16);
	}
	if (!cfg)
		return 0;
	if (cfg->expires_at != 0 && cfg->expires_at <= fos1_now_unix())
		return 0;
	__u64 interval = 1000000000ULL / (cfg->pps ? cfg->pps : 1);
	__u64 tolerance = interval * (cfg->burst ? cfg->burst - 1 : 0);
	__u64 now = bpf_ktime_get_ns();
	__u64 *tat = bpf_map_lookup_elem(&ratelimit_tat, &k);
	if (!tat) {
		__u64 next = now + interval;
		bpf_map_update_elem(&ratelimit_tat, &k, &next, BPF_ANY);
		return 0;
	}
	__u64 at = *tat;
	if (at <= now) {
		*tat = now + interval;
		return 0;
	}
	if (at - now > tolerance) {
		m->reason = FOS1_REASON_RATE_LIMIT;
		m->prefixlen = k.prefixlen;
		__builtin_memcpy(m->addr, k.addr, 16);
		m->rule_id = cfg->rule_id;
		return 1;
	}
	__sync_fetch_and_add(tat, interval);
	return 0;
}

static __always_inline void fos1_emit(const struct fos1_pkt *p, __u32 ifindex, __u8 hook, __u8 reason, __u8 action,
				      __u8 src_zone, __u8 dst_zone, __u32 rule_id, const struct fos1_match *m, __u32 len)
{
	__u32 zero = 0;
	struct fos1_drop_event *e = bpf_map_lookup_elem(&last_drop, &zero);
	if (!e)
		return;
	e->timestamp_ns = bpf_ktime_get_ns();
	e->ifindex = ifindex;
	e->rule_id = rule_id;
	e->family = p->family;
	e->protocol = p->protocol;
	e->hook = hook;
	e->reason = reason;
	e->src_zone = src_zone;
	e->dst_zone = dst_zone;
	e->action = action;
	e->match_prefixlen = m ? m->prefixlen : 0;
	e->sport = p->sport;
	e->dport = p->dport;
	__builtin_memcpy(e->saddr, p->saddr, 16);
	__builtin_memcpy(e->daddr, p->daddr, 16);
	if (m)
		__builtin_memcpy(e->match_addr, m->addr, 16);
	else
		__builtin_memset(e->match_addr, 0, 16);
	e->pkt_len = len;
	/* Ring full: the counters still count and last_drop holds it; only the stream loses it. */
	bpf_ringbuf_output(&drop_events, e, sizeof(*e), 0);
}

static __always_inline __u8 fos1_zone_of(__u32 ifindex)
{
	__u32 *z = bpf_map_lookup_elem(&zone_ifaces, &ifindex);
	return z ? (__u8)*z : FOS1_ZONE_UNZONED;
}

/*
 * Destination zone of a packet arriving on `ifindex`: the zone of the egress
 * interface the FIB picks, or the host zone when the packet is for this node.
 * A node that does not forward (FWD_DISABLED) only ever delivers locally.
 */
static __always_inline __u8 fos1_dst_zone(void *ctx, const struct fos1_pkt *p, __u32 ifindex)
{
	struct bpf_fib_lookup fib = {};
	fib.ifindex = ifindex;
	if (p->family == 4) {
		fib.family = AF_INET;
		__builtin_memcpy(&fib.ipv4_src, p->saddr, 4);
		__builtin_memcpy(&fib.ipv4_dst, p->daddr, 4);
	} else {
		fib.family = AF_INET6;
		__builtin_memcpy(fib.ipv6_src, p->saddr, 16);
		__builtin_memcpy(fib.ipv6_dst, p->daddr, 16);
	}
	long rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return fos1_zone_of(fib.ifindex);
	if (rc == BPF_FIB_LKUP_RET_NOT_FWDED || rc == BPF_FIB_LKUP_RET_FWD_DISABLED)
		return FOS1_ZONE_HOST;
	return FOS1_ZONE_UNZONED; /* unroutable: the stack drops it anyway */
}

/* ------------------------------------------------------------------------------------
 * Connection tracking (state machine: bpf/README.md). */

#define FOS1_TCP_FIN 0x01
#define FOS1_TCP_SYN 0x02
#define FOS1_TCP_RST 0x04
#define FOS1_TCP_ACK 0x10

static __always_inline int fos1_conntrack_on(void)
{
	__u32 zero = 0;
	struct fos1_settings *s = bpf_map_lookup_elem(&settings, &zero);
	return !(s && (s->flags & FOS1_SETTING_NO_CONNTRACK));
}

/* ICMP echo as a connection: request opens it, reply belongs to it. */
static __always_inline int fos1_is_echo(const struct fos1_pkt *p, int *request)
{
	if (p->protocol == IPPROTO_ICMP) {
		*request = p->icmp_type == 8;
		return p->icmp_type == 8 || p->icmp_type == 0;
	}
	if (p->protocol == IPPROTO_ICMPV6_) {
		*request = p->icmp_type == 128;
		return p->icmp_type == 128 || p->icmp_type == 129;
	}
	return 0;
}

/*
 * Fills the canonical key of p's connection; returns 1 if p can be tracked (TCP, UDP,
 * ICMP echo, headers present), with *from_lo = 1 when p's source is the key's lo end.
 */
static __always_inline int fos1_ct_key_of(const struct fos1_pkt *p, struct fos1_ct_key *k, int *from_lo)
{
	__u16 sport = p->sport, dport = p->dport;
	int request = 0;
	if (!p->has_l4)
		return 0;
	if (p->protocol != IPPROTO_TCP && p->protocol != IPPROTO_UDP) {
		if (!fos1_is_echo(p, &request))
			return 0;
		sport = dport = p->icmp_id;
	}
	/* Compare (saddr, sport) with (daddr, dport): the smaller one goes first. */
	int cmp = 0;
	for (int i = 0; i < 16; i++) {
		if (cmp == 0 && p->saddr[i] != p->daddr[i])
			cmp = p->saddr[i] < p->daddr[i] ? -1 : 1;
	}
	if (cmp == 0)
		cmp = sport < dport ? -1 : (sport > dport ? 1 : 0);
	*from_lo = cmp <= 0;
	k->family = p->family;
	k->protocol = p->protocol;
	if (*from_lo) {
		__builtin_memcpy(k->addr_lo, p->saddr, 16);
		__builtin_memcpy(k->addr_hi, p->daddr, 16);
		k->port_lo = sport;
		k->port_hi = dport;
	} else {
		__builtin_memcpy(k->addr_lo, p->daddr, 16);
		__builtin_memcpy(k->addr_hi, p->saddr, 16);
		k->port_lo = dport;
		k->port_hi = sport;
	}
	return 1;
}

static __always_inline __u64 fos1_ct_timeout_ns(__u8 state)
{
	__u64 s = state == FOS1_CT_SYN_SENT      ? FOS1_CT_TIMEOUT_SYN
		  : state == FOS1_CT_ESTABLISHED ? FOS1_CT_TIMEOUT_ESTABLISHED
		  : state == FOS1_CT_CLOSING     ? FOS1_CT_TIMEOUT_CLOSING
						 : FOS1_CT_TIMEOUT_OPEN;
	return s * 1000000000ULL;
}

/*
 * A packet of a tracked connection: 1 = it passes (and the entry advanced), 0 = the
 * policy decides (no entry, an expired one, or a SYN that opens a new connection).
 * Plain stores: two CPUs racing on one entry can lose a timestamp or a FIN bit, which
 * the next packet repairs; no packet is dropped for it.
 */
static __always_inline int fos1_ct_pass(const struct fos1_ct_key *k, int from_lo, const struct fos1_pkt *p)
{
	struct fos1_ct_value *ct = bpf_map_lookup_elem(&conntrack, k);
	if (!ct)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	if (now - ct->last_seen_ns > fos1_ct_timeout_ns(ct->state))
		return 0;
	int original = (from_lo != 0) == (ct->initiator_lo != 0);
	if (p->protocol == IPPROTO_TCP) {
		__u8 f = p->tcp_flags;
		int syn_only = (f & (FOS1_TCP_SYN | FOS1_TCP_ACK)) == FOS1_TCP_SYN;
		/* A new SYN on a closing connection (port reuse), or a bare SYN from the
		 * responder's side, is a new connection: the policy decides. */
		if (syn_only && (ct->state == FOS1_CT_CLOSING || !original))
			return 0;
		if (f & FOS1_TCP_RST) {
			ct->state = FOS1_CT_CLOSING;
		} else if (ct->state != FOS1_CT_CLOSING) {
			if (!original && ct->state == FOS1_CT_SYN_SENT)
				ct->state = FOS1_CT_ESTABLISHED;
			if (f & FOS1_TCP_FIN)
				ct->fin |= original ? FOS1_CT_FIN_INITIATOR : FOS1_CT_FIN_RESPONDER;
			if (ct->fin == (FOS1_CT_FIN_INITIATOR | FOS1_CT_FIN_RESPONDER))
				ct->state = FOS1_CT_CLOSING;
		}
	} else {
		int request = 0;
		/* An echo request in the reply direction is the other side pinging: policy. */
		if (fos1_is_echo(p, &request) && request && !original)
			return 0;
	}
	ct->last_seen_ns = now;
	return 1;
}

/* Tracks a connection the zone policy just allowed (an RST or an echo reply opens none). */
static __always_inline void fos1_ct_create(const struct fos1_ct_key *k, int from_lo, const struct fos1_pkt *p,
					   __u8 src_zone, __u8 dst_zone, __u32 rule_id)
{
	struct fos1_ct_value v = {};
	int request = 0;
	if (p->protocol == IPPROTO_TCP) {
		if (p->tcp_flags & FOS1_TCP_RST)
			return;
		/* A bare SYN opens; anything else is a connection picked up mid-stream
		 * (after an eviction or a restart): established. */
		v.state = (p->tcp_flags & (FOS1_TCP_SYN | FOS1_TCP_ACK)) == FOS1_TCP_SYN ? FOS1_CT_SYN_SENT : FOS1_CT_ESTABLISHED;
	} else {
		if (fos1_is_echo(p, &request) && !request)
			return;
		v.state = FOS1_CT_OPEN;
	}
	v.last_seen_ns = v.created_ns = bpf_ktime_get_ns();
	v.rule_id = rule_id;
	v.initiator_lo = from_lo != 0;
	v.src_zone = src_zone;
	v.dst_zone = dst_zone;
	bpf_map_update_elem(&conntrack, k, &v, BPF_ANY);
}

/* Zone verdict: exact rule, any port, any protocol, then the source zone's default. */
static __always_inline struct fos1_zone_verdict *fos1_zone_lookup(__u8 sz, __u8 dz, const struct fos1_pkt *p, __u8 *reason)
{
	struct fos1_zone_policy_key k = { .src_zone = sz, .dst_zone = dz, .protocol = p->protocol, .dport = p->dport };
	struct fos1_zone_verdict *v = bpf_map_lookup_elem(&zone_policy, &k);
	*reason = FOS1_REASON_ZONE_RULE;
	if (v)
		return v;
	k.dport = 0;
	v = bpf_map_lookup_elem(&zone_policy, &k);
	if (v)
		return v;
	k.protocol = 0;
	v = bpf_map_lookup_elem(&zone_policy, &k);
	if (v)
		return v;
	__u32 idx = sz;
	*reason = FOS1_REASON_ZONE_DEFAULT;
	return bpf_map_lookup_elem(&zone_default, &idx);
}

/*
 * The verdict for one packet: 1 = pass, 0 = drop. `src_zone` is the zone the
 * packet comes from, or FOS1_ZONE_UNZONED to skip the zone policy; when it is
 * set, `dst_zone` (if 0) is resolved with a FIB lookup.
 *
 * `forwarded` (TC egress of a packet received on a zoned interface): the packet
 * already passed the zone policy at ingress, under the tuple it arrived with. Here
 * it is judged again only when it is a trackable packet whose tuple has no entry,
 * which for a connection that passed ingress means netfilter translated it (NAT) on
 * the way, or the egress-side entry was evicted; untracked protocols, stateless mode
 * and non-NAT connections (whose ingress entry has this very tuple) pass on.
 */
static __always_inline int fos1_verdict(void *ctx, void *data, void *data_end, __u32 ifindex, __u8 hook,
					__u8 src_zone, __u8 dst_zone, int forwarded, __u32 len)
{
	struct fos1_pkt p = {};
	if (!fos1_parse(data, data_end, &p))
		return 1;

	struct fos1_match m = {};
	if (fos1_blocked(p.family, p.saddr, &m) || fos1_blocked(p.family, p.daddr, &m)) {
		fos1_count_entry(p.family, m.prefixlen, m.addr, len);
		fos1_count_rule(m.rule_id, len);
		fos1_count_drop(m.reason, len);
		fos1_emit(&p, ifindex, hook, m.reason, FOS1_ACTION_DENY, src_zone, dst_zone, m.rule_id, &m, len);
		return 0;
	}
	/* Rate limits apply where a packet enters, once: at TC ingress only (not at XDP
	 * as well, which would count a packet twice, nor at egress of forwarded traffic). */
	if (hook == FOS1_HOOK_TC_INGRESS && fos1_rate_limited(p.family, p.saddr, &m)) {
		fos1_count_entry(p.family, m.prefixlen, m.addr, len);
		fos1_count_rule(m.rule_id, len);
		fos1_count_drop(m.reason, len);
		fos1_emit(&p, ifindex, hook, m.reason, FOS1_ACTION_DENY, src_zone, dst_zone, m.rule_id, &m, len);
		return 0;
	}

	if (src_zone == FOS1_ZONE_UNZONED)
		return 1;
	/* Neighbour discovery keeps IPv6 links alive; zones never filter it. */
	if (p.protocol == IPPROTO_ICMPV6_ && p.icmp_type >= 133 && p.icmp_type <= 137)
		return 1;
	if (dst_zone == FOS1_ZONE_UNZONED)
		dst_zone = fos1_dst_zone(ctx, &p, ifindex);
	if (dst_zone == FOS1_ZONE_UNZONED)
		return 1;
	/* A tracked connection passes in both directions without a zone lookup. */
	struct fos1_ct_key ck = {};
	int from_lo = 0;
	int track = fos1_conntrack_on() && fos1_ct_key_of(&p, &ck, &from_lo);
	if (track && fos1_ct_pass(&ck, from_lo, &p))
		return 1;
	if (forwarded && !track)
		return 1;
	__u8 reason;
	struct fos1_zone_verdict *v = fos1_zone_lookup(src_zone, dst_zone, &p, &reason);
	if (!v) {
		if (track)
			fos1_ct_create(&ck, from_lo, &p, src_zone, dst_zone, 0);
		return 1;
	}
	fos1_count_rule(v->rule_id, len);
	if (v->action != FOS1_ACTION_DENY && track)
		fos1_ct_create(&ck, from_lo, &p, src_zone, dst_zone, v->rule_id);
	if (v->action == FOS1_ACTION_ALLOW)
		return 1;
	fos1_emit(&p, ifindex, hook, reason, (__u8)v->action, src_zone, dst_zone, v->rule_id, 0, len);
	if (v->action != FOS1_ACTION_DENY)
		return 1;
	fos1_count_drop(reason, len);
	return 0;
}

#endif /* FOS1_FIREWALL_BPF_H */
