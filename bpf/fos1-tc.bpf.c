// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * fos1 firewall at TC (clsact, cls_bpf direct-action), both directions.
 *
 * Ingress: the zone of the interface is the source zone; the destination zone
 * comes from a FIB lookup. Egress: only locally sent packets get the zone
 * check here (source = host zone); forwarded packets were judged at ingress.
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
				FOS1_HOOK_TC_INGRESS, src_zone, FOS1_ZONE_UNZONED, skb->len);
	return pass ? TC_ACT_OK : TC_ACT_SHOT;
}

SEC("tc")
int fos1_tc_egress(struct __sk_buff *skb)
{
	__u8 src_zone = FOS1_ZONE_UNZONED, dst_zone = FOS1_ZONE_UNZONED;
	if (skb->ingress_ifindex == 0) {
		dst_zone = fos1_zone_of(skb->ifindex);
		if (dst_zone != FOS1_ZONE_UNZONED)
			src_zone = FOS1_ZONE_HOST;
	}
	int pass = fos1_verdict(skb, (void *)(long)skb->data, (void *)(long)skb->data_end, skb->ifindex,
				FOS1_HOOK_TC_EGRESS, src_zone, dst_zone, skb->len);
	return pass ? TC_ACT_OK : TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
