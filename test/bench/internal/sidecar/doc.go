// Package sidecar runs Knative's real queue-proxy, SPRIGHT's EPROXY (same
// contract) and the HTTP function fixture (test/fixtures/httpfn) on one
// Linux box without Kubernetes, for benchmarks and tests.
//
// A pod is stood in for by a network namespace with only loopback up: the
// queue-proxy listens on fixed ports (8012 main, 8112 TLS, 8022 admin, 9090
// autoscaler metrics, 9091 request metrics; none but the main one is
// configurable) and forwards to 127.0.0.1:USER_PORT, exactly as in a pod, so
// each stack gets a namespace of its own and Knative's port numbers can be
// used unchanged. Processes are started with `ip netns exec`, which execs:
// the pid of a Process is the sidecar's (or function's) own, so its CPU can
// be read from /proc/<pid>/stat. The test process itself reaches into a
// namespace with NetNS.Dial (setns on a locked OS thread), and wrk runs with
// NetNS.Prefix.
//
// The queue-proxy is built from knative.dev/serving's cmd/queue with
// serving's own go.mod (BuildQueueProxy), i.e. with the dependency versions
// Knative released it with, and is given the environment the revision
// reconciler (pkg/reconciler/revision/resources/queue.go) gives it
// (QueueProxyEnv). Nothing in it talks to the Kubernetes API.
package sidecar
