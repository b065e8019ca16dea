//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * SPRIGHT packet forwarding between pods and to the NIC (DESIGN.md §4,
 * paper §3.4): an XDP program for the receive path of a host-side veth or
 * the NIC, a TC (tcx ingress) program for host-side veths, and an XDP_PASS
 * program for the pod side of a veth pair.
 *
 * Both forwarding programs parse Ethernet + IPv4, ask the kernel FIB where
 * the packet would be routed (bpf_fib_lookup), and if the answer is an
 * interface registered in fwd_targets by the loader, hand the frame to it
 * directly, skipping the host's IP forward path (and its netfilter hooks):
 *
 *   TC:  target is a host-side veth of a pod  -> bpf_redirect_peer (the skb
 *        enters the pod's netns at the pod-side veth, no second backlog pass)
 *        target is any other registered device (NIC) -> bpf_redirect (egress)
 *        neighbour not resolved yet                  -> bpf_redirect_neigh
 *   XDP: target registered as XDP-capable           -> bpf_redirect (XDP_REDIRECT)
 *
 * Everything else (not IPv4, local destination, no route, TTL <= 1, MTU,
 * unregistered target) is passed to the stack unchanged and counted.
 *
 * XDP_REDIRECT into a veth transmits the frame to the veth's peer through
 * ndo_xdp_xmit, which needs the peer's NAPI: the loader therefore attaches
 * spright_xdp_pass to the pod-side veth of every pod it serves.
 *
 * Headers: only vendored ones (see bpf/spright.c); the few network header
 * structs needed are declared here.
 */
#include <linux/bpf.h>
#include "bpf_helpers.h"
#include "bpf_endian.h"

#define ETH_ALEN 6
#define ETH_P_IP 0x0800
#define AF_INET 2

#define TC_ACT_OK 0

struct ethhdr {
	__u8 h_dest[ETH_ALEN];
	__u8 h_source[ETH_ALEN];
	__be16 h_proto;
} __attribute__((packed));

struct iphdr {
	__u8 ihl_version; /* little endian bitfield order: ihl low nibble */
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__be32 saddr;
	__be32 daddr;
};

/* Counters, mirrored by Counter in redirect.go. */
enum stat {
	STAT_TC_REDIRECT_PEER = 0, /* tc: bpf_redirect_peer into a pod */
	STAT_TC_REDIRECT = 1,      /* tc: bpf_redirect to a device's egress (NIC) */
	STAT_TC_REDIRECT_NEIGH = 2,/* tc: bpf_redirect_neigh (neighbour unresolved) */
	STAT_TC_PASS = 3,          /* tc: not for us (not IPv4, local, TTL, target not registered) */
	STAT_TC_FIB_MISS = 4,      /* tc: bpf_fib_lookup found no forwarding route */
	STAT_XDP_REDIRECT = 5,     /* xdp: XDP_REDIRECT */
	STAT_XDP_PASS = 6,         /* xdp: XDP_PASS, not for us */
	STAT_XDP_FIB_MISS = 7,     /* xdp: bpf_fib_lookup found no forwarding route (or no neighbour) */
	STAT_PEER_PASS = 8,        /* pod-side xdp pass program: frames entering a pod */
	STAT_MAX = 16,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} fwd_stats SEC(".maps");

/* fwd_targets flags, mirrored in redirect.go. */
#define TARGET_PEER 1 /* host-side veth of a pod: bpf_redirect_peer from tc */
#define TARGET_XDP 2  /* may receive XDP_REDIRECT (its peer runs an XDP program, or a NIC driver with ndo_xdp_xmit) */

/* ifindex (host netns) -> TARGET_* flags. Only registered interfaces are
 * redirected to: anything else takes the normal stack path. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u32);
} fwd_targets SEC(".maps");

static __always_inline void count(__u32 s)
{
	__u64 *v = bpf_map_lookup_elem(&fwd_stats, &s);
	if (v)
		*v += 1; /* per-CPU: no atomics needed */
}

/* ip_decrease_ttl from the kernel: incremental checksum update. */
static __always_inline void dec_ttl(struct iphdr *iph)
{
	__u32 check = iph->check;
	check += bpf_htons(0x0100);
	iph->check = (__u16)(check + (check >= 0xFFFF));
	iph->ttl--;
}

/* parse finds the IPv4 header; returns 0 if the packet is not plain IPv4. */
static __always_inline int parse(void *data, void *data_end, struct ethhdr **eth, struct iphdr **iph)
{
	struct ethhdr *e = data;
	if ((void *)(e + 1) > data_end)
		return 0;
	if (e->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	struct iphdr *ip = (void *)(e + 1);
	if ((void *)(ip + 1) > data_end)
		return 0;
	if ((ip->ihl_version & 0xF0) != 0x40)
		return 0;
	*eth = e;
	*iph = ip;
	return 1;
}

static __always_inline void fib_params(struct bpf_fib_lookup *p, struct iphdr *iph, __u32 ifindex, __u16 tot_len)
{
	__builtin_memset(p, 0, sizeof(*p));
	p->family = AF_INET;
	p->tos = iph->tos;
	p->l4_protocol = iph->protocol;
	p->tot_len = tot_len;
	p->ipv4_src = iph->saddr;
	p->ipv4_dst = iph->daddr;
	p->ifindex = ifindex;
}

static __always_inline void set_macs(struct ethhdr *eth, struct bpf_fib_lookup *p)
{
	__builtin_memcpy(eth->h_dest, p->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, p->smac, ETH_ALEN);
}

SEC("tc")
int spright_tc_fwd(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth;
	struct iphdr *iph;

	if (!parse(data, data_end, &eth, &iph) || iph->ttl <= 1) {
		count(STAT_TC_PASS);
		return TC_ACT_OK;
	}

	struct bpf_fib_lookup p;
	/* tot_len 0: the kernel checks the MTU with is_skb_forwardable, which
	 * understands GSO packets (a TSO super-packet from a pod is larger
	 * than the MTU but forwardable). */
	fib_params(&p, iph, skb->ingress_ifindex, 0);
	long rc = bpf_fib_lookup(skb, &p, sizeof(p), 0);

	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		__u32 *t = bpf_map_lookup_elem(&fwd_targets, &p.ifindex);
		if (!t) {
			count(STAT_TC_PASS);
			return TC_ACT_OK;
		}
		dec_ttl(iph);
		count(STAT_TC_REDIRECT_NEIGH);
		return bpf_redirect_neigh(p.ifindex, 0, 0, 0);
	}
	if (rc != BPF_FIB_LKUP_RET_SUCCESS) {
		count(STAT_TC_FIB_MISS);
		return TC_ACT_OK;
	}
	__u32 *t = bpf_map_lookup_elem(&fwd_targets, &p.ifindex);
	if (!t) {
		count(STAT_TC_PASS);
		return TC_ACT_OK;
	}
	dec_ttl(iph);
	set_macs(eth, &p);
	if (*t & TARGET_PEER) {
		count(STAT_TC_REDIRECT_PEER);
		return bpf_redirect_peer(p.ifindex, 0);
	}
	count(STAT_TC_REDIRECT);
	return bpf_redirect(p.ifindex, 0);
}

SEC("xdp")
int spright_xdp_fwd(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth;
	struct iphdr *iph;

	if (!parse(data, data_end, &eth, &iph) || iph->ttl <= 1) {
		count(STAT_XDP_PASS);
		return XDP_PASS;
	}

	struct bpf_fib_lookup p;
	fib_params(&p, iph, ctx->ingress_ifindex, bpf_ntohs(iph->tot_len));
	long rc = bpf_fib_lookup(ctx, &p, sizeof(p), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS) {
		/* NO_NEIGH included: XDP cannot resolve neighbours, the stack
		 * (or the tc program behind this one) will. */
		count(STAT_XDP_FIB_MISS);
		return XDP_PASS;
	}
	__u32 *t = bpf_map_lookup_elem(&fwd_targets, &p.ifindex);
	if (!t || !(*t & TARGET_XDP)) {
		count(STAT_XDP_PASS);
		return XDP_PASS;
	}
	dec_ttl(iph);
	set_macs(eth, &p);
	count(STAT_XDP_REDIRECT);
	return bpf_redirect(p.ifindex, 0);
}

/* On the pod side of a veth: makes the pair's NAPI run so that frames
 * XDP_REDIRECTed into the host side reach the pod. */
SEC("xdp")
int spright_xdp_pass(struct xdp_md *ctx)
{
	count(STAT_PEER_PASS);
	return XDP_PASS;
}

char __license[] SEC("license") = "Dual BSD/GPL";
