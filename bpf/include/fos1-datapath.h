/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fos1 datapath: layouts shared by the BPF programs (bpf/fos1-*.bpf.c files) and the
 * TypeScript codecs (bpf/datapath-codec.ts). Every struct here is checked
 * member by member against the BTF of the compiled objects by
 * test/unit/bpf-btf-layout.test.ts, so a change on one side only fails a test
 * instead of making the kernel and the control plane disagree silently.
 *
 * Zones: an interface belongs to at most one zone (map zone_ifaces, ifindex ->
 * zone id 1..254). Zone 0 means "not zoned": no zone policy applies to traffic
 * that enters through such an interface. Zone 255 is the router itself
 * (traffic delivered locally, or sent by a local process).
 */
#ifndef FOS1_DATAPATH_H
#define FOS1_DATAPATH_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define FOS1_ZONE_UNZONED 0
#define FOS1_ZONE_HOST 255

/* Verdicts of the zone policy (struct fos1_zone_verdict.action). */
#define FOS1_ACTION_ALLOW 0
#define FOS1_ACTION_DENY 1
#define FOS1_ACTION_LOG 2 /* allow, and report on the ring buffer */

/* Why an event was emitted (struct fos1_drop_event.reason). */
#define FOS1_REASON_BLOCK_HOST 1    /* single-host blocklist entry */
#define FOS1_REASON_BLOCK_PREFIX 2  /* prefix blocklist entry */
#define FOS1_REASON_ZONE_RULE 3     /* an explicit zone policy rule */
#define FOS1_REASON_ZONE_DEFAULT 4  /* the source zone's default */
#define FOS1_REASON_RATE_LIMIT 5    /* the source is over its rate limit */

/* Where a program runs (struct fos1_drop_event.hook). */
#define FOS1_HOOK_TC_INGRESS 0
#define FOS1_HOOK_TC_EGRESS 1
#define FOS1_HOOK_XDP 2

/* Sizes of the maps whose capacity is fixed at build time. */
#define FOS1_MAX_RULES 4096        /* rule ids 0..4095 in rule_stats */
#define FOS1_MAX_ZONES 256
#define FOS1_ENTRY_STATS_MAX 65536 /* LRU: the busiest blocklist entries */
#define FOS1_EVENTS_BYTES (256 * 1024)
#define FOS1_DROP_STATS_SLOTS 8    /* drop_stats: one slot per FOS1_REASON_* (0 unused) */
#define FOS1_CONNTRACK_MAX 65536   /* default size of the conntrack LRU (the loader sets the real one) */

/*
 * Zone policy key. protocol 0 means any protocol, dport 0 any port (lookups try
 * the exact key, then dport 0, then protocol 0, then the zone default).
 */
struct fos1_zone_policy_key {
	__u8 src_zone;
	__u8 dst_zone;
	__u8 protocol; /* IPPROTO_*, 0 = any */
	__u8 pad;      /* must be 0 */
	__u16 dport;   /* HOST byte order, 0 = any */
	__u16 pad2;    /* must be 0 */
};                     /* 8 bytes */

struct fos1_zone_verdict {
	__u32 action;  /* FOS1_ACTION_* */
	__u32 rule_id; /* counted in rule_stats, reported in events; 0 = none */
};                     /* 8 bytes */

/* Per-CPU counter value of rule_stats and entry_stats. */
struct fos1_counter {
	__u64 packets;
	__u64 bytes;
};                     /* 16 bytes */

/* Key of entry_stats: the blocklist entry that matched. */
struct fos1_entry_key {
	__u8 family;    /* 4 or 6 */
	__u8 prefixlen; /* 32/128 for host entries */
	__u8 pad[2];    /* 0 */
	__u8 addr[16];  /* network order; IPv4 uses the first 4 bytes */
};                      /* 20 bytes */

/* One record on the drop_events ring buffer. */
struct fos1_drop_event {
	__u64 timestamp_ns;   /* bpf_ktime_get_ns(), CLOCK_MONOTONIC */
	__u32 ifindex;        /* interface the hook runs on */
	__u32 rule_id;        /* rule (zone verdict or blocklist value) that matched */
	__u8 family;          /* 4 or 6 */
	__u8 protocol;        /* IPPROTO_* */
	__u8 hook;            /* FOS1_HOOK_* */
	__u8 reason;          /* FOS1_REASON_* */
	__u8 src_zone;
	__u8 dst_zone;
	__u8 action;          /* FOS1_ACTION_* that was taken */
	__u8 match_prefixlen; /* length of the blocklist entry that matched (0 for zone verdicts) */
	__u16 sport;          /* host byte order; 0 when not TCP/UDP */
	__u16 dport;
	__u8 saddr[16];       /* network order; IPv4 uses the first 4 bytes */
	__u8 daddr[16];
	__u8 match_addr[16];  /* the blocklist entry's prefix address (host bits zero) */
	__u32 pkt_len;
};                            /* 80 bytes (8-byte aligned) */

/*
 * Connection tracking (map conntrack, LRU hash): connections between zoned interfaces
 * that the zone policy allowed. A packet of a tracked connection, in either direction,
 * passes without a zone lookup, so the replies of a connection opened from zone A
 * reach A even when B's default is deny. Only TCP, UDP and ICMP/ICMPv6 echo are
 * tracked. The state machine and its limits are described in bpf/README.md.
 */
#define FOS1_CT_SYN_SENT 1    /* TCP: the initiator's SYN passed, no answer yet */
#define FOS1_CT_ESTABLISHED 2 /* TCP: the responder answered (or picked up mid-stream) */
#define FOS1_CT_CLOSING 3     /* TCP: FIN seen both ways, or an RST */
#define FOS1_CT_OPEN 4        /* UDP / ICMP echo: a flow, refreshed by every packet */

/* Idle timeouts (seconds since the last packet) per state. */
#define FOS1_CT_TIMEOUT_SYN 60
#define FOS1_CT_TIMEOUT_ESTABLISHED 21600
#define FOS1_CT_TIMEOUT_CLOSING 10
#define FOS1_CT_TIMEOUT_OPEN 60

/* struct fos1_ct_value.fin bits: who sent a FIN. */
#define FOS1_CT_FIN_INITIATOR 1
#define FOS1_CT_FIN_RESPONDER 2

/*
 * Conntrack key: the connection's two endpoints in a canonical order (the smaller
 * address, then port, first), so both directions of a connection find one entry.
 * ICMP echo uses its identifier as both ports.
 */
struct fos1_ct_key {
	__u8 addr_lo[16]; /* network order; IPv4 uses the first 4 bytes */
	__u8 addr_hi[16];
	__u16 port_lo;    /* host byte order */
	__u16 port_hi;
	__u8 family;      /* 4 or 6 */
	__u8 protocol;    /* IPPROTO_TCP, _UDP, _ICMP, _ICMPV6 */
	__u8 pad[2];      /* 0 */
};                        /* 40 bytes */

struct fos1_ct_value {
	__u64 last_seen_ns; /* bpf_ktime_get_ns() of the last packet */
	__u64 created_ns;
	__u32 rule_id;      /* the zone rule that allowed the first packet (0: a default) */
	__u8 state;         /* FOS1_CT_* */
	__u8 initiator_lo;  /* 1 when the endpoint in addr_lo/port_lo opened the connection */
	__u8 fin;           /* FOS1_CT_FIN_* bits */
	__u8 src_zone;      /* the initiator's zone */
	__u8 dst_zone;      /* the responder's zone */
	__u8 pad[7];        /* 0 */
};                          /* 32 bytes */

/* Datapath settings (map settings, array[1]), written by the control plane. */
#define FOS1_SETTING_NO_CONNTRACK 1 /* stateless: every packet goes through the zone policy */

struct fos1_settings {
	__u32 flags; /* FOS1_SETTING_* */
	__u32 pad;   /* 0 */
};                   /* 8 bytes */

#endif /* FOS1_DATAPATH_H */
