package gateway

import (
	"context"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/spright-dev/spright/pkg/transport"
)

// ListenHTTP listens on addr (TCP) for a chain's HTTP front (Handler),
// made cheap per connection and per request:
//
//   - no TCP keep-alive probes on accepted connections: net.Listen turns
//     them on with three setsockopt calls per accepted connection, a cost
//     every new connection pays (a client sending Connection: close pays
//     it per request); idle keep-alive connections are ended by the HTTP
//     server's IdleTimeout instead, and a request in flight by the chain's
//     timeout;
//   - reads and writes on accepted connections are raw syscalls through
//     the connection's RawConn (see frontConn).
func ListenHTTP(addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAliveConfig: net.KeepAliveConfig{Enable: false}, KeepAlive: -1}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &frontListener{ln.(*net.TCPListener)}, nil
}

type frontListener struct{ *net.TCPListener }

func (l *frontListener) Accept() (net.Conn, error) {
	c, err := l.AcceptTCP()
	if err != nil {
		return nil, err
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return c, nil // a plain conn still serves
	}
	return &frontConn{TCPConn: c, raw: raw}, nil
}

// frontConn is an accepted connection whose Read and Write are raw
// read(2)/write(2) on the non-blocking socket, made through its RawConn:
// the netpoller still parks a goroutine until the socket is ready, and
// deadlines and the conn's locks work as for the TCPConn, but the syscalls
// skip the runtime's entersyscall, which wakes the runtime's sysmon thread
// whenever the process had gone idle — at one request at a time, on
// nearly every request (profiles of the hello chain put about 15% of the
// gateway's CPU in those wake-ups). A non-blocking read or write does not
// block, which is what entersyscall is there for. Everything else
// (Close, CloseWrite, addresses, deadlines) is the TCPConn's.
type frontConn struct {
	*net.TCPConn
	raw syscall.RawConn
}

func (c *frontConn) Read(b []byte) (int, error) {
	n, err := transport.RawRead(c.raw, b)
	if err != nil && err != io.EOF {
		err = c.opErr("read", err)
	}
	return n, err
}

func (c *frontConn) Write(b []byte) (int, error) {
	n, err := transport.RawWrite(c.raw, b)
	if err != nil {
		err = c.opErr("write", err)
	}
	return n, err
}

// opErr gives an error the shape net.Conn's have (*net.OpError around a
// syscall error, or around the deadline and closed errors RawConn gives).
func (c *frontConn) opErr(op string, err error) error {
	if errno, ok := err.(syscall.Errno); ok {
		err = os.NewSyscallError(op, errno)
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// The methods net/http uses through interfaces stay the TCPConn's; these
// assertions keep the embedding honest.
var (
	_ net.Conn                                      = (*frontConn)(nil)
	_ interface{ CloseWrite() error }               = (*frontConn)(nil)
	_ interface{ SetReadDeadline(time.Time) error } = (*frontConn)(nil)
)

// bufPointer is the address of b's first byte for a raw syscall (b is not
// empty: callers check).
