//go:build !linux

package envtest

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
