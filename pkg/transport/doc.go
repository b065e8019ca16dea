// Package transport moves descriptors between the gateway and chain members.
//
// Socket is the event-driven path (DESIGN §1, §4): a TCP socket whose fd is
// placed in the eBPF sockhash. Sending a 16-byte descriptor on it runs the
// sk_msg program, which redirects it into the receive queue of the socket
// registered under the descriptor's `next`; the receiver is woken by the
// kernel like for any other socket read. Nobody polls: an idle chain sleeps
// in read(2) and costs no CPU.
//
// Ring is the paper's comparison point (DPDK-style): descriptors go through
// lock-free rings in the chain pool and every receiver busy-polls its ring.
// It exists to measure the trade-off, not for production; it has no kernel
// isolation (any member can write any ring), and it burns a core per
// receiver when idle.
package transport
