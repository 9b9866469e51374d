// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * fos1 firewall at TC (clsact, cls_bpf direct-action), both directions.
 *
 * Ingress: the zone of the interface is the source zone; the destination zone
 * comes from a FIB lookup (on the address the packet arrived with: before any DNAT).
 * Egress: locally sent packets get the zone check here (source = host zone).
 * Forwarded packets were judged at ingress; between two zoned interfaces their
 * tuple is looked up again here, after netfilter's NAT, so that a connection whose
 * addresses or ports NAT changed is tracked under the tuple its replies will carry
 * (and judged on its real zone pair and post-DNAT port when that tuple is new).
 * The blocklist applies in both directions.
 */
#include "fos1-firewall.bpf.h"

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2

SEC("tc")
int fos1_tc_ingress(struct __sk_buff *skb)
{
	__u8 src_zone = fos1_zone_of(skb->ifindex);
	int pass = fos1_verdict(skb, (void *)(long)skb->data, (void *)(long)skb->data_end, skb->ifindex,
				FOS1_HOOK_TC_INGRESS, src_zone, FOS1_ZONE_UNZONED, 0, skb->len);
	return pass ? TC_ACT_OK : TC_ACT_SHOT;
}

SEC("tc")
int fos1_tc_egress(struct __sk_buff *skb)
{
	/* ingress_ifindex is 0 for a packet this host sent, the receiving interface for a forwarded one. */
	int forwarded = skb->ingress_ifindex != 0;
	__u8 src_zone = FOS1_ZONE_UNZONED;
	__u8 dst_zone = fos1_zone_of(skb->ifindex);
	if (dst_zone != FOS1_ZONE_UNZONED)
		src_zone = forwarded ? fos1_zone_of(skb->ingress_ifindex) : FOS1_ZONE_HOST;
	int pass = fos1_verdict(skb, (void *)(long)skb->data, (void *)(long)skb->data_end, skb->ifindex,
				FOS1_HOOK_TC_EGRESS, src_zone, dst_zone, forwarded, skb->len);
	return pass ? TC_ACT_OK : TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
