package eproxy

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// epollTargets returns the fds registered in this process's epoll
// instances (the Go runtime's netpoller among them), from /proc fdinfo.
func epollTargets(t *testing.T) map[int]bool {
	t.Helper()
	out := map[int]bool{}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		link, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil || link != "anon_inode:[eventpoll]" {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc/self/fdinfo", e.Name()))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "tfd:" {
				if n, err := strconv.Atoi(f[1]); err == nil {
					out[n] = true
				}
			}
		}
	}
	return out
}

func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// TestDupSocketLeavesTheNetpoller: the dup a spliced connection is kept
// as is not registered with Go's netpoller (a File from TCPConn.File is:
// the kernel's data-ready signal after each forwarded chunk would wake the
// process), and it stays a working socket after the TCPConn is closed.
func TestDupSocketLeavesTheNetpoller(t *testing.T) {
	c, s := tcpPair(t)
	var orig int
	raw, _ := c.SyscallConn()
	raw.Control(func(v uintptr) { orig = int(v) })
	if !epollTargets(t)[orig] {
		t.Skip("cannot see the netpoller's registrations in /proc/self/fdinfo")
	}
	f, err := c.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// f.Fd() would switch the shared socket to blocking; read it raw.
	var ffd int
	fr, _ := f.SyscallConn()
	fr.Control(func(v uintptr) { ffd = int(v) })
	if !epollTargets(t)[ffd] {
		t.Log("note: TCPConn.File's dup is not in the netpoller on this Go version")
	}

	dup, fd, err := dupSocket(c)
	if err != nil {
		t.Fatal(err)
	}
	defer dup.Close()
	if epollTargets(t)[fd] {
		t.Fatalf("dup fd %d is registered with an epoll instance of the process", fd)
	}
	c.Close()
	if _, err := s.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if n, err := readFD(fd, buf); err != nil || n != 1 || buf[0] != 'x' {
		t.Fatalf("read on the dup after closing the TCPConn: %d %v", n, err)
	}
}

// readFD reads a non-blocking fd, waiting for data with poll(2).
func readFD(fd int, b []byte) (int, error) {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if _, err := unix.Poll(pfd, 5000); err != nil {
		return 0, err
	}
	return unix.Read(fd, b)
}
