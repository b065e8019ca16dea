package redirect

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ethtool commands (linux/ethtool.h) for the legacy SIOCETHTOOL ioctl.
const (
	ethtoolGTXCSUM = 0x16
	ethtoolSTXCSUM = 0x17
)

type ethtoolValue struct {
	cmd  uint32
	data uint32
}

// txChecksum reads (set == nil) or sets TX checksum offload of ifname in the
// caller's netns and returns the value it had.
//
// Why: a veth passes packets from its sender with CHECKSUM_PARTIAL (the
// TCP checksum not yet computed, left to the "hardware"). An XDP frame
// carries no such mark, so a packet XDP_REDIRECTed out of a veth arrives
// with a wrong checksum and the receiver drops it (TcpInCsumErrors,
// measured on 6.18). In ModeXDP the pod side therefore computes checksums
// in software.
func txChecksum(ifname string, set *bool) (bool, error) {
	if len(ifname) >= unix.IFNAMSIZ {
		return false, fmt.Errorf("interface name %q too long", ifname)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("ethtool socket: %w", err)
	}
	defer unix.Close(fd)
	call := func(v *ethtoolValue) error {
		// struct ifreq: 16 bytes of name, then the union (ifr_data).
		var ifr [40]byte
		copy(ifr[:unix.IFNAMSIZ], ifname)
		*(*uintptr)(unsafe.Pointer(&ifr[unix.IFNAMSIZ])) = uintptr(unsafe.Pointer(v))
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr[0])))
		runtime.KeepAlive(v)
		if errno != 0 {
			return errno
		}
		return nil
	}
	g := ethtoolValue{cmd: ethtoolGTXCSUM}
	if err := call(&g); err != nil {
		return false, fmt.Errorf("ethtool get tx-checksumming of %s: %w", ifname, err)
	}
	old := g.data != 0
	if set != nil && *set != old {
		s := ethtoolValue{cmd: ethtoolSTXCSUM}
		if *set {
			s.data = 1
		}
		if err := call(&s); err != nil {
			return old, fmt.Errorf("ethtool set tx-checksumming of %s: %w", ifname, err)
		}
	}
	return old, nil
}
