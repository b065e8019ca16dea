//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * SPRIGHT sk_msg data path.
 *
 * Every socket of the node's data path (the gateway's and one per function
 * instance) sits in sock_hash, keyed by its instance ID. A sendmsg on such a
 * socket carries exactly one 16-byte descriptor (DESIGN.md §2). This program
 * checks that the sender may talk on the descriptor's chain, that the
 * receiver belongs to that chain and that slot/len fit the chain's pool, then
 * redirects the message into the receive queue of the receiver's own socket
 * (BPF_F_INGRESS). Nothing is ever sent over the TCP connection itself.
 *
 * Failures are counted in drops[reason]. A well-formed descriptor from a
 * registered sender that fails a check is handed back to the sender (see
 * reject()); anything else gets SK_DROP (see drop() for what that does to
 * the socket).
 *
 * Metrics: each instance_metrics entry carries a bpf_spin_lock (allowed for
 * sk_msg programs on the target kernels), taken around every update, so the
 * counters and the concurrency integral of an entry change together and
 * userspace reads them consistently with BPF_F_LOCK. Sender and receiver are
 * updated one after the other (a program may hold one lock at a time), so a
 * reader can see a hop counted at the sender but not yet at the receiver.
 *
 * Headers: bpf_helpers.h and friends are vendored from Debian's libbpf-dev
 * (third_party/libbpf); so are the uapi headers linux/bpf.h and
 * linux/bpf_common.h (third_party/libbpf/include/uapi, from Debian's
 * linux-libc-dev), with a minimal linux/types.h of our own in bpf/include,
 * so that regeneration uses no header of the build host except clang's.
 */
#include <linux/bpf.h>
#include "bpf_helpers.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define ANY_CHAIN 0xFFFF
#define GATEWAY_INSTANCE 0
#define DESC_SIZE 16

/*
 * Set in desc.flags of a descriptor that this program handed back to its
 * sender instead of delivering it; bits 12-14 then hold the drop reason. The
 * sender's own flags in bits 0-11 are kept.
 */
#define FLAG_REJECTED 0x8000
#define REJECT_REASON_SHIFT 12
#define REJECT_REASON_MASK 0x7000

/* Keep in sync with DropReason in datapath.go. */
enum drop_reason {
	DROP_SHORT = 0,          /* message is not exactly one readable descriptor */
	DROP_UNKNOWN_SENDER = 1, /* sending socket has no registered identity */
	DROP_SENDER_CHAIN = 2,   /* sender is not a member of desc.chain */
	DROP_NEXT_CHAIN = 3,     /* desc.next is unknown or not a member of desc.chain */
	DROP_POOL_RANGE = 4,     /* chain has no pool, or slot/len out of range */
	DROP_REDIRECT = 5,       /* desc.next has no socket in sock_hash */
	DROP_REASONS_MAX = 16,   /* size of the drops array (room to grow) */
};

/* The wire descriptor, little endian (DESIGN.md §2). */
struct desc {
	__u32 next;
	__u16 chain;
	__u16 flags;
	__u32 slot;
	__u32 len;
};

/* Identity of a sending socket, stored in the socket itself. */
struct sender_id {
	__u32 instance;
	__u16 chain;
	__u16 pad;
};

/* Bounds of a chain's shared-memory pool. */
struct pool {
	__u32 slots;
	__u32 slot_size;
};

/*
 * EPROXY counters of one instance. The first 48 bytes are the contract read
 * by the metrics agent; the lock at the end serialises the eBPF writers and
 * lets userspace read a consistent snapshot (BPF_F_LOCK).
 */
struct metrics {
	__u64 requests_in;
	__u64 responses_out;
	__s64 inflight;
	__u64 sent;
	__u64 last_ns;
	__u64 busy_ns;
	struct bpf_spin_lock lock;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sock_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sender_id);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sender_identity SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u16);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} instance_chain SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u16);
	__type(value, struct pool);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} chain_pools SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct metrics);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} instance_metrics SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DROP_REASONS_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} drops SEC(".maps");

static __always_inline void count_drop(__u32 reason)
{
	__u64 *cnt = bpf_map_lookup_elem(&drops, &reason);

	if (cnt)
		__sync_fetch_and_add(cnt, 1);
}

/*
 * Refuse a message outright. SK_DROP fails the sendmsg with EACCES *and*
 * leaves the socket's psock verdict stuck at drop (tcp_bpf_send_verdict does
 * not reset psock->eval on __SK_DROP; measured on 6.18): every later sendmsg
 * on that socket fails with EACCES without running this program, until the
 * socket leaves sock_hash and is added again. So it is kept for messages
 * that cannot be answered: not exactly one descriptor, or a sender we do not
 * know.
 */
static __always_inline int drop(__u32 reason)
{
	count_drop(reason);
	return SK_DROP;
}

/*
 * Reject a well-formed descriptor of a registered sender: hand it back to
 * the sender's own receive queue with FLAG_REJECTED and the reason in the
 * flags (a NACK), so that the slot owner learns at once that nothing was
 * handed over. The sender's socket stays usable.
 */
static __always_inline int reject(struct sk_msg_md *msg, __u32 from, __u32 reason)
{
	void *data = (void *)(long)msg->data;
	void *data_end = (void *)(long)msg->data_end;
	struct desc *d = data;

	count_drop(reason);
	if (data + DESC_SIZE > data_end)
		return SK_DROP; /* cannot happen: the caller pulled the data */
	d->flags = (d->flags & ~(FLAG_REJECTED | REJECT_REASON_MASK)) | FLAG_REJECTED |
		   ((reason << REJECT_REASON_SHIFT) & REJECT_REASON_MASK);
	if (bpf_msg_redirect_hash(msg, &sock_hash, &from, BPF_F_INGRESS) != SK_PASS)
		return SK_DROP;
	return SK_PASS;
}

/*
 * Advance the time-weighted concurrency integral to now. Must be called with
 * m->lock held, before m->inflight changes.
 */
static __always_inline void advance(struct metrics *m, __u64 now)
{
	if (m->inflight > 0 && now > m->last_ns)
		m->busy_ns += (__u64)m->inflight * (now - m->last_ns);
	if (now > m->last_ns)
		m->last_ns = now;
}

SEC("sk_msg")
int spright_sk_msg(struct sk_msg_md *msg)
{
	struct sender_id *sender;
	struct metrics *m;
	struct pool *pool;
	struct desc d;
	__u16 *next_chain;
	void *data, *data_end;
	__u64 now;

	/* Exactly one descriptor per sendmsg. */
	if (msg->size != DESC_SIZE)
		return drop(DROP_SHORT);

	data = (void *)(long)msg->data;
	data_end = (void *)(long)msg->data_end;
	if (data + DESC_SIZE > data_end) {
		/* Descriptor spans scatterlist entries: linearise it. */
		if (bpf_msg_pull_data(msg, 0, DESC_SIZE, 0))
			return drop(DROP_SHORT);
		data = (void *)(long)msg->data;
		data_end = (void *)(long)msg->data_end;
		if (data + DESC_SIZE > data_end)
			return drop(DROP_SHORT);
	}
	__builtin_memcpy(&d, data, sizeof(d));

	/* Who is sending? The identity lives in the socket's own storage. */
	if (!msg->sk)
		return drop(DROP_UNKNOWN_SENDER);
	sender = bpf_sk_storage_get(&sender_identity, msg->sk, 0, 0);
	if (!sender)
		return drop(DROP_UNKNOWN_SENDER);
	__u32 from = sender->instance;

	if (sender->chain != ANY_CHAIN && sender->chain != d.chain)
		return reject(msg, from, DROP_SENDER_CHAIN);

	/* The gateway receives for every chain; anyone else must be a member. */
	if (d.next != GATEWAY_INSTANCE) {
		next_chain = bpf_map_lookup_elem(&instance_chain, &d.next);
		if (!next_chain || (*next_chain != d.chain && *next_chain != ANY_CHAIN))
			return reject(msg, from, DROP_NEXT_CHAIN);
	}

	pool = bpf_map_lookup_elem(&chain_pools, &d.chain);
	if (!pool || d.slot >= pool->slots || d.len > pool->slot_size)
		return reject(msg, from, DROP_POOL_RANGE);

	if (bpf_msg_redirect_hash(msg, &sock_hash, &d.next, BPF_F_INGRESS) != SK_PASS)
		return reject(msg, from, DROP_REDIRECT);

	/* Redirect accepted: account it. Missing entries are skipped. */
	now = bpf_ktime_get_ns();

	m = bpf_map_lookup_elem(&instance_metrics, &from);
	if (m) {
		bpf_spin_lock(&m->lock);
		m->sent++;
		if (from != GATEWAY_INSTANCE) {
			/* The sender hands its request on: one response out. */
			advance(m, now);
			m->responses_out++;
			if (m->inflight > 0)
				m->inflight--;
		}
		bpf_spin_unlock(&m->lock);
	}

	if (d.next != GATEWAY_INSTANCE) {
		m = bpf_map_lookup_elem(&instance_metrics, &d.next);
		if (m) {
			bpf_spin_lock(&m->lock);
			advance(m, now);
			m->requests_in++;
			m->inflight++;
			bpf_spin_unlock(&m->lock);
		}
	}

	return SK_PASS;
}
