package eproxy

import (
	"fmt"
	"net"
	"net/netip"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/spright-dev/spright/bpf"
	"github.com/spright-dev/spright/pkg/control"
	"github.com/spright-dev/spright/pkg/transport"
)

// PodIdentity is how a pod introduces itself to the node agent.
type PodIdentity struct {
	Namespace, Revision, Pod string
	// Previous is the instance of this pod's previous registration (0:
	// none): an agent that restarted on kept pins hands it back, with its
	// counters (AgentClient.Resumed).
	Previous uint32
}

// AgentClient is EPROXY's connection to the node agent (the gateway
// DaemonSet), which owns the eBPF objects. Its end is also how the agent
// learns that the pod went away.
type AgentClient struct {
	conn     *control.Conn
	Instance uint32
	// Chain and Function are set when the agent says this pod's revision
	// is a member of a chain (then EPROXY runs the function shim).
	Chain, Function string
	// Resumed: the agent handed back PodIdentity.Previous and its metrics
	// entries, which kept counting while it was away.
	Resumed bool

	mu sync.Mutex // one request/answer at a time on the control socket
}

// RegisterPod registers the pod with the node agent. The pod's counters are
// read by the agent on request (Counters): EPROXY makes no bpf(2) call.
func RegisterPod(socket string, id PodIdentity) (*AgentClient, error) {
	conn, err := control.Dial(socket)
	if err != nil {
		return nil, err
	}
	if err := conn.Send(control.Message{Type: control.TypePod, Namespace: id.Namespace, Revision: id.Revision, PodName: id.Pod, Previous: id.Previous}); err != nil {
		conn.Close()
		return nil, err
	}
	w, fds, err := conn.Expect(control.TypeWelcome)
	if err != nil {
		conn.Close()
		return nil, err
	}
	for _, fd := range fds { // an older agent sent the metrics map
		unix.Close(fd)
	}
	return &AgentClient{conn: conn, Instance: w.Instance, Chain: w.Chain, Function: w.Function,
		Resumed: w.Resumed && w.Instance == id.Previous && id.Previous != 0}, nil
}

// counters asks the agent for one of this pod's metrics entries.
func (a *AgentClient) counters(side string) (bpf.InstanceMetrics, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.conn.Send(control.Message{Type: control.TypeCounters, Side: side}); err != nil {
		return bpf.InstanceMetrics{}, err
	}
	r, fds, err := a.conn.Expect(control.TypeCounters)
	for _, fd := range fds {
		unix.Close(fd)
	}
	if err != nil {
		return bpf.InstanceMetrics{}, err
	}
	if r.Counters == nil {
		return bpf.InstanceMetrics{}, fmt.Errorf("eproxy: agent answered counters without any")
	}
	c := r.Counters
	return bpf.InstanceMetrics{RequestsIn: c.RequestsIn, ResponsesOut: c.ResponsesOut, Inflight: c.Inflight,
		Sent: c.Sent, LastNs: c.LastNs, BusyNs: c.BusyNs}, nil
}

// OwnCounters reads the counters of this pod's connections that did not
// come from the activator.
func (a *AgentClient) OwnCounters() (bpf.InstanceMetrics, error) { return a.counters("") }

// Counters reads this pod's counters: all its connections, the
// activator's included.
func (a *AgentClient) Counters() (bpf.InstanceMetrics, error) {
	m, err := a.OwnCounters()
	if err != nil {
		return m, err
	}
	if p, err := a.ProxiedCounters(); err == nil {
		m.RequestsIn += p.RequestsIn
		m.ResponsesOut += p.ResponsesOut
		m.Inflight += p.Inflight
		m.Sent += p.Sent
		m.BusyNs += p.BusyNs // integrals up to each entry's LastNs
	}
	return m, nil
}

// Splice asks the agent to join client and upstream in the kernel. A
// proxied connection (its first request came from the activator) is
// counted in the pod's proxied entry.
func (a *AgentClient) Splice(client, upstream *net.TCPConn, proxied bool) error {
	side := ""
	if proxied {
		side = "proxied"
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	// The raw fds are used in place (no dup): SCM_RIGHTS gives the agent
	// its own references.
	err := transport.ControlFD(client, func(cfd int) error {
		return transport.ControlFD(upstream, func(ufd int) error {
			return a.conn.Send(control.Message{Type: control.TypeSplice, Side: side}, cfd, ufd)
		})
	})
	if err != nil {
		return err
	}
	_, fds, err := a.conn.Expect(control.TypeSpliced)
	for _, fd := range fds {
		unix.Close(fd)
	}
	return err
}

// ProxiedCounters reads the counters of this pod's activator connections.
func (a *AgentClient) ProxiedCounters() (bpf.InstanceMetrics, error) { return a.counters("proxied") }

// Unsplice asks the agent to take a pair apart (their sockets still open).
func (a *AgentClient) Unsplice(client, upstream *net.TCPConn) error {
	return transport.ControlFD(client, func(cfd int) error {
		return transport.ControlFD(upstream, func(ufd int) error { return a.UnspliceFDs(cfd, ufd) })
	})
}

// UnspliceFDs is Unsplice on raw fds (sockets that left Go's netpoller).
// It also settles the pair's unanswered requests in the in-flight count.
func (a *AgentClient) UnspliceFDs(client, upstream int) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.conn.Send(control.Message{Type: control.TypeUnsplice}, client, upstream); err != nil {
		return err
	}
	_, fds, err := a.conn.Expect(control.TypeSpliced)
	for _, fd := range fds {
		unix.Close(fd)
	}
	return err
}

// Count asks the agent to count, in eBPF, what a connection EPROXY proxies
// in userspace carries: side "upstream" counts requests written to the
// user container, "client" responses written to the client, "arrival"
// requests arriving from the client and responses written back.
func (a *AgentClient) Count(c *net.TCPConn, side string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := transport.ControlFD(c, func(fd int) error {
		return a.conn.Send(control.Message{Type: control.TypeCount, Side: side}, fd)
	}); err != nil {
		return err
	}
	_, fds, err := a.conn.Expect(control.TypeSpliced)
	for _, fd := range fds {
		unix.Close(fd)
	}
	return err
}

// WaitClosed blocks until the agent ends the control connection (it
// stopped or restarted). It polls the socket for hang-up only, so it
// neither consumes the agent's answers nor wakes for them.
func (a *AgentClient) WaitClosed() {
	raw, err := a.conn.SyscallConn()
	if err != nil {
		return
	}
	// Poll a dup: holding the original inside Control would block Close.
	dup := -1
	raw.Control(func(fd uintptr) { dup, _ = unix.Dup(int(fd)) })
	if dup < 0 {
		return
	}
	defer unix.Close(dup)
	for {
		fds := []unix.PollFd{{Fd: int32(dup), Events: unix.POLLRDHUP}}
		n, err := unix.Poll(fds, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil || (n > 0 && fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0) {
			return
		}
	}
}

// Close ends the registration.
func (a *AgentClient) Close() error {
	// Shut the socket down first: that also ends WaitClosed's poll on its dup.
	if raw, err := a.conn.SyscallConn(); err == nil {
		raw.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_RDWR) })
	}
	return a.conn.Close()
}

// Steer asks the agent to steer new connections of learned traffic
// sources from EPROXY's traffic listener l straight to the user
// container's port (package bpf, "Steer").
func (a *AgentClient) Steer(l *net.TCPListener, userPort int) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := transport.ControlFD(l, func(fd int) error {
		return a.conn.Send(control.Message{Type: control.TypeSteer, Port: userPort}, fd)
	}); err != nil {
		return err
	}
	return a.ack()
}

// SteerSource adds (on) or removes a client address whose new connections
// are steered.
func (a *AgentClient) SteerSource(addr netip.Addr, on bool) error {
	side := "remove"
	if on {
		side = "add"
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.conn.Send(control.Message{Type: control.TypeSteerSource, Address: addr.String(), Side: side}); err != nil {
		return err
	}
	return a.ack()
}

// SteerEnabled switches steering of new connections on or off (off: EPROXY
// drains, and wants every new connection).
func (a *AgentClient) SteerEnabled(on bool) error {
	side := "off"
	if on {
		side = "on"
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.conn.Send(control.Message{Type: control.TypeSteerEnable, Side: side}); err != nil {
		return err
	}
	return a.ack()
}

// ack reads the agent's answer to a request (a.mu held).
func (a *AgentClient) ack() error {
	_, fds, err := a.conn.Expect(control.TypeSpliced)
	for _, fd := range fds {
		unix.Close(fd)
	}
	return err
}
