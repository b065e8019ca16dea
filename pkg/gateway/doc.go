// Package gateway is the SPRIGHT gateway: the one place where a chain's
// requests enter and leave the kernel's TCP/HTTP stack (DESIGN §1).
//
// For each request it copies the body once into a slot of the chain's pool,
// resolves the chain's entry route, and sends one 16-byte descriptor to the
// chosen instance of the first function. The functions then pass descriptors
// to each other directly (sk_msg redirect, Direct Function Routing); the
// gateway sees the request again only when the last function returns the
// descriptor, builds the HTTP response from the slot and frees it.
//
// Handler is the chain's HTTP front; ListenHTTP is the listener to serve it
// on (spright run does): accepted connections skip TCP keep-alive probes
// and read and write with raw syscalls, which keeps the Go runtime's
// sysmon thread asleep between requests (see front.go).
//
// It also owns the node's side of every chain: the pools, the route tables,
// the eBPF datapath (sockhash, chain membership, bounds), and the control
// socket where function instances register. When an instance's control
// connection ends (the process died), the gateway reclaims exactly the
// slots that instance held and fails their requests with 502. A request that
// times out (504) leaves its slot with the function, which may still write
// it; the slot is freed when the late answer arrives or the function dies.
//
// A gateway restart keeps the data path: the eBPF maps stay pinned and the
// pools stay as root-only files named after the pin directory (hugetlbfs, or
// /dev/shm without hugepages). The next gateway reopens them, frees what the
// old gateway held and takes the members' slots back as they register again
// (see restart.go). Unpin (a clean standalone stop) removes pins and pools.
//
// Errors are HTTP statuses with a plain-text body saying why: 413 body larger
// than a slot, 503 pool full (with Retry-After) or no ready instance, 502 a
// member died or refused the descriptor, 504 the chain's timeout, 508 a
// routing loop, and the status a function set for its own failures.
package gateway
