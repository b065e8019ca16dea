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
 * Splice (EPROXY for plain revisions): a second, independent pair of
 * programs on splice_map joins two TCP sockets of a pod — the client's
 * connection to EPROXY and EPROXY's connection to the user container — so
 * that the kernel forwards between them, and counts HTTP/1.x requests and
 * responses per instance on the way. See the splice section below.
 *
 * Headers: bpf_helpers.h and friends are vendored from Debian's libbpf-dev
 * (third_party/libbpf); so are the uapi headers linux/bpf.h and
 * linux/bpf_common.h (third_party/libbpf/include/uapi, from Debian's
 * linux-libc-dev), with a minimal linux/types.h of our own in bpf/include,
 * so that regeneration uses no header of the build host except clang's.
 */
#include <linux/bpf.h>
#include "bpf_helpers.h"
#include "bpf_endian.h"

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
	DROP_SPLICE_PEER = 6,    /* spliced bytes whose peer socket is gone (splice) */
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

/*
 * ---------------------------------------------------------------------------
 * Splice: EPROXY for plain (non-chained) revisions.
 *
 * EPROXY accepts the client's connection (side A, SIDE_CLIENT) and dials the
 * user container (side B, SIDE_UPSTREAM); the node agent puts both sockets
 * into splice_map, keyed by their socket cookies, and records each one's
 * peer. From then on:
 *
 *   - spright_splice_verdict (stream verdict, no parser) runs on every chunk
 *     (skb) that arrives on A or B and redirects it to the egress of the
 *     peer: client bytes go out of B, user-container bytes out of A.
 *
 *   - spright_splice_msg (sk_msg) runs on every sendmsg on A or B. That
 *     includes the bytes the verdict redirected (the kernel sends them with
 *     sendmsg on the peer from the psock's backlog, which runs the peer's
 *     sk_msg program; measured on 6.18) as well as what EPROXY itself writes
 *     (the first request of a connection, which EPROXY reads to tell probes
 *     from traffic). So this is the one place where requests and responses
 *     are counted: a message going out of B that starts with an HTTP/1.x
 *     request line is a request in, a message going out of A that starts
 *     with a final HTTP/1.x status line is a response out. Counting in the
 *     verdict as well would count every forwarded request twice. It always
 *     returns SK_PASS: SK_DROP on sk_msg breaks the socket (see drop()).
 *
 * The programs see no close: each connection counts its outstanding
 * requests (see struct splice_info), and spright_splice_end, run by the
 * agent when a splice ends, takes the unanswered ones out of Inflight.
 *
 * Helper availability forces two lookups (verified on 6.18): sk_skb
 * programs may call bpf_get_socket_cookie but not bpf_sk_storage_get, sk_msg
 * programs the other way round. The verdict therefore finds its peer in
 * splice_peer by its own cookie, and the sk_msg program finds instance and
 * side in the socket's storage (splice_sock); userspace writes both.
 *
 * Counting is a segment-start heuristic: only the first bytes of a message
 * are looked at. HTTP/1.1 clients write a request (line and headers) in one
 * go and servers write the status line first, so a request or response
 * starts a message; a body segment that happens to start with "GET " or
 * "HTTP/1.1 200" would be miscounted, and pipelined requests in one segment
 * count once. Interim 1xx responses (100 Continue, 103 Early Hints) are not
 * counted; 101 Switching Protocols is (it ends the HTTP exchange).
 */

#define SIDE_CLIENT 0
#define SIDE_UPSTREAM 1

/* Bytes looked at: "HTTP/1.1 200" is 12, the longest method + SP is 8. */
#define PEEK 12

/*
 * Where a spliced socket's bytes go, and whom they are counted for. conn is
 * the cookie of the connection's client-side socket (A): the key of the
 * record that holds the connection's outstanding requests (counted in
 * instance_metrics, no response seen yet). Only that record's outstanding
 * is used; the copies in splice_sock leave it 0.
 */
struct splice_info {
	__u64 peer_cookie;
	__u64 conn;
	__s64 outstanding;
	__u32 instance;
	__u8 side;
	__u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} splice_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct splice_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} splice_peer SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct splice_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} splice_sock SEC(".maps");

/* Little-endian words of up to 8 characters, and masks of their length. */
#define W4(a, b, c, d) ((__u64)(a) | (__u64)(b) << 8 | (__u64)(c) << 16 | (__u64)(d) << 24)
#define W8(a, b, c, d, e, f, g, h) (W4(a, b, c, d) | W4(e, f, g, h) << 32)
#define MASK(n) ((n) >= 8 ? ~0ULL : (1ULL << (8 * (n))) - 1)
#define HAS(w, n, word) (((w) & MASK(n)) == (word))

/* w holds the first 8 bytes of a message: does it start a request line? */
static __always_inline int is_request(__u64 w)
{
	return HAS(w, 4, W4('G', 'E', 'T', ' ')) ||
	       HAS(w, 5, W8('P', 'O', 'S', 'T', ' ', 0, 0, 0)) ||
	       HAS(w, 4, W4('P', 'U', 'T', ' ')) ||
	       HAS(w, 7, W8('D', 'E', 'L', 'E', 'T', 'E', ' ', 0)) ||
	       HAS(w, 5, W8('H', 'E', 'A', 'D', ' ', 0, 0, 0)) ||
	       HAS(w, 8, W8('O', 'P', 'T', 'I', 'O', 'N', 'S', ' ')) ||
	       HAS(w, 6, W8('P', 'A', 'T', 'C', 'H', ' ', 0, 0)) ||
	       HAS(w, 8, W8('C', 'O', 'N', 'N', 'E', 'C', 'T', ' ')) ||
	       HAS(w, 6, W8('T', 'R', 'A', 'C', 'E', ' ', 0, 0));
}

/*
 * b (8-aligned) holds the first PEEK bytes of a message: does it start a final status
 * line, "HTTP/1.x NNN" with NNN not an interim 1xx (101 counts)?
 */
static __always_inline int is_final_response(const __u8 *b)
{
	if (!HAS(*(const __u64 *)b, 7, W8('H', 'T', 'T', 'P', '/', '1', '.', 0)) || b[8] != ' ')
		return 0;
	if (b[9] < '1' || b[9] > '5')
		return 0;
	if (b[9] == '1' && !(b[10] == '0' && b[11] == '1'))
		return 0;
	return 1;
}

/* One more (delta 1) or one fewer (-1, never below 0) outstanding request. */
static __always_inline void count_outstanding(__u64 conn, int delta)
{
	struct splice_info *c = bpf_map_lookup_elem(&splice_peer, &conn);

	if (!c)
		return;
	if (delta > 0)
		__sync_fetch_and_add(&c->outstanding, 1);
	else if (c->outstanding > 0)
		__sync_fetch_and_add(&c->outstanding, -1);
}

static __always_inline void count_request(__u32 instance)
{
	struct metrics *m = bpf_map_lookup_elem(&instance_metrics, &instance);
	__u64 now = bpf_ktime_get_ns(); /* no calls while the lock is held */

	if (!m)
		return;
	bpf_spin_lock(&m->lock);
	advance(m, now);
	m->requests_in++;
	m->inflight++;
	bpf_spin_unlock(&m->lock);
}

static __always_inline void count_response(__u32 instance)
{
	struct metrics *m = bpf_map_lookup_elem(&instance_metrics, &instance);
	__u64 now = bpf_ktime_get_ns(); /* no calls while the lock is held */

	if (!m)
		return;
	bpf_spin_lock(&m->lock);
	advance(m, now);
	m->responses_out++;
	if (m->inflight > 0)
		m->inflight--;
	bpf_spin_unlock(&m->lock);
}

/*
 * Client sockets EPROXY proxies in userspace behind a containerConcurrency
 * breaker: requests are counted as they ARRIVE (here, in the verdict, before
 * the breaker queues them), so the autoscaler sees the queued ones too, as
 * queue-proxy counts them; responses are counted by the sk_msg program as
 * they leave (splice_sock side client). Keyed by socket cookie; an LRU map,
 * since sockets leave no trace here when closed (cookies are never reused).
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u32); /* instance */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} arrival_counted SEC(".maps");

SEC("sk_skb/stream_verdict")
int spright_splice_verdict(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct splice_info *s = bpf_map_lookup_elem(&splice_peer, &cookie);
	__u64 peer;

	/* Not (or no longer) spliced: the bytes stay for userspace. */
	if (!s) {
		__u32 *inst = bpf_map_lookup_elem(&arrival_counted, &cookie);
		__u64 w = 0;

		if (inst && skb->len >= 8 && !bpf_skb_load_bytes(skb, 0, &w, 8) && is_request(w))
			count_request(*inst);
		return SK_PASS;
	}
	peer = s->peer_cookie;
	if (bpf_sk_redirect_hash(skb, &splice_map, &peer, 0) != SK_PASS) {
		/* The peer was closed: nobody can take these bytes. */
		count_drop(DROP_SPLICE_PEER);
		return SK_DROP;
	}
	return SK_PASS;
}

SEC("sk_msg")
int spright_splice_msg(struct sk_msg_md *msg)
{
	struct splice_info *s;
	void *data, *data_end;
	__u64 w[2] = {}; /* the first PEEK bytes, 8-aligned */

	if (!msg->sk)
		return SK_PASS;
	s = bpf_sk_storage_get(&splice_sock, msg->sk, 0, 0);
	if (!s || msg->size < PEEK)
		return SK_PASS;

	data = (void *)(long)msg->data;
	data_end = (void *)(long)msg->data_end;
	if (data + PEEK > data_end) {
		/* The start spans scatterlist entries: linearise it. */
		if (bpf_msg_pull_data(msg, 0, PEEK, 0))
			return SK_PASS;
		data = (void *)(long)msg->data;
		data_end = (void *)(long)msg->data_end;
		if (data + PEEK > data_end)
			return SK_PASS;
	}
	__builtin_memcpy(w, data, PEEK);

	if (s->side == SIDE_UPSTREAM) {
		if (is_request(w[0])) {
			count_request(s->instance);
			count_outstanding(s->conn, 1);
		}
	} else if (is_final_response((const __u8 *)w)) {
		count_response(s->instance);
		count_outstanding(s->conn, -1);
	}
	return SK_PASS;
}

/*
 * Take n requests that will never be answered out of an instance's
 * in-flight count (never below 0), under its lock like every update.
 */
static __always_inline void take_inflight(__u32 instance, __s64 n)
{
	__u64 now = bpf_ktime_get_ns(); /* no calls while the lock is held */
	struct metrics *m = bpf_map_lookup_elem(&instance_metrics, &instance);

	if (!m)
		return;
	bpf_spin_lock(&m->lock);
	advance(m, now);
	if (m->inflight > n)
		m->inflight -= n;
	else
		m->inflight = 0;
	bpf_spin_unlock(&m->lock);
}

/*
 * The end of a spliced connection, run by the agent with BPF_PROG_TEST_RUN
 * (RemoveSplice, PruneSplices) once its sockets have left splice_map: the
 * requests still outstanding on it will never be answered (the client or
 * the user container went away), so they leave the instance's in-flight
 * count, under its lock like every other update. The input (the test run's
 * packet) is the connection's key, a u64 little endian, padded to 16 bytes;
 * the return value is the number of requests taken out.
 *
 * The read and the subtraction of outstanding are two steps: a response
 * counted in between (possible only while the sockets are still leaving
 * splice_map) is taken out twice, which the clamp at 0 absorbs.
 */
SEC("tc")
int spright_splice_end(struct __sk_buff *skb)
{
	struct splice_info *c;
	__u64 conn;
	__s64 n;

	if (bpf_skb_load_bytes(skb, 0, &conn, sizeof(conn)))
		return 0;
	c = bpf_map_lookup_elem(&splice_peer, &conn);
	if (!c)
		return 0;
	n = c->outstanding;
	if (n <= 0)
		return 0;
	__sync_fetch_and_add(&c->outstanding, -n);
	take_inflight(c->instance, n);
	return (int)n;
}

/*
 * Steer: EPROXY for plain revisions without forwarding a byte.
 *
 * Splicing (above) still moves every byte twice through the kernel's
 * workqueue. Steering moves none: a new connection to a steered pod's
 * traffic port (QUEUE_SERVING_PORT, from_port) from a source EPROXY has
 * learned to be a plain traffic source is rewritten, packet by packet, to
 * the user container's own port (to_port) on the way in, and back on the
 * way out; the user container accepts it and answers on it directly. The
 * program, attached with TCX to ingress and egress of every interface of
 * the pod's network namespace, keeps the connection in steer_flows and
 * counts on the way: a packet to the user container whose TCP payload
 * starts a request line is a request (RequestsIn, Inflight++), a packet
 * from it that starts a final status line a response (ResponsesOut,
 * Inflight--), with the same segment-start heuristic as the splice and the
 * sequence number remembered so that a retransmitted segment is not
 * counted twice. Counts go to the instance the namespace's policy names
 * now, not the one it named when the flow started: after the agent or
 * EPROXY restarted (a new instance), the connections steered before keep
 * being seen by the autoscaler. The first RST, or the user container's FIN, ends the
 * flow's count: requests it left unanswered leave Inflight then. The flow
 * record itself stays (the last ACKs and the client's FIN must still be
 * rewritten) until the LRU map reuses it; a SYN on the same addresses
 * starts a new flow.
 *
 * The decision is taken once per connection, at its SYN: steered when the
 * namespace is enabled (steer_ns) and the client address is in steer_src.
 * Everything else (Knative's probes, the activator, any source EPROXY has
 * not seen traffic from yet) reaches EPROXY's own listener untouched.
 *
 * Keys carry the namespace's cookie (steer_netns_cookie), so loopback
 * addresses of different pods never mix.
 */
#define TCX_NEXT -1
#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP 6
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

struct steer_policy {
	__u32 instance;
	__u16 from_port; /* host order */
	__u16 to_port;   /* host order */
	__u32 enabled;   /* 0: no new connection is steered */
	__u32 pad;
	__u64 flows;     /* connections steered so far */
};

struct steer_source {
	__u64 netns;
	__u32 addr[4]; /* IPv4 in addr[0], network order */
	__u32 family;  /* 4 or 6 */
	__u32 pad;
};

struct steer_flow_key {
	__u64 netns;
	__u32 client[4];
	__u32 server[4];
	__u16 client_port; /* network order */
	__u16 family;
	__u32 pad;
};

#define FLOW_REQ_SEEN 0x1
#define FLOW_RESP_SEEN 0x2
#define FLOW_ENDED 0x4

struct steer_flow {
	__u32 instance; /* when it started (counts go to the policy's current one) */
	__u32 req_next;  /* seq after the last counted request segment */
	__u32 resp_next; /* the same for responses */
	__s32 outstanding;
	__u16 from_port; /* network order */
	__u16 to_port;   /* network order */
	__u32 flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct steer_policy);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} steer_ns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct steer_source);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} steer_src SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 131072);
	__type(key, struct steer_flow_key);
	__type(value, struct steer_flow);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} steer_flows SEC(".maps");

/* The requests a flow left unanswered leave Inflight (once). */
static __always_inline void steer_end(struct steer_flow *f, __u32 instance)
{
	__s32 n;

	if (f->flags & FLOW_ENDED)
		return;
	f->flags |= FLOW_ENDED;
	n = f->outstanding;
	f->outstanding = 0;
	if (n > 0)
		take_inflight(instance, n);
}

/* Does seq come at or after next (mod 2^32)? */
static __always_inline int seq_after_eq(__u32 seq, __u32 next)
{
	return (__s32)(seq - next) >= 0;
}

/*
 * The namespace a copy of this program serves, set by the agent when it
 * loads one for a pod (Steer). bpf_get_netns_cookie cannot tell: for a tc
 * program it names the namespace of skb->sk, and an arriving packet has no
 * socket yet (the kernel then answers init_net's cookie, measured on 6.18).
 * 0 (the copy loaded with the others, for tests on loopback, where sent
 * packets carry their socket): ask bpf_get_netns_cookie.
 */
volatile const __u64 steer_netns_cookie = 0;

SEC("tc")
int spright_steer(struct __sk_buff *skb)
{
	struct steer_flow_key key = {};
	struct steer_flow *f;
	struct steer_policy *ns;
	__u32 l4, hdr, seq, plen;
	__u16 sport, dport, eth_proto;
	__u8 flags, doff, proto;
	__u64 w[2] = {};
	int to_server;

	key.netns = steer_netns_cookie;
	if (!key.netns)
		key.netns = bpf_get_netns_cookie(skb);
	ns = bpf_map_lookup_elem(&steer_ns, &key.netns);
	if (!ns)
		return TCX_NEXT;

	eth_proto = bpf_ntohs(skb->protocol);
	if (eth_proto == ETH_P_IP) {
		__u8 vihl;
		__u16 frag;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &vihl, 1) ||
		    bpf_skb_load_bytes(skb, ETH_HLEN + 9, &proto, 1) ||
		    bpf_skb_load_bytes(skb, ETH_HLEN + 6, &frag, 2))
			return TCX_NEXT;
		if (proto != IPPROTO_TCP || (bpf_ntohs(frag) & 0x3FFF))
			return TCX_NEXT; /* not TCP, or a fragment */
		l4 = ETH_HLEN + (vihl & 0xF) * 4;
		key.family = 4;
	} else if (eth_proto == ETH_P_IPV6) {
		if (bpf_skb_load_bytes(skb, ETH_HLEN + 6, &proto, 1))
			return TCX_NEXT;
		if (proto != IPPROTO_TCP)
			return TCX_NEXT; /* extension headers are not followed */
		l4 = ETH_HLEN + 40;
		key.family = 6;
	} else {
		return TCX_NEXT;
	}
	if (bpf_skb_load_bytes(skb, l4, &sport, 2) || bpf_skb_load_bytes(skb, l4 + 2, &dport, 2) ||
	    bpf_skb_load_bytes(skb, l4 + 4, &seq, 4) || bpf_skb_load_bytes(skb, l4 + 12, &doff, 1) ||
	    bpf_skb_load_bytes(skb, l4 + 13, &flags, 1))
		return TCX_NEXT;
	seq = bpf_ntohl(seq);
	hdr = l4 + (doff >> 4) * 4;
	plen = skb->len > hdr ? skb->len - hdr : 0;

	if (dport == bpf_htons(ns->from_port)) {
		to_server = 1;
	} else if (sport == bpf_htons(ns->to_port)) {
		to_server = 0;
	} else {
		return TCX_NEXT;
	}
	/* The flow is named by its client side: (client, server, client port). */
	if (key.family == 4) {
		__u32 src, dst;

		if (bpf_skb_load_bytes(skb, ETH_HLEN + 12, &src, 4) || bpf_skb_load_bytes(skb, ETH_HLEN + 16, &dst, 4))
			return TCX_NEXT;
		key.client[0] = to_server ? src : dst;
		key.server[0] = to_server ? dst : src;
	} else {
		if (bpf_skb_load_bytes(skb, ETH_HLEN + 8, to_server ? key.client : key.server, 16) ||
		    bpf_skb_load_bytes(skb, ETH_HLEN + 24, to_server ? key.server : key.client, 16))
			return TCX_NEXT;
	}
	key.client_port = to_server ? sport : dport;

	f = bpf_map_lookup_elem(&steer_flows, &key);
	if (to_server && (flags & TCP_SYN) && !(flags & TCP_ACK)) {
		/* A new connection: is its client one to steer? */
		struct steer_source src = {.netns = key.netns, .family = key.family};
		struct steer_flow nf = {.instance = ns->instance, .from_port = bpf_htons(ns->from_port),
					.to_port = bpf_htons(ns->to_port)};

		if (f)
			steer_end(f, ns->instance); /* the addresses are reused: that flow is over */
		__builtin_memcpy(src.addr, key.client, sizeof(src.addr));
		if (!ns->enabled || !bpf_map_lookup_elem(&steer_src, &src)) {
			if (f)
				bpf_map_delete_elem(&steer_flows, &key);
			return TCX_NEXT; /* EPROXY's: untouched */
		}
		if (bpf_map_update_elem(&steer_flows, &key, &nf, BPF_ANY))
			return TCX_NEXT;
		__sync_fetch_and_add(&ns->flows, 1);
		f = bpf_map_lookup_elem(&steer_flows, &key);
	}
	if (!f)
		return TCX_NEXT; /* not a steered connection */

	/* Count before rewriting (the loads read the payload, not the header). */
	if (plen >= PEEK && !(f->flags & FLOW_ENDED) && !bpf_skb_load_bytes(skb, hdr, w, PEEK)) {
		if (to_server) {
			if ((!(f->flags & FLOW_REQ_SEEN) || seq_after_eq(seq, f->req_next)) && is_request(w[0])) {
				f->flags |= FLOW_REQ_SEEN;
				f->req_next = seq + plen;
				__sync_fetch_and_add(&f->outstanding, 1);
				count_request(ns->instance);
			}
		} else if ((!(f->flags & FLOW_RESP_SEEN) || seq_after_eq(seq, f->resp_next)) &&
			   is_final_response((const __u8 *)w)) {
			f->flags |= FLOW_RESP_SEEN;
			f->resp_next = seq + plen;
			if (f->outstanding > 0)
				__sync_fetch_and_add(&f->outstanding, -1);
			count_response(ns->instance);
		}
	}
	if ((flags & TCP_RST) || (!to_server && (flags & TCP_FIN)))
		steer_end(f, ns->instance);

	/* Rewrite the port: TCP's checksum does not cover it in the pseudo header. */
	{
		__u16 from = to_server ? f->from_port : f->to_port;
		__u16 to = to_server ? f->to_port : f->from_port;
		__u32 off = to_server ? l4 + 2 : l4;

		if (bpf_l4_csum_replace(skb, l4 + 16, from, to, sizeof(__u16)) ||
		    bpf_skb_store_bytes(skb, off, &to, sizeof(to), 0))
			return TCX_NEXT;
	}
	return TCX_NEXT;
}
