// Package peerwatch is the Kubernetes side of chains across nodes: it finds
// a node gateway's peers — the other pods of the gateway DaemonSet — and
// keeps the gateway linked to each (gateway.ConnectPeer with the pod's node
// name and IP, ForgetPeer when the pod goes), and it provides the cluster's
// pre-shared peer key from a Secret in the gateways' namespace, creating it
// with random bytes the first time (EnsureKey), so `ko apply -f config/`
// needs no extra step. The key proves membership (package peer): a process
// that cannot read the Secret cannot join a chain on any node.
package peerwatch
