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
//     the EPROXY metrics map, on the sk_msg path of chained functions and on
//     the splice path of plain revisions. No userspace code counts requests.
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
//   - Stats: Window turns the eBPF counters into Knative's metrics.Stat
//     (average concurrency from the in-flight integral, requests per second,
//     uptime), computed lazily when the autoscaler scrapes, so an idle pod
//     wakes for nothing. Reporter pushes the same Stats to the autoscaler's
//     stat server over a websocket, as the activator does.
//
// Probes are answered with Knative's own code (knative.dev/serving's
// readiness prober and health handler, knative.dev/pkg's drainer), so
// Knative sees EPROXY exactly as it sees queue-proxy.
package eproxy
