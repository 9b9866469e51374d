/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fos1 rate limits: per-source packet rate limits that the control plane writes
 * (an IDS verdict "rate-limit this source"), enforced by the firewall at TC ingress.
 *
 * ratelimit_v4 / ratelimit_v6 (hash, key = struct fos1_host_v4_key / _v6_key from
 * fos1-blocklist.h) hold the configuration, written by bpf/ratelimit-maps.ts; the
 * programs keep each source's state in ratelimit_tat, which the control plane never
 * writes. Layouts are checked against the BTF by test/unit/bpf-btf-layout.test.ts.
 *
 * The algorithm is GCRA (the token bucket expressed as one timestamp): a packet
 * conforms when it arrives no earlier than TAT - tolerance, where TAT (theoretical
 * arrival time) advances by 1/pps for every conforming packet and tolerance is
 * (burst - 1)/pps. Dropped packets do not advance it.
 */
#ifndef FOS1_RATELIMIT_H
#define FOS1_RATELIMIT_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define FOS1_RATELIMIT_V4_MAP "ratelimit_v4"
#define FOS1_RATELIMIT_V6_MAP "ratelimit_v6"

/* One rate-limited source host. */
struct fos1_ratelimit_value {
	__u64 expires_at; /* unix seconds, 0 = never; expired entries are ignored */
	__u32 rule_id;    /* counted in rule_stats, reported in drop events */
	__u32 pps;        /* sustained packets per second, >= 1 */
	__u32 burst;      /* packets that may arrive back to back, >= 1 */
	__u32 flags;      /* reserved, must be 0 */
};                        /* 24 bytes, 8-byte aligned */

#endif /* FOS1_RATELIMIT_H */
