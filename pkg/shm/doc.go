// Package shm is the per-chain shared-memory pool: the one place a request's
// bytes live between the gateway copying them in and the gateway writing the
// response out (DESIGN §3).
//
// A ChainPool is a memfd (MFD_HUGETLB when the node has hugepages reserved,
// normal pages otherwise, with a log line saying so), or for a gateway that
// must be able to restart, a named file (CreateNamed / OpenNamed: hugetlbfs,
// or /dev/shm) that outlives the gateway process. It holds, in order:
//
//	pool header (4 KiB)     magic, geometry, free-list head, free count
//	slot headers            128 B each: state, owner, generation, request
//	                        metadata (topic, itinerary, status, timestamps)
//	region                  fixed-size area for the route table (package
//	                        routing) and, in poll mode, descriptor rings
//	slot data               SlotSize bytes each, page aligned
//
// The free list is a tagged Treiber stack in the pool itself, so any process
// that maps the pool (gateway or chain member) can allocate and free with
// atomics only. Every slot records the instance that currently holds it; when
// an instance dies the gateway reclaims exactly its slots (ReclaimOwner), so a
// kill -9 leaks nothing. A slot's state is changed with compare-and-swap, so a
// slot can never be freed twice, whatever races a crash produces.
//
// Members never open a pool by path: its fd is passed to verified chain
// members over the node's control socket (SCM_RIGHTS). A named pool's file
// is root-only (0600 in a 0700 directory), for the restarted gateway alone;
// reopening checks the header and geometry and rebuilds the free list from
// the slot states (only the gateway allocates and frees).
package shm
