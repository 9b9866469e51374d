/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fos1 blocklist: layouts shared by the control plane and the BPF programs that
 * consult the pinned maps /sys/fs/bpf/<dir>/blocklist_v4 and blocklist_v6.
 *
 * The control plane writes these maps from TypeScript (bpf/blocklist-codec.ts);
 * any change here must be mirrored there, and the sizes below are checked by
 * test/unit/bpf-codec.test.ts and against the BTF of the compiled programs by
 * test/unit/bpf-btf-layout.test.ts. Both maps are BPF_MAP_TYPE_LPM_TRIE, created
 * with BPF_F_NO_PREALLOC (the kernel requires it for LPM tries).
 *
 * Single hosts (/32, /128) live in the hash maps blockhost_v4 / blockhost_v6
 * instead: a hash insert is O(1) and batch-loads a million entries far faster
 * than the trie, and a hash lookup is one probe per packet.
 */
#ifndef FOS1_BLOCKLIST_H
#define FOS1_BLOCKLIST_H

/* BPF programs include vmlinux.h (generated from the running kernel's BTF) first;
 * the control plane's C-free build and other tools get the UAPI types instead. */
#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define FOS1_BLOCKLIST_V4_MAP "blocklist_v4"
#define FOS1_BLOCKLIST_V6_MAP "blocklist_v6"
#define FOS1_BLOCKHOST_V4_MAP "blockhost_v4"
#define FOS1_BLOCKHOST_V6_MAP "blockhost_v6"

/*
 * LPM trie keys. The layout is dictated by the kernel (struct bpf_lpm_trie_key_u8):
 * prefixlen first, in HOST byte order, then the address bytes in NETWORK order.
 * For a lookup of a single address, set prefixlen to 32 (v4) or 128 (v6).
 */
struct fos1_lpm_v4_key {
	__u32 prefixlen; /* 0..32, host byte order */
	__u8 addr[4];    /* network byte order, host bits zero */
};                       /* 8 bytes */

struct fos1_lpm_v6_key {
	__u32 prefixlen; /* 0..128, host byte order */
	__u8 addr[16];   /* network byte order, host bits zero */
};                       /* 20 bytes */

/* Hash keys of the single-host maps: the address in network byte order. */
struct fos1_host_v4_key {
	__u8 addr[4];
};                       /* 4 bytes */

struct fos1_host_v6_key {
	__u8 addr[16];
};                       /* 16 bytes */

/* Value stored for each blocked prefix (same for both families). */
struct fos1_block_value {
	__u64 expires_at; /* unix seconds, 0 = never; programs compare against
			   * wall-clock time and ignore expired entries, the
			   * control plane deletes them later */
	__u32 rule_id;    /* id of the rule that created the entry, 0 = none */
	__u32 flags;      /* reserved for future per-entry behaviour, must be 0 */
};                        /* 16 bytes, 8-byte aligned */

#endif /* FOS1_BLOCKLIST_H */
