/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Minimal stand-in for <linux/types.h> for BPF programs compiled with
 * clang -target bpf. The real uapi header pulls in <asm/types.h>, which
 * Debian ships under an architecture-specific directory
 * (/usr/include/x86_64-linux-gnu/asm) that clang does not search for the
 * bpf target. The BPF target is always LP64, so these definitions are the
 * same on every host, which keeps the generated objects reproducible.
 *
 * This file is ours (not vendored); the uapi headers it serves live in
 * third_party/libbpf/include/uapi.
 */
#ifndef _LINUX_TYPES_H
#define _LINUX_TYPES_H

typedef signed char __s8;
typedef unsigned char __u8;
typedef signed short __s16;
typedef unsigned short __u16;
typedef signed int __s32;
typedef unsigned int __u32;
typedef signed long long __s64;
typedef unsigned long long __u64;

#define __bitwise
typedef __u16 __bitwise __le16;
typedef __u16 __bitwise __be16;
typedef __u32 __bitwise __le32;
typedef __u32 __bitwise __be32;
typedef __u64 __bitwise __le64;
typedef __u64 __bitwise __be64;
typedef __u16 __bitwise __sum16;
typedef __u32 __bitwise __wsum;

#define __aligned_u64 __u64 __attribute__((aligned(8)))
#define __aligned_be64 __be64 __attribute__((aligned(8)))
#define __aligned_le64 __le64 __attribute__((aligned(8)))

#endif /* _LINUX_TYPES_H */
