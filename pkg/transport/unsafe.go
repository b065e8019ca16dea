package transport

import "unsafe"

// unsafePointer is the address of a byte for a raw read or write syscall.
func unsafePointer(b *byte) unsafe.Pointer { return unsafe.Pointer(b) }
