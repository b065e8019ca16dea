// Package control is the node's unix control socket between the gateway and
// chain members: registration, and the hand-over of file descriptors that
// must never be reachable through a path.
//
// It is a SOCK_SEQPACKET socket (one JSON message per packet, file
// descriptors attached with SCM_RIGHTS):
//
//	member  → gateway  Hello{chain, function}
//	gateway → member   Welcome{instance, chain ID, function index, mode}
//	                   + fds: pool memfd, EPROXY metrics map (read-only; sk_msg mode)
//	member  → gateway  Join{} + fd: the member's descriptor socket (sk_msg mode)
//	gateway → member   Joined{}  (the socket is in the sockhash, routes updated)
//
// An EPROXY sidecar of a plain (not chained) revision registers its pod
// instead:
//
//	eproxy  → gateway  Pod{namespace, revision, podName}
//	gateway → eproxy   Welcome{instance} + fd: EPROXY metrics map (read-only)
//	eproxy  → gateway  Splice{} + fds: client socket, upstream socket   (per connection)
//	gateway → eproxy   Spliced{} or Error{}
//	eproxy  → gateway  Unsplice{} + the same 2 fds                   (per connection end)
//	eproxy  → gateway  Count{side} + 1 fd     (a userspace-proxied socket: eBPF counts it)
//	gateway → eproxy   Spliced{} or Error{}
//
// The connection then stays open for the member's lifetime: its end-of-file is
// how the gateway learns that an instance died and reclaims its slots.
// Instance IDs are assigned by the gateway and never reused while it runs.
package control
