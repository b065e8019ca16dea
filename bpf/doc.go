// Package bpf is SPRIGHT's in-kernel data path between the node gateway and
// the function instances of a node (DESIGN.md §1, §4), and its loader.
//
// # Place in the data path
//
// The gateway copies a request body into a slot of the chain's shared-memory
// pool (pkg/shm) and sends a 16-byte descriptor (pkg/descriptor: next,
// chain, flags, slot, len) with one sendmsg on its own socket. Every data
// path socket — the gateway's and one per function instance — is a connected
// TCP socket registered with AddSocket: it sits in a sockhash keyed by its
// instance ID, and the socket itself carries its sender identity (instance,
// chain). The sk_msg program (spright.c) runs on each sendmsg of such a
// socket, checks the descriptor and redirects it into the receive queue of
// the socket of instance `next` (bpf_msg_redirect_hash with BPF_F_INGRESS).
// The receiver reads the descriptor from its own socket, works on the slot
// in place and sends a descriptor on, to the next function or back to the
// gateway (next = 0). Nothing crosses the TCP connections themselves and no
// process polls: an idle chain costs no CPU, and a reader blocked in epoll
// (as Go's net.Conn.Read is) is woken by the redirect.
//
// The node agent (the gateway DaemonSet) is the only process that loads the
// program and owns the maps; EPROXY sidecars stay unprivileged and register
// their sockets through it (DESIGN.md §6a).
//
// # Checks
//
// For each sendmsg, in this order (the number is the DropReason):
//
//	0 DropShort          the message is not exactly 16 bytes
//	1 DropUnknownSender  the socket has no sender identity
//	2 DropSenderChain    the sender is not a member of desc.chain (AnyChain is a member of all)
//	3 DropNextChain      next is not the gateway and not registered in desc.chain (or AnyChain)
//	4 DropPoolRange      desc.chain has no pool (SetChain), or slot >= slots, or len > slot size
//	5 DropRedirect       next has no socket in the sockhash (closed, or removed)
//
// Every failure increments the counter of its reason (Drops). What the
// sender sees depends on the reason:
//
//   - Reasons 2-5 (a well-formed descriptor from a registered sender): the
//     descriptor is handed back to the sender's own socket, with FlagRejected
//     and the reason set in its flags (bits 15 and 12-14; the sender's bits
//     0-11 are kept). The sender's write succeeds (16 bytes); the NACK
//     arrives on its receive queue like any descriptor, so the sender must
//     check Rejected(flags) on what it reads and free or reuse the slot. Its
//     socket stays usable.
//   - Reasons 0 and 1: the program returns SK_DROP. The sender's write
//     fails with EACCES ("write: permission denied" from net.Conn.Write, 0
//     bytes written) and nothing is delivered anywhere. Beware: the kernel
//     (tcp_bpf, measured on 6.18) then keeps the socket's verdict at drop,
//     so every later write on that socket fails with EACCES too, without the
//     program running or the drop counter moving. The socket recovers only
//     when it leaves the sockhash and is added again (RemoveInstance, then
//     AddSocket). This is why checks that can be answered are answered with
//     a NACK rather than SK_DROP.
//
// A redirect is accepted once the receiver's socket is found; delivery
// happens after the program returns. If the receiver's socket cannot take
// the message (memory pressure), the sender's write fails (ENOMEM/EAGAIN
// class) although the hop was already counted.
//
// # Metrics (EPROXY)
//
// On every accepted redirect the program updates instance_metrics: the
// sender's Sent; if the sender is not the gateway, its ResponsesOut and
// Inflight-- (never below 0); if next is not the gateway, the receiver's
// RequestsIn and Inflight++. Before an instance's Inflight changes,
// BusyNs += Inflight × (now − LastNs) and LastNs = now (bpf_ktime_get_ns,
// CLOCK_MONOTONIC): BusyNs is the time integral of the concurrency, so the
// average concurrency over an interval is the difference of BusyNsAt at its
// ends divided by its length. Each entry has a bpf_spin_lock (accepted for
// sk_msg on the target kernels), so one entry's counters change together and
// Metrics/AllMetrics read them consistently (BPF_F_LOCK); the sender's and
// the receiver's entries are updated one after the other, so a reader may
// see a hop counted at the sender but not yet at the receiver. Entries are
// created (zeroed) by AddSocket; a missing entry is skipped, never a drop.
//
// # Maps and pins
//
// All maps are pinned by name under the pin directory (DefaultPinDir,
// /sys/fs/bpf/spright), which must be on a bpf filesystem:
//
//	sock_hash         SOCKHASH  u32 instance → socket (userspace reads the socket cookie)
//	sender_identity   SK_STORAGE socket → {u32 instance; u16 chain; u16 pad}
//	instance_chain    HASH      u32 instance → u16 chain
//	chain_pools       HASH      u16 chain → {u32 slots; u32 slot_size}
//	instance_metrics  HASH      u32 instance → 6×u64 counters + bpf_spin_lock (MetricsValueSize)
//	drops             ARRAY     u32 reason → u64
//
// The sender identity lives in socket-local storage, written from userspace
// with the socket's fd as key: it needs no cleanup (it dies with the socket)
// and cannot go stale when a connection is replaced. It stays on a socket
// after RemoveInstance, which is harmless because the program runs only for
// sockets in the sockhash.
//
// Load reuses compatible pins, so a restarted agent finds the sockets,
// registrations and counters of the running data path. The program stays
// attached to the pinned sockhash after Close: the data path keeps working
// while the agent is down. A new Load attaches its program for sockets
// added from then on; sockets already in the map keep the program they were
// added under (both use the same maps). Unpin plus Close of every user
// frees everything.
//
// # Regenerating
//
// spright_bpfel.o and spright_bpfel.go are generated by bpf2go from
// spright.c and committed; see gen.go for the command.
package bpf
