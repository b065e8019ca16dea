package transport

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"

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
type Socket struct {
	conn *net.TCPConn
	peer *net.TCPConn // the other end: kept open, never read
	r    *bufio.Reader
}

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
	return &Socket{conn: conn, peer: r.c, r: bufio.NewReaderSize(conn, 64*descriptor.Size)}, nil
}

// Control runs fn with the raw fd of the socket that joins the sockhash
// (to pass it over SCM_RIGHTS or put it in a map). The fd is valid only
// during fn.
func (s *Socket) Control(fn func(fd int) error) error {
	raw, err := s.conn.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := raw.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// Send writes one descriptor in one sendmsg. A descriptor the kernel program
// refuses (invalid, wrong chain, receiver gone) fails the write.
func (s *Socket) Send(d descriptor.Descriptor) error {
	b := d.Bytes()
	n, err := s.conn.Write(b[:])
	if err != nil {
		return fmt.Errorf("transport: send %v: %w", d, err)
	}
	if n != descriptor.Size {
		return fmt.Errorf("transport: send %v: short write %d", d, n)
	}
	return nil
}

// ErrClosed is returned by Recv after Close.
var ErrClosed = errors.New("transport: closed")

// Recv reads the next descriptor from the socket's receive queue.
func (s *Socket) Recv() (descriptor.Descriptor, error) {
	var b [descriptor.Size]byte
	if _, err := io.ReadFull(s.r, b[:]); err != nil {
		if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
			return descriptor.Descriptor{}, ErrClosed
		}
		return descriptor.Descriptor{}, fmt.Errorf("transport: recv: %w", err)
	}
	return descriptor.Unmarshal(b[:])
}

// Close closes both ends.
func (s *Socket) Close() error {
	err := s.conn.Close()
	s.peer.Close()
	return err
}
