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
// (Reason 6, DropSplicePeer, belongs to the splice programs: see "Splice".)
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
//	splice_map        SOCKHASH  u64 socket cookie → socket (spliced sockets; see "Splice")
//	splice_peer       HASH      u64 socket cookie → {u64 peer_cookie; u64 conn; s64 outstanding; u32 instance; u8 side; 3 pad}
//	splice_sock       SK_STORAGE socket → same record as splice_peer (outstanding unused)
//	steer_ns          HASH      u64 netns cookie → {u32 instance; u16 from_port; u16 to_port; u32 enabled}
//	steer_src         HASH      {u64 netns; u32 addr[4]; u32 family} → u8 (clients to steer)
//	steer_flows       LRU_HASH  {u64 netns; client, server addr; client port; family} → steered connection
//
// Steered namespaces' TCX links are pinned there too, as
// steer-<netns cookie>-<ifindex>-<in|out> (see "Steer").
//
// The sender identity lives in socket-local storage, written from userspace
// with the socket's fd as key: it needs no cleanup (it dies with the socket)
// and cannot go stale when a connection is replaced. It stays on a socket
// after RemoveInstance, which is harmless because the program runs only for
// sockets in the sockhash.
//
// Load reuses compatible pins, so a restarted agent finds the sockets,
// registrations, splices and counters of the running data path. The
// programs stay attached to the pinned sockhashes after Close: the data path
// and spliced connections keep working while the agent is down. A new Load
// attaches its programs for sockets added from then on; sockets already in
// a map keep the programs they were added under (all use the same maps).
// Unpin plus Close of every user frees everything. An agent that closes
// (rather than a pod that leaves) leaves the pods' metrics entries in
// place: they keep counting the connections spliced or steered before, and
// a restarted agent hands an entry back to the pod that registers naming it
// as its previous instance, if it was that pod's (the agent pins a
// pod_owners map of its own next to these: instance → hash of the pod's
// namespace, revision and name) and no registered pod has it (package
// gateway, resumePod). An entry whose pod never comes back stays until Unpin, as one
// left by an agent that was killed.
//
// # Splice: EPROXY for plain revisions
//
// A revision that is not chained still gets EPROXY instead of queue-proxy
// (DESIGN.md §6). EPROXY accepts the client's connection on 8012 (side A),
// reads the first request in userspace (to answer Knative probes itself),
// dials the user container (side B) and asks the node agent to splice A and
// B (AddSplice; the agent holds the eBPF objects, EPROXY stays
// unprivileged). From then on the kernel forwards and no process touches
// the bytes:
//
//   - spright_splice_verdict, an SK_SKB stream verdict program on splice_map
//     (no stream parser), runs on every chunk (skb) arriving on A or B, finds
//     the peer in splice_peer by the socket's cookie and redirects the chunk
//     to the peer's egress (bpf_sk_redirect_hash, flags 0). A socket without
//     a record gets SK_PASS (its bytes stay for its owner's read). If the peer
//     is gone (closed), the chunk is dropped and counted as DropSplicePeer.
//   - spright_splice_msg, an SK_MSG program on splice_map, runs on every
//     sendmsg on A or B and counts. It always returns SK_PASS (SK_DROP would
//     break the socket, see "Checks").
//   - spright_splice_end, a TC program attached nowhere, is run by the agent
//     (BPF_PROG_TEST_RUN) when a splice is removed or pruned, to take the
//     connection's unanswered requests out of Inflight (see "Splice: cleanup
//     and bounds").
//
// Two sockhashes because a sockhash has one sk_msg program: sock_hash's is
// the descriptor program.
//
// Where requests are counted (adapted from the first design, which counted
// in the verdict and used the sk_msg program only for EPROXY's own write):
// the kernel sends redirected chunks with sendmsg on the peer, from the
// psock's backlog, and that runs the peer's sk_msg program (measured on
// 6.18). Counting in both programs would count every forwarded request
// twice, so the sk_msg program is the one counting point: a message going
// out of B (side 1, upstream) that starts with a request line is a request
// in (RequestsIn++, Inflight++); a message going out of A (side 0, client)
// that starts with a final status line is a response out (ResponsesOut++,
// Inflight-- never below 0). EPROXY's own write of the first request to B is
// counted the same way. The concurrency integral (BusyNs, LastNs) and the
// bpf_spin_lock discipline are those of the descriptor program; Sent is not
// used by splices. For a connection that carried N requests the counters
// move by exactly N each (tested with N = 1000).
//
// The test is a segment-start heuristic: only the first 12 bytes of a
// message are looked at. Requests: "GET ", "POST ", "PUT ", "DELETE ",
// "HEAD ", "OPTIONS ", "PATCH ", "CONNECT ", "TRACE " at offset 0.
// Responses: "HTTP/1.x NNN" with NNN from 200 to 599, or 101 (it ends the
// HTTP exchange; interim 100/102/103 are not counted). Messages shorter than
// 12 bytes count as neither. This works because HTTP/1.1 clients write a
// request (line and headers) with one write and servers write the status
// line first, so each request and response starts a message; a body chunk
// that happens to start with such bytes would be miscounted (the kernel may
// forward one chunk with several sendmsg calls, one per page fragment, each
// a message start: TestSplice saw 5.8k sk_msg runs for 4.2k verdict runs),
// and pipelined requests sharing a segment count once. HTTP/2 and other
// protocols are not counted.
//
// Helper availability decided the maps (verified on 6.18):
// bpf_get_socket_cookie is available to SK_SKB programs but not to SK_MSG;
// bpf_sk_storage_get the other way round. So the verdict looks up
// splice_peer by cookie, and the sk_msg program reads the same record from
// the socket's storage (splice_sock); AddSplice writes both.
//
// # Splice: order of use and bytes queued before the splice
//
// EPROXY, per client connection A:
//
//  1. Read the first request, headers and body, exactly (nothing beyond it);
//     check SIOCINQ(A) == 0. If the client sent more (pipelining), do not
//     splice this connection.
//  2. Dial B, AddSplice(instance, A, B) (through the agent), then
//     NewForwarding(B, A).
//  3. Write the first request to B (counted by the sk_msg program), then
//     NewForwarding(A, B), then KickSplice(A).
//  4. Watch A and B for hangup (HangupWatcher), see below.
//
// What happens to bytes in A's receive queue when it is spliced (measured on
// 6.18, pinned down by TestSpliceQueuedBytes):
//
//   - AddSplice does not forward them: the verdict runs only when TCP
//     signals data ready. They stay queued, invisible to SIOCINQ (on a
//     spliced socket it reports the psock's queue: 0).
//   - They are forwarded, in order, ahead of the new bytes, when the next
//     segment arrives; or at once by KickSplice (re-setting SO_RCVLOWAT
//     makes TCP signal data ready); or by any read on A: tcp_bpf's recvmsg
//     first runs the verdict over the TCP receive queue, so the reader gets
//     nothing and the peer gets the bytes. Userspace cannot read them any
//     more.
//   - A segment that userspace has read only partly is forwarded whole:
//     the verdict is handed the whole skb (tcp_read_skb ignores the part
//     already copied), so the bytes already read go out again. This is why
//     step 1 must leave nothing unread.
//   - Bytes arriving between AddSplice and EPROXY's write of the first
//     request would be forwarded before it (by construction: the verdict
//     forwards on arrival). Keep-alive HTTP/1.1 clients
//     send nothing before the response, so this needs a pipelining client
//     or a body still on its way (read it whole in step 1; a request with
//     "Expect: 100-continue" sends its body only after an interim response).
//
// # Splice: end of a connection
//
// The kernel does not forward a FIN: EPROXY learns that one side is done
// and closes (or shuts down) the other. Both ways of watching work, with
// different costs (TestSpliceCPU):
//
//   - A goroutine parked in net.Conn.Read on A or B stays parked: no spliced
//     byte is handed to it, and it returns io.EOF when the peer closes. But
//     after each forwarded chunk the kernel signals data ready on the socket
//     it arrived on, and Go's netpoller (EPOLLIN|EPOLLOUT|EPOLLET) reports
//     that as EPOLLOUT: about two netpoller wake-ups per request, 9 to 28
//     µs of the proxy's CPU per request in our runs.
//   - HangupWatcher watches with an epoll instance of its own that asks for
//     EPOLLRDHUP only, so those wake-ups are filtered out in the kernel.
//     With the sockets also taken out of Go's netpoller (dup the fd, close
//     the TCPConn), the proxy process used 0.01 to 0.4 µs per request (noise:
//     a few dozen context switches for 10000 requests).
//
// Forwarding is asynchronous: a chunk taken off one socket waits in the
// psock backlog of the other until that socket has room, and closing that
// socket (or RemoveSplice) discards the backlog. So on EOF from B, wait
// until Forwarding(B, A).Pending() is 0 before closing A (Wait), and the
// same the other way round; a client that half-closes after its request
// still wants the response (shutdown(B, SHUT_WR) instead of closing). Bytes
// already in the peer's TCP send queue are safe: close sends them before
// the FIN. In TestSpliceClose, 12.9 MB of a 16 MB response that the client
// had not read yet were still pending when B reached EOF; closing A at once
// truncated the response.
//
// There is no backpressure through a splice (measured on 6.18): the
// backlog is unbounded and taking a chunk off the source socket reopens its
// TCP window. An upstream wrote 512 MB through a splice whose client read
// nothing; 507 MB waited in the kernel, not counted in tcp_mem (sockstat
// showed 4.7 MB). TestSpliceNoBackpressure pins this down with 64 MB (60 MB
// waited in the backlog, 3 MB in A's send queue; all of it arrived intact
// once the client read). A slow or stalled client therefore lets the user container
// dump a whole response into kernel memory (and an uploading client a whole
// body, the other way). EPROXY does not bound it yet.
//
// Tried, with the maps as they are (TestSplicePauseBackpressure, an opt-in
// experiment kept as test code: SPRIGHT_SPLICE_PAUSE_EXPERIMENT=1): pause a
// splice while its up → down backlog is over a bound. The only place where
// bytes wait in order under TCP's flow control is the receive queue of a
// socket without a psock, so the pause takes B out of splice_map (its bytes
// stay queued, its window closes, the user container's writes block) and
// parks A's splice_peer record (else A's verdict would redirect the
// client's bytes to a socket not in splice_map, which drops them; without
// the record they pass to A's own queue — behind the up → down backlog,
// which sits in the same psock queue, so they show in SIOCINQ and can be
// read only once that backlog has drained). The record also holds the
// connection's outstanding count, so it is parked under another key and
// A's splice_sock storage pointed at it. Resuming puts B back and kicks it
// (the queued bytes go out first, in order), writes what the client sent
// meanwhile to B, then restores A's record. Measured on 6.18 with a 4 MiB
// bound, a loopback writer and a client reading about 50 MB/s, on a loaded
// 2-core VM: the writer did block and resumed, the client's bytes sent
// during a pause arrived in order; but (1) a controller that polls Pending
// (every 200 µs, or continuously) let the backlog reach 25-65 MB for 128 MB
// and 64-133 MB for 1 GB: a loopback writer fills tens of MB between two
// looks (B's receive buffer must also be capped, SO_RCVBUF: tcp_rmem's
// maximum is 32 MB on 6.18, all of which is forwarded at once on resume);
// and (2) in 7 of 18 runs of 1 GB the client received wrong bytes. With a
// stream whose 8-byte words are their own offsets: once 1776 bytes came
// twice; three times the bytes from exactly 65,483 bytes before B's byte
// count at a pause on were bytes B received megabytes later (3 bytes out
// of alignment) — the chunk the verdict was taking when B left splice_map
// was delivered from memory the kernel had reused. Taking a socket out of
// a sockmap while bytes arrive on it is not safe on this kernel (RemoveSplice
// is meant for connections at their end: both sides at EOF). Polling is also all EPROXY could do: no epoll readiness seems to
// tell a growing backlog (B is never readable, A is writable until its
// send queue is full and says nothing when it fills; reasoned from the
// poll masks, not measured), and polling every spliced connection wakes an
// idle pod. A bound that holds needs the kernel to check it
// where the bytes are taken: e.g. the verdict on B keeps a per-connection
// count of bytes taken minus bytes sent out of A (A's sk_msg program sees
// them), and over a budget returns SK_PASS (the bytes go to B's own psock
// queue, charged to B's receive memory, so B's window closes: real
// backpressure) and keeps doing so, under the record's lock, until A's
// sk_msg program has seen everything taken go out (EPROXY meanwhile reads
// what waits in B and writes it to A, which counts as sent). Aborting
// connections over a limit (the other fallback) has the same detection
// delay and fails legitimate slow downloads of large responses.
//
// # Splice: cleanup and bounds
//
// The programs see no close. A request counted in whose response never goes
// out — the client gave up, the user container died or closed — would keep
// Inflight (and BusyNs growing) forever, and an instance that never looks
// idle does not scale to zero. So each connection counts its outstanding
// requests in the record of its client-side socket (conn, the record's key:
// +1 with each request, -1 with each response), and RemoveSplice, once the
// sockets have left splice_map, runs spright_splice_end, which takes what is
// left out of the instance's Inflight under the entry's lock (RequestsIn
// and ResponsesOut stay as they are; the busy time up to then stays
// counted). PruneSplices does the same for connections closed without
// RemoveSplice, so an agent that may miss RemoveSplice calls (EPROXY killed)
// must prune now and then: until it does, such requests stay in flight.
//
// A closed socket leaves splice_map by itself, and its splice_sock record
// dies with it. splice_peer (a HASH of 65536 entries, the size of
// splice_map) is cleaned by RemoveSplice; records of sockets closed without
// it stay until PruneSplices drops them (it drops the records whose cookie
// is no longer in splice_map), which AddSplice does by itself when
// splice_peer is full: the map is bounded and a live splice is never
// evicted (unlike an LRU map). A stale record never matches a new socket:
// socket cookies are never reused.
//
// # Splice: cost
//
// Measured with the client and the upstream in a child process, 10000
// keep-alive requests (200-byte bodies, 2000-byte responses) on one
// connection, over eight runs on a busy 2-vCPU VM (TestSpliceCPU): the
// splicing proxy process used 0.01-0.4 µs per request with HangupWatcher
// (9-28 µs with parked reads); a userspace io.Copy proxy 30-63 µs and a
// read/write proxy 30-43 µs. The forwarding work moves into the kernel's
// workqueue threads (kworkers: 18-30 µs per request, not charged to the
// pod's cgroup), and the programs run about 0.7-1.1 µs per request each
// (bpf run-time stats: two verdict runs and about two sk_msg runs). So the
// sidecar becomes free, but the node does not: spliced, each request
// crosses the workqueue twice, which costs about as much CPU as a Go
// userspace proxy (io.Copy between TCP sockets is splice(2) in Go) and adds
// latency (BenchmarkSplice, all in one process: 85-99 µs per request
// spliced against 60-63 µs with io.Copy on a quieter moment; both about
// twice that under load).
//
// # Steer: EPROXY without forwarding
//
// Splicing frees the sidecar but not the node: every byte still crosses
// the kernel's workqueue twice (see "Splice: cost"). Steering forwards
// nothing. EPROXY sends its traffic listener (QUEUE_SERVING_PORT, 8012)
// to the agent, which finds the pod's network namespace from it
// (SIOCGSKNS, SO_NETNS_COOKIE), attaches spright_steer with TCX to ingress
// and egress of every interface there (lo: ingress only, which loopback
// packets pass both ways), pins the links, and records the
// namespace's policy in steer_ns (Steer). From then on:
//
//   - A SYN to from_port (8012) whose client address is in steer_src for
//     that namespace, while the policy is enabled, starts a steered flow
//     (steer_flows). Every packet of the flow has its destination port
//     rewritten to to_port (the user container's port, 8080) on the way
//     in and its source port back on the way out, with TCP's checksum
//     patched (bpf_l4_csum_replace: ports are not in the pseudo header).
//     The user container accepts the connection itself and answers on it;
//     no process between them, no copy, and TCP's own flow control works
//     end to end (a slow client blocks the user container's writes, as
//     with queue-proxy). The address is kept: the user container must
//     accept on the address the client dialled (EPROXY checks once per
//     address before it asks for a client to be steered).
//   - Counting, for the policy's instance, in the program: a packet to
//     the user container whose payload starts a request line is a request,
//     one from it that starts a final status line a response (the splice's
//     segment-start heuristic and its limits). The sequence number after
//     each counted segment is kept per flow, so a retransmission is not
//     counted again. A flow counts its unanswered requests; an RST either
//     way or the user container's FIN takes them out of Inflight, once.
//     TestSteer: 500 requests on one steered connection (2% 10 KB bodies)
//     count exactly 500 in and out; a request the user container drops
//     leaves Inflight when it closes.
//   - Everything else passes untouched: connections opened before their
//     client was steered, clients not in steer_src, connections while the
//     policy is disabled (EPROXY drains), and EPROXY's own connections to
//     the user container (their destination is to_port, not from_port,
//     and no flow names them). On loopback, where client and server share
//     an address, one EPROXY upstream connection could in principle pick
//     the same ephemeral port as a steered client; pods' clients come over
//     eth0 with their own addresses, where this cannot happen.
//
// Which clients: EPROXY decides, from the first request of each connection
// it still serves itself (pkg/eproxy, steer.go): a client sending plain
// traffic is added, a client that sends Knative probes or the activator's
// requests is never steered (its probes must reach EPROXY's prober and
// drainer), nor are the pod's default gateways (the node, where the
// kubelet probes from). The decision is per connection at its SYN; a
// connection that reached EPROXY from a client it then steers carries only
// that first request (answered with Connection: close), so a client that
// pools its connections, as the ingress does, reconnects once and is
// steered from then on.
//
// Lifetime: the links are pinned, so steered connections survive an agent
// restart, and a flow is counted for the instance the namespace's policy
// names at each packet, so after the pod registers again (a new instance)
// the autoscaler keeps seeing the connections steered before; a pod whose EPROXY goes away has its policy disabled (steered
// connections finish, new ones go to port 8012 again); a namespace that is
// gone (the kernel detached its links: TCX reports ifindex 0) is forgotten
// by the next Steer. The agent refuses to steer its own namespace (several
// EPROXYs there would share one policy).
//
// Cost (make bench, sidecar): see test/bench/RESULTS.md, eproxy against
// eproxy-splice and direct.
//
// # Regenerating
//
// spright_bpfel.o and spright_bpfel.go are generated by bpf2go from
// spright.c and committed; see gen.go for the command.
package bpf
