package bpf

// Regenerate the committed eBPF object and its Go bindings
// (spright_bpfel.o, spright_bpfel.go) after changing spright.c, from the
// repository root:
//
//	go generate ./bpf/
//
// which runs, in this directory:
//
//	go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -strip llvm-strip -cflags "-O2 -g -Wall -Werror -Iinclude -I../third_party/libbpf -I../third_party/libbpf/include/uapi" -target bpfel -type sender_id -type pool -type metrics -type splice_info -type steer_policy -type steer_source -type steer_flow_key -type steer_flow spright spright.c
//
// Needs clang and llvm-strip (Debian 12: clang-14, llvm-14). Only headers
// from this repository are used (include/, ../third_party/libbpf) and bpf2go
// maps the source directory out of the debug info, so the output depends on
// the clang version alone and is byte-identical from any checkout path. Only
// bpfel is built: the data path runs on x86_64 and arm64.

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -strip llvm-strip -cflags "-O2 -g -Wall -Werror -Iinclude -I../third_party/libbpf -I../third_party/libbpf/include/uapi" -target bpfel -type sender_id -type pool -type metrics -type splice_info -type steer_policy -type steer_source -type steer_flow_key -type steer_flow spright spright.c
