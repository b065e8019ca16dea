package transport

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"

	"github.com/spright-dev/spright/pkg/descriptor"
)

// Transport sends and receives descriptors.
type Transport interface {
	// Send delivers one descriptor towards d.Next.
	Send(d descriptor.Descriptor) error
	// Recv blocks until a descriptor arrives.
	Recv() (descriptor.Descriptor, error)
	Close() error
}

// Socket is a descriptor socket for the sk_msg data path.
//
// Its reads and writes are raw syscalls on the non-blocking fd, made
// through the conn's RawConn: Go's netpoller still parks a reader until
// the socket is readable (and a writer until it is writable), and the
// conn's locks still order concurrent writers, but the syscalls skip the
// runtime's entersyscall/exitsyscall. Those would wake the runtime's
// sysmon thread whenever the process had gone idle, i.e. on nearly every
// descriptor of a lightly loaded chain, and profiles of the hello chain at
// one request at a time put about a fifth of each process's CPU in that
// thread's wake-ups and sleeps. A non-blocking read or write of a few
// descriptors never blocks, which is what entersyscall is for.
type Socket struct {
	conn *net.TCPConn
	peer *net.TCPConn // the other end: kept open, never read
	raw  syscall.RawConn
	// buf holds what one read returned (up to readBatch descriptors, so a
	// burst is taken in one syscall); buf[off:end] is not consumed yet.
	// Only Recv's goroutine touches it.
	buf      [readBatch * descriptor.Size]byte
	off, end int
}

// readBatch is how many descriptors one read may take off the socket.
const readBatch = 64

// NewSocket creates a connected TCP pair on the loopback of the current
// network namespace and returns the end that joins the sockhash. The loopback
// must be up (in a fresh netns: ip link set lo up).
func NewSocket() (*Socket, error) {
	l, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("transport: descriptor socket: listen on loopback (is lo up in this netns?): %w", err)
	}
	defer l.Close()
	type res struct {
		c   *net.TCPConn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := l.AcceptTCP()
		ch <- res{c, err}
	}()
	conn, err := net.DialTCP("tcp4", nil, l.Addr().(*net.TCPAddr))
	if err != nil {
		return nil, fmt.Errorf("transport: descriptor socket: dial loopback: %w", err)
	}
	r := <-ch
	if r.err != nil {
		conn.Close()
		return nil, fmt.Errorf("transport: descriptor socket: accept: %w", r.err)
	}
	conn.SetNoDelay(true)
	raw, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		r.c.Close()
		return nil, fmt.Errorf("transport: descriptor socket: %w", err)
	}
	return &Socket{conn: conn, peer: r.c, raw: raw}, nil
}

// Control runs fn with the raw fd of the socket that joins the sockhash
// (to pass it over SCM_RIGHTS or put it in a map). The fd is valid only
// during fn.
func (s *Socket) Control(fn func(fd int) error) error { return ControlFD(s.conn, fn) }

// Send writes one descriptor in one sendmsg. A descriptor the kernel program
// refuses (invalid, wrong chain, receiver gone) fails the write.
func (s *Socket) Send(d descriptor.Descriptor) error {
	b := d.Bytes()
	n, err := RawWrite(s.raw, b[:])
	if err != nil {
		return fmt.Errorf("transport: send %v: %w", d, s.wrapOpErr("write", err))
	}
	if n != descriptor.Size {
		return fmt.Errorf("transport: send %v: short write %d", d, n)
	}
	return nil
}

// wrapOpErr gives a raw errno the shape net.Conn's errors have ("write
// tcp A->B: write: permission denied"), which logs and callers know.
func (s *Socket) wrapOpErr(op string, err error) error {
	if errno, ok := err.(syscall.Errno); ok {
		return &net.OpError{Op: op, Net: "tcp", Source: s.conn.LocalAddr(), Addr: s.conn.RemoteAddr(), Err: os.NewSyscallError(op, errno)}
	}
	return err
}

// ErrClosed is returned by Recv after Close.
var ErrClosed = errors.New("transport: closed")

// Recv reads the next descriptor from the socket's receive queue.
func (s *Socket) Recv() (descriptor.Descriptor, error) {
	for s.end-s.off < descriptor.Size {
		if err := s.fill(); err != nil {
			if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
				return descriptor.Descriptor{}, ErrClosed
			}
			return descriptor.Descriptor{}, fmt.Errorf("transport: recv: %w", err)
		}
	}
	d, err := descriptor.Unmarshal(s.buf[s.off : s.off+descriptor.Size])
	s.off += descriptor.Size
	return d, err
}

// fill reads what the socket has (at least one byte) after the bytes not
// consumed yet, waiting in the netpoller while there is nothing.
func (s *Socket) fill() error {
	if s.off > 0 {
		s.end = copy(s.buf[:], s.buf[s.off:s.end])
		s.off = 0
	}
	n, err := RawRead(s.raw, s.buf[s.end:])
	if err != nil {
		return s.wrapOpErr("read", err)
	}
	s.end += n
	return nil
}

// Close closes both ends.
func (s *Socket) Close() error {
	err := s.conn.Close()
	s.peer.Close()
	return err
}
