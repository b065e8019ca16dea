// Package wasm adds custom protocol adapters loaded at run time as
// WebAssembly modules (paper §3.5 loads shared libraries; here the module
// runs sandboxed in wazero, inside the gateway process, and a misbehaving
// module can only fail its own messages).
//
// A wasm adapter attaches to a chain's HTTP point like a built-in one:
//
//	curl -X PUT '127.0.0.1:9091/adapters/http?name=wasm&module=/abs/path/adapter.wasm'
//	curl -X DELETE 127.0.0.1:9091/adapters/http
//
// (name=wasm:/abs/path/adapter.wasm is the same thing). The module is read
// and compiled when it is attached; a file that is not a module, or a
// module that does not follow the ABI below, is refused (400) and what was
// attached stays attached.
//
// # Guest ABI
//
// All integers are wasm i32/i64; pointers are offsets into the module's
// exported memory. The module must export
//
//	memory                                   its linear memory
//	alloc(size i32) i32                      a buffer of size bytes for the host to write the input into
//	adapt_request(ptr, len i32) i64          HTTP request body -> packed output
//
// and may export
//
//	adapt_response(ptr, len i32) i64         chain's answer -> packed HTTP response body
//
// An i64 result packs an output buffer as ptr<<32 | len. The output of
// adapt_request is "topic\n" followed by the payload (the topic is the
// bytes before the first '\n'; the payload, possibly empty, is everything
// after it). The output of adapt_response is the response body as it is;
// without adapt_response the chain's answer is sent unchanged (no copy).
// The host calls alloc(len(input)), writes the input there, then calls the
// adapt function with that buffer; the input buffer may be modified and
// returned as (part of) the output.
//
// The module may import nothing: no WASI, no host functions, hence no
// files, network, clock or randomness. A module with a start function may
// use it to initialise itself (it runs on every call, within the deadline).
//
// # Sandbox and errors
//
// Every call (Ingress: adapt_request; Egress: adapt_response) gets a fresh
// instance of the compiled module, closed when the call returns: calls run
// concurrently without sharing guest state, a bump allocator that never
// frees is fine, and a trapped or timed-out instance is never reused.
// Instantiation of a compiled module costs microseconds for small modules.
// Each instance is limited to Config.MemoryLimitPages of memory (default
// 256 pages, 16 MiB) and each call to Config.Timeout (default 1 s, enforced
// by wazero's WithCloseOnContextDone, which interrupts even a tight loop).
// Failures are adapter.Error values the front end answers with:
//
//	502 adapter trapped: <trap>               unreachable, out-of-bounds access, memory limit, …
//	502 adapter returned a bad output: <why>  output outside memory, no topic line
//	504 adapter timed out after <timeout>
//	413 body larger than Config.MaxBody       (default 1 MiB)
//	499 (nothing sent)                        the client went away mid-call
//
// The gateway goroutine is never blocked past the deadline and never
// crashes; the next message gets a fresh instance.
//
// The test modules in testdata are committed as WebAssembly text (.wat) and
// binary (.wasm); go generate (testdata/gen.sh) rebuilds the binaries with
// wat2wasm (Debian package wabt), and TestModulesMatchSource checks they
// are in sync when wat2wasm is installed.
package wasm

//go:generate sh testdata/gen.sh
