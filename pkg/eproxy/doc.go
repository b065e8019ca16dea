// Package eproxy is EPROXY, the event-driven replacement for Knative's
// queue-proxy (paper §3.3, DESIGN §6).
//
// Knative's queue-proxy sits in every pod, parses every request twice,
// counts it in userspace and forwards it. EPROXY keeps the queue-proxy
// contract (ports, env vars, probes, drain, the autoscaler's Stat on :9090)
// but moves the per-request work into the kernel:
//
//   - Counting: eBPF programs (package bpf) count requests in, responses
//     out, in-flight and the time integral of in-flight per pod instance in
//     the EPROXY metrics map, on the sk_msg path of chained functions, on
//     the splice and steer paths of plain revisions, and on the connections
//     EPROXY proxies in userspace (registered with the agent for counting).
//     Userspace counts only what the kernel cannot (counts.go): the
//     requests of connections EPROXY accepted while no node agent was there
//     to register them (EPROXY then proxies every request itself), with the
//     same semantics (a userspace tally of requests, in-flight and its time
//     integral on CLOCK_MONOTONIC). Each connection is counted in one place
//     for its whole life, so nothing is counted twice; Server.OwnCounters
//     and ProxiedCounters add up the kernel entry (read through the agent;
//     while it is away its last reading stands), a base kept from entries
//     that are gone, and the tally. An agent that restarts on its kept pins
//     keeps the pod's entries (they go on counting spliced and steered
//     connections meanwhile) and hands them back when EPROXY registers again
//     naming its previous instance (control.Message.Previous, Resumed):
//     across such a restart the totals are exact. An agent that comes back
//     without its maps starts a new entry: what the old one counted after
//     EPROXY's last reading is lost, and connections counted there are
//     counted in userspace from then on.
//   - Telling traffic apart: behind the breaker (containerConcurrency > 0)
//     a connection is counted by the kernel from its first byte, before
//     EPROXY has read a request, in the pod's own entry. So EPROXY itself
//     keeps two tallies of what it answers on such connections, as they
//     start and for as long as they run: Knative's probes (the Window takes
//     them off the requests and their time off the concurrency; a window
//     with only probes reports exactly nothing) and the activator's
//     requests (K-Proxy-Request: activator; the Window moves them to the
//     Stat's proxied part, as queue-proxy counts them). On connections the
//     agent splices, the activator's are counted in the pod's proxied entry
//     by the kernel.
//   - Forwarding (plain revisions): none, for most connections. EPROXY
//     reads the first request of each connection it is given, to tell
//     Knative's probes from traffic; a client that sends traffic is then
//     steered (steer.go, package bpf "Steer"): EPROXY answers that first
//     request itself with Connection: close, and the client's next
//     connections are rewritten in the kernel to the user container's own
//     port and counted there, and never reach EPROXY. The connections EPROXY still gets
//     (a client's first ones, the activator's, probes) are spliced to the
//     user container in the kernel (sk_skb redirect), so their later
//     requests never reach userspace either. SPRIGHT_STEER=false splices
//     every connection; a revision with containerConcurrency > 0 is never
//     steered or spliced (its requests must pass the breaker).
//     What queue-proxy does per request and a steered or spliced
//     connection does not: the revision timeout (504), the Host and
//     Knative header rewrites and X-Forwarded-For.
//   - Stats: Window turns the counters into Knative's metrics.Stat
//     (average concurrency from the in-flight integral, requests per second,
//     uptime), computed lazily when the autoscaler scrapes, so an idle pod
//     wakes for nothing. EPROXY's Window (NewPodWindow) lives as long as the
//     process and its first Stat covers the time since the start, so the
//     autoscaler's first scrape sees the requests that came before it. The
//     stat endpoint always answers, agent or not. Reporter pushes the same
//     Stats to the autoscaler's stat server over a websocket, as the
//     activator does.
//   - Memory: a steered connection is the user container's own socket
//     (TCP's flow control end to end); with steering on, the connections
//     EPROXY still gets are proxied in userspace with kernel buffers of
//     Server.ConnBuffer (SPRIGHT_PROXY_BUFFER_BYTES), not spliced, because
//     a spliced connection has no backpressure (package bpf, "There is no
//     backpressure through a splice"): a client that reads slowly would let
//     the user container put a whole response in kernel memory. EPROXY
//     still splices when steering is off or unavailable, unbounded; see
//     that section for what was tried.
//
// Probes are answered with Knative's own code (knative.dev/serving's
// readiness prober and health handler, knative.dev/pkg's drainer), so
// Knative sees EPROXY exactly as it sees queue-proxy.
package eproxy
