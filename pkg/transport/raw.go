package transport

import (
	"io"
	"syscall"

	"golang.org/x/sys/unix"
)

// RawRead reads into b with one read(2) on rc's non-blocking socket,
// parking in the netpoller while there is nothing to read (EAGAIN; also
// what tcp_bpf answers when it woke a reader with its queue still empty).
// The syscall is raw: it skips the runtime's entersyscall, which wakes the
// sysmon thread whenever the process had gone idle — at one request at a
// time that was nearly every read (profiles of the hello chain put 15-26%
// of a process's CPU there). A non-blocking read does not block, which is
// what entersyscall is for. Errors are io.EOF, a syscall.Errno, or what
// RawConn.Read returns (deadline, closed); the caller wraps them.
func RawRead(rc syscall.RawConn, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	var n int
	var rerr error
	err := rc.Read(func(fd uintptr) bool {
		for {
			r, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafePointer(&b[0])), uintptr(len(b)))
			switch e {
			case 0:
				n = int(r)
				if n == 0 {
					rerr = io.EOF
				}
				return true
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false
			}
			rerr = e
			return true
		}
	})
	if err == nil {
		err = rerr
	}
	return n, err
}

// RawWrite writes all of b with raw write(2)s on rc's non-blocking socket,
// parking in the netpoller while it is full (see RawRead).
func RawWrite(rc syscall.RawConn, b []byte) (int, error) {
	var n int
	var werr error
	err := rc.Write(func(fd uintptr) bool {
		for n < len(b) {
			r, _, e := unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafePointer(&b[n])), uintptr(len(b)-n))
			switch e {
			case 0:
				n += int(r)
				continue
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false // wait until writable, then write the rest
			}
			werr = e
			return true
		}
		return true
	})
	if err == nil {
		err = werr
	}
	return n, err
}

// ControlFD runs fn with the raw fd of c (a socket or listener): to pass it
// over SCM_RIGHTS, put it in a map or set an option. The fd is valid only
// during fn.
func ControlFD(c syscall.Conn, fn func(fd int) error) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := raw.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}
