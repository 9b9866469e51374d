// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * fos1 firewall at XDP (ingress only, before the stack allocates an skb), for
 * devices with native XDP. Same maps and verdict as the TC ingress program.
 */
#include "fos1-firewall.bpf.h"

SEC("xdp")
int fos1_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 src_zone = fos1_zone_of(ctx->ingress_ifindex);
	int pass = fos1_verdict(ctx, data, data_end, ctx->ingress_ifindex, FOS1_HOOK_XDP, src_zone, FOS1_ZONE_UNZONED, 0,
				(__u32)(data_end - data));
	return pass ? XDP_PASS : XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
