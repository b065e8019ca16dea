// Package hop measures the floor of one SPRIGHT descriptor hop: two
// connected loopback TCP sockets registered in the real eBPF sockhash
// (package bpf: the same sk_msg program, maps and checks as a chain) bounce
// one 16-byte descriptor back and forth, each write redirected by the
// program into the other socket's receive queue. Nothing else runs: no
// HTTP, no pool access, no routing, no SDK. What a chain spends per hop
// above this is its own (user-space) cost.
//
// Two ways of waiting for a descriptor are measured:
//
//   - ModeThread: each socket is read by its own OS thread in a blocking
//     read(2) (the kernel's floor: sendmsg → sk_msg → redirect → wake the
//     reader → read).
//   - ModeNetpoll: each socket is a net.TCPConn read by a goroutine, as the
//     gateway and the function SDK (pkg/transport.Socket) read theirs: the
//     reader parks in Go's netpoller (epoll) and is woken through it.
package hop

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spright-dev/spright/bpf"
	"github.com/spright-dev/spright/pkg/descriptor"
	"github.com/spright-dev/spright/pkg/transport"
	"github.com/spright-dev/spright/test/bench/internal/benchutil"
)

// Modes of waiting for a descriptor (see the package doc).
const (
	ModeThread  = "thread"
	ModeNetpoll = "netpoll"
)

// Options of one measurement.
type Options struct {
	// PinDir is where the eBPF maps are pinned for the run (on a bpf
	// filesystem; created, and removed at the end). Empty: a private bpf
	// filesystem mounted on a temporary directory for the run, so that
	// the host's /sys/fs/bpf is neither needed nor touched.
	PinDir   string
	Mode     string
	Duration time.Duration
	// Tick is the clock tick of /proc/stat (USER_HZ), for the host's CPU.
	Tick time.Duration
}

// Result is one measurement.
type Result struct {
	Mode    string  `json:"mode"`
	Hops    int64   `json:"hops"`
	Seconds float64 `json:"seconds"`
	// NsPerHop is wall time per hop: one descriptor from one socket's
	// write to the other socket's reader having it (a round trip is two).
	NsPerHop float64 `json:"ns_per_hop"`
	// CPUNsPerHop is the process's CPU (user+system, getrusage) per hop.
	CPUNsPerHop float64 `json:"cpu_ns_per_hop"`
	// HostCPUNsPerHop is the whole host's busy CPU (/proc/stat: user,
	// system, irq, softirq) per hop: kernel work not charged to the
	// process is in it, and so is anything else the host ran meanwhile.
	HostCPUNsPerHop float64 `json:"host_cpu_ns_per_hop"`
	// Drops are the program's drop counters after the run (must be 0).
	Drops uint64 `json:"drops"`
}

const (
	chainID  = 1
	instA    = 1
	instB    = 2
	slots    = 2
	slotSize = 4096
	// stopSlot marks the last descriptor: its receiver ends its loop.
	stopSlot = 1
)

// endpoint is one registered socket.
type endpoint struct {
	inst uint32
	conn *net.TCPConn
	peer *net.TCPConn // the other end of the loopback connection, never read
	fd   int          // ModeThread: a blocking duplicate of conn's fd
}

func pair() (c, p *net.TCPConn, err error) {
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	c, err = net.DialTCP("tcp4", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		return nil, nil, err
	}
	p, err = ln.AcceptTCP()
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	c.SetNoDelay(true)
	return c, p, nil
}

// Run loads the datapath under o.PinDir, registers two sockets and bounces
// a descriptor between them for o.Duration.
func Run(o Options) (res Result, err error) {
	if o.Mode != ModeThread && o.Mode != ModeNetpoll {
		return res, fmt.Errorf("hop: mode %q (want %s or %s)", o.Mode, ModeThread, ModeNetpoll)
	}
	if o.Duration <= 0 || o.Tick <= 0 {
		return res, errors.New("hop: need a positive duration and clock tick")
	}
	if o.PinDir == "" {
		mnt, err := os.MkdirTemp("", "spright-hop-")
		if err != nil {
			return res, err
		}
		if err := unix.Mount("bpf", mnt, "bpf", 0, "mode=0700"); err != nil {
			os.Remove(mnt)
			return res, fmt.Errorf("hop: mount a private bpf filesystem on %s: %w", mnt, err)
		}
		defer func() {
			unix.Unmount(mnt, unix.MNT_DETACH)
			os.RemoveAll(mnt)
		}()
		o.PinDir = mnt + "/spright"
	}
	dp, err := bpf.Load(o.PinDir)
	if err != nil {
		return res, err
	}
	defer func() {
		if uerr := dp.Unpin(); uerr != nil && err == nil {
			err = uerr
		}
		dp.Close()
		os.Remove(o.PinDir)
	}()
	if err := dp.SetChain(chainID, slots, slotSize); err != nil {
		return res, err
	}
	var eps [2]*endpoint
	for i, inst := range []uint32{instA, instB} {
		c, p, err := pair()
		if err != nil {
			return res, fmt.Errorf("hop: loopback pair: %w", err)
		}
		ep := &endpoint{inst: inst, conn: c, peer: p, fd: -1}
		defer func() {
			if ep.fd >= 0 {
				unix.Close(ep.fd)
			}
			c.Close()
			p.Close()
		}()
		if err := transport.ControlFD(c, func(fd int) error { return dp.AddSocket(inst, chainID, fd) }); err != nil {
			return res, err
		}
		if o.Mode == ModeThread {
			// A duplicate shares the socket; blocking mode is a property
			// of the open file, which Go's conn shares, but the conn is
			// not used for I/O in this mode.
			if err := transport.ControlFD(c, func(fd int) (err error) { ep.fd, err = unix.Dup(fd); return err }); err != nil {
				return res, err
			}
			if err := unix.SetNonblock(ep.fd, false); err != nil {
				return res, err
			}
		}
		eps[i] = ep
	}

	var ru0, ru1 unix.Rusage
	h0, err := benchutil.Proc.HostCPU()
	if err != nil {
		return res, err
	}
	unix.Getrusage(unix.RUSAGE_SELF, &ru0)
	start := time.Now()
	hops, err := bounce(o, eps[0], eps[1])
	wall := time.Since(start)
	unix.Getrusage(unix.RUSAGE_SELF, &ru1)
	h1, herr := benchutil.Proc.HostCPU()
	if err != nil {
		return res, err
	}
	if herr != nil {
		return res, herr
	}
	drops, err := dp.Drops()
	if err != nil {
		return res, err
	}
	for _, n := range drops {
		res.Drops += n
	}
	cpu := time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) * time.Nanosecond
	host := time.Duration(h1.Busy-h0.Busy) * o.Tick
	res.Mode, res.Hops, res.Seconds = o.Mode, hops, wall.Seconds()
	if hops > 0 {
		res.NsPerHop = float64(wall.Nanoseconds()) / float64(hops)
		res.CPUNsPerHop = float64(cpu.Nanoseconds()) / float64(hops)
		res.HostCPUNsPerHop = float64(host.Nanoseconds()) / float64(hops)
	}
	if res.Drops > 0 {
		return res, fmt.Errorf("hop: the program dropped %d descriptors (%v)", res.Drops, drops)
	}
	return res, nil
}

// side is how one end reads and writes its descriptors.
type side struct {
	read  func([]byte) error
	write func([]byte) error
}

func (ep *endpoint) side(mode string) side {
	if mode == ModeNetpoll {
		return side{
			read: func(b []byte) error { _, err := io.ReadFull(ep.conn, b); return err },
			write: func(b []byte) error {
				n, err := ep.conn.Write(b)
				if err == nil && n != len(b) {
					err = io.ErrShortWrite
				}
				return err
			},
		}
	}
	return side{
		read: func(b []byte) error {
			for got := 0; got < len(b); {
				n, err := unix.Read(ep.fd, b[got:])
				if err == unix.EINTR || err == unix.EAGAIN {
					// EAGAIN on a blocking socket: tcp_bpf's recvmsg
					// returns it when woken with the psock's queue
					// still empty (seen on 6.18); the descriptor is
					// still coming, so wait again.
					continue
				}
				if err != nil {
					return err
				}
				if n == 0 {
					return io.ErrUnexpectedEOF
				}
				got += n
			}
			return nil
		},
		write: func(b []byte) error {
			for {
				n, err := unix.Write(ep.fd, b)
				if err == unix.EINTR {
					continue
				}
				if err == nil && n != len(b) {
					err = io.ErrShortWrite
				}
				return err
			}
		},
	}
}

// bounce sends a descriptor from a to b and back until o.Duration is over,
// checking every descriptor that arrives, and returns the hops made.
func bounce(o Options, a, b *endpoint) (int64, error) {
	sa, sb := a.side(o.Mode), b.side(o.Mode)
	msg := func(next uint32, slot uint32) []byte {
		d := descriptor.Descriptor{Next: next, Chain: chainID, Slot: slot, Len: 16}
		bs := d.Bytes()
		return bs[:]
	}
	check := func(got []byte, want uint32) (stop bool, err error) {
		if n := binary.LittleEndian.Uint32(got[0:4]); n != want {
			return false, fmt.Errorf("hop: descriptor for instance %d arrived at %d (%x)", n, want, got)
		}
		return binary.LittleEndian.Uint32(got[8:12]) == stopSlot, nil
	}
	toB, toA, stopB := msg(instB, 0), msg(instA, 0), msg(instB, stopSlot)
	var wg sync.WaitGroup
	var berr error
	var bhops int64
	wg.Add(1)
	// b answers every descriptor until the stop mark.
	go func() {
		defer wg.Done()
		defer func() {
			if berr != nil {
				// Unblock a's read.
				a.conn.Close()
				if a.fd >= 0 {
					unix.Shutdown(a.fd, unix.SHUT_RDWR)
				}
			}
		}()
		if o.Mode == ModeThread {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
		}
		buf := make([]byte, descriptor.Size)
		for {
			if berr = sb.read(buf); berr != nil {
				return
			}
			stop, err := check(buf, instB)
			if err != nil {
				berr = err
				return
			}
			bhops++
			if stop {
				return
			}
			if berr = sb.write(toA); berr != nil {
				return
			}
		}
	}()
	if o.Mode == ModeThread {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
	}
	var ahops int64
	aerr := func() error {
		buf := make([]byte, descriptor.Size)
		deadline := time.Now().Add(o.Duration)
		for i := 0; ; i++ {
			if i%1024 == 0 && time.Now().After(deadline) {
				return sa.write(stopB)
			}
			if err := sa.write(toB); err != nil {
				return err
			}
			if err := sa.read(buf); err != nil {
				return err
			}
			if _, err := check(buf, instA); err != nil {
				return err
			}
			ahops++
		}
	}()
	if aerr != nil {
		// Unblock b's read.
		a.conn.Close()
		b.conn.Close()
		if b.fd >= 0 {
			unix.Shutdown(b.fd, unix.SHUT_RDWR)
		}
	}
	wg.Wait()
	if berr != nil {
		return 0, fmt.Errorf("hop: answering side: %w", berr)
	}
	if aerr != nil {
		return 0, aerr
	}
	// The stop mark is a hop too; a's hops are the answers it got.
	return ahops + bhops, nil
}
