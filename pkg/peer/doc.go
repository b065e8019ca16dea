// Package peer is the link between two node agents (gateways) that serve
// the same chain on different nodes: the one place where a request's
// payload leaves a node's shared memory.
//
// A chain's members may run on several nodes. On each node the gateway
// advertises to its peers which functions it has instances of (Serve); a
// peer represents each such remote function by a proxy instance in its own
// route table, so a remote instance is a route target like a local one
// (DESIGN §3: instances by ID). When a function picks the proxy, its
// descriptor reaches the gateway as for any instance; the gateway sends the
// slot's header and payload over the persistent connection to that peer
// (Request) — the payload crosses once per inter-node hop — and the peer
// copies it into a slot of its own pool and sends a descriptor to one of
// its instances: descriptors stay local on each side. When the chain is
// done on whichever node, the answer goes straight to the node where the
// request entered (Result), which completes it in the slot it kept.
//
// Wire format: every frame is length-prefixed binary (encode.go), at most
// MaxFrame bytes, and carries an HMAC-SHA256 over a per-direction sequence
// number and the frame, keyed by a session key. Session keys come from a
// mutual challenge-response handshake over a pre-shared cluster key
// (handshake.go): a node that does not hold the key can neither connect
// nor be connected to, and cannot inject, replay or reorder frames on a
// connection. (Confidentiality is not provided: payloads travel in the
// clear, as on Knative's default mesh-less data path; run the peer port
// on the node network only.)
//
// Anything malformed — a bad MAC, a frame too long, an unknown type, a
// field out of range — ends the connection with an error (the caller
// counts it); nothing panics (fuzzed: FuzzDecode, FuzzConn).
package peer
