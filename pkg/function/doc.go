// Package function is the Go SDK for zero-copy SPRIGHT functions.
//
// A function registers with the node gateway over the unix control socket,
// receives its chain's pool (memfd) and joins the data path, then serves
// descriptors:
//
//	function.Run(ctx, function.Options{Chain: "hello", Function: "upper"},
//		function.HandlerFunc(func(m *function.Message) error {
//			p := m.Payload() // a slice into the shared pool: no copy
//			for i, c := range p {
//				if 'a' <= c && c <= 'z' {
//					p[i] = c - 32
//				}
//			}
//			return nil // forward in place along the chain's route
//		}))
//
// After the handler returns, the SDK consults the chain's route table (in
// the pool, no syscall), picks the instance of the next function with the
// most residual capacity and sends the 16-byte descriptor straight to it:
// the gateway is involved only at the chain's entry and exit. A handler
// error, an unreachable next function or a routing loop sends the request
// back to the gateway as an error the client sees.
//
// Descriptors are read by one goroutine and handled by Options.Workers
// worker goroutines; with Workers = 1 the reading goroutine handles each
// one itself (run to completion), which is cheapest for short handlers.
//
// Every descriptor received is validated against the pool (chain, slot,
// length, and that the slot was handed to this instance) before any byte is
// touched; bad ones are dropped and counted, never trusted.
package function
