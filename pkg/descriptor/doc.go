// Package descriptor defines the 16-byte message that moves through a SPRIGHT
// function chain in place of the request itself.
//
// The gateway copies a request body once into a slot of the chain's shared
// memory pool (package shm); from then on only a Descriptor travels: the
// gateway sends it on its socket, the eBPF sk_msg program (package bpf)
// redirects it to the socket of the instance named in Next, that instance
// reads the payload in place and sends a new descriptor on. The wire layout is
// a contract shared with the C program in bpf/spright.c (DESIGN §2):
//
//	offset size field
//	0      4    next  instance ID of the receiver (0 = the gateway)
//	4      2    chain chain ID (which pool the slot lives in)
//	6      2    flags bits 0-11 sender's (FlagError, FlagLast); 12-15 kernel's (FlagRejected + reason)
//	8      4    slot  slot index in the chain pool
//	12     4    len   payload length in bytes
//
// All fields are little endian. A receiver must never trust a descriptor:
// Validate checks it against the receiver's own view of the pool before any
// memory is touched.
package descriptor
