package redirect

// Regenerate the committed eBPF object and its Go bindings
// (redirect_bpfel.o, redirect_bpfel.go) after changing redirect.c, from the
// repository root:
//
//	go generate ./bpf/redirect/
//
// Same toolchain and reproducibility rules as ../gen.go: clang and
// llvm-strip from Debian, only headers from this repository
// (../include, ../../third_party/libbpf), bpfel only.

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -strip llvm-strip -cflags "-O2 -g -Wall -Werror -I../include -I../../third_party/libbpf -I../../third_party/libbpf/include/uapi" -target bpfel redirect redirect.c
